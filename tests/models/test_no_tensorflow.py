"""dermnet/models imports keras only, so every model builds under any Keras 3 backend."""

import ast
from pathlib import Path

MODELS = Path(__file__).resolve().parents[2] / "dermnet" / "models"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_module_under_models_imports_tensorflow():
    offenders = {
        path.name: sorted(name for name in imported_modules(path)
                          if name.split(".")[0] in ("tensorflow", "tf_keras"))
        for path in sorted(MODELS.glob("*.py"))
    }
    offenders = {name: modules for name, modules in offenders.items() if modules}
    assert not offenders, f"modules under dermnet/models import TensorFlow: {offenders}"
    assert len(list(MODELS.glob("*.py"))) >= 5  # the guard really scanned the package
