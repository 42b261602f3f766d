"""The package rules of docs/architecture.md, drawn from the code's import statements.

Every ``import`` of a project module counts, at module level or inside a function (a lazy
import still ties the two modules together), except those under ``if TYPE_CHECKING:``,
which never run. ``from package import name`` counts as an import of ``package.name`` when
that is a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dermnet", "gan", "preprocess")

# Lowest first: a module may import modules of its own layer and of the layers below it.
LAYERS = (
    ("leaves", ("dermnet", "dermnet.quiet", "dermnet.progname", "dermnet.compat",
                "dermnet.runs.lock",
                "dermnet.runs.atomic", "dermnet.runs.cache")),
    # The task table sits under the config, which checks data.task against it.
    ("data, models, task table", ("dermnet.data", "dermnet.models", "preprocess",
                                  "dermnet.runs.tasks")),
    ("config", ("dermnet.config",)),
    ("run layer", ("dermnet.runs",)),
    ("inference", ("dermnet.inference",)),
    ("evaluation and GAN", ("dermnet.evaluation", "gan")),
    ("training", ("dermnet.training", "dermnet.demo")),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    paths = [path for package in PACKAGES for path in (ROOT / package).rglob("*.py")]
    return {module_name(path): path for path in paths}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for statement in node.body for child in ast.walk(statement))
    return skipped


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped = _type_checking_nodes(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else base)
    return {module for module in found if module in modules and module != name}


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def layer_of(module: str) -> int:
    best, index = "", None
    for position, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, index = prefix, position
    assert index is not None, f"{module} is in no layer of LAYERS: place it there"
    return index


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_is_drawn_from_the_real_code():
    graph = import_graph()
    assert "dermnet.runs.ham10000" in graph["dermnet.runs.datasets"] or \
        "dermnet.runs.tasks" in graph["dermnet.runs.datasets"]
    assert "dermnet.runs.folder" in graph["dermnet.training.run"]
    assert "dermnet.evaluation.stats" in graph["gan.assess"]
    assert len(graph) > 80


def test_no_import_cycle_anywhere():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_a_cycle_is_found_when_there_is_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_module_imports_only_its_layer_and_below():
    offences = [f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} "
                f"({LAYERS[layer_of(target)][0]})"
                for module, targets in import_graph().items() for target in sorted(targets)
                if layer_of(target) > layer_of(module)]
    assert not offences, "\n".join(offences)


def test_training_is_imported_by_the_training_entry_points_only():
    users = {module for module, targets in import_graph().items()
             if any(target.startswith("dermnet.training") for target in targets)}
    outside = {module for module in users
               if not module.startswith("dermnet.training") and module != "dermnet.demo"}
    assert not outside, f"modules outside the training entry points import training: {outside}"
    for script in ("evaluate.py", "predict.py"):
        assert "dermnet.training" not in (ROOT / script).read_text()


def test_the_layer_rule_catches_an_upward_import():
    assert layer_of("dermnet.evaluation.run") > layer_of("dermnet.runs.datasets")
    assert layer_of("dermnet.runs.lock") < layer_of("dermnet.data.staging")
    assert layer_of("gan.train") < layer_of("dermnet.training.run")
