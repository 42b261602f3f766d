"""The installed commands: each console script names a real function, and every command's
``--help`` and argument errors answer without importing TensorFlow, Keras or SciPy (the
seconds those take are measured in bench/cli_startup.py)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
HEAVY = ("tensorflow", "keras", "scipy", "jax", "torch")

# (console script's function in dermnet.commands, arguments, expected exit status)
CASES = [
    ("train", ["--help"], 0), ("train", ["--no-such-option"], 2),
    ("train", ["--preset", "no-such-preset"], 2),
    ("evaluate", ["--help"], 0), ("evaluate", [], 2), ("evaluate", ["compare", "--help"], 0),
    ("evaluate", ["readers", "--help"], 0), ("evaluate", ["readers"], 2),
    ("predict", ["--help"], 0), ("predict", [], 2),
    ("gan", ["--help"], 0), ("gan", ["train", "--help"], 0), ("gan", ["generate"], 2),
    ("gan", ["assess", "--help"], 0),
    ("preprocess", ["--help"], 0), ("preprocess", ["crop", "--help"], 0),
    ("preprocess", ["filter", "train", "--help"], 0), ("preprocess", ["resize"], 2),
    ("data", ["--help"], 0), ("data", ["check", "--help"], 0), ("data", ["phantom"], 2),
]

PROBE = """
import json, sys
from dermnet import commands
sys.argv = ["dermnet-" + sys.argv[1], *sys.argv[2:]]
try:
    code = getattr(commands, sys.argv[0].removeprefix("dermnet-"))()
except SystemExit as stop:
    code = stop.code
print(json.dumps({"code": code or 0, "modules": sorted(
    name for name in sys.modules if name.split(".")[0] in HEAVY)}), file=sys.stderr)
""".replace("HEAVY", repr(HEAVY))


def test_every_console_script_names_a_function_of_dermnet_commands():
    assert set(SCRIPTS) == {f"dermnet-{name}" for name in
                            ("train", "evaluate", "predict", "gan", "preprocess", "data")}
    for target in SCRIPTS.values():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function))


@pytest.mark.parametrize("command, arguments, status", CASES,
                         ids=[" ".join([name, *args]) or name for name, args, _ in CASES])
def test_help_and_usage_errors_answer_without_tensorflow(command, arguments, status):
    result = subprocess.run([sys.executable, "-c", PROBE, command, *arguments], cwd=ROOT,
                            capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    report = json.loads(result.stderr.strip().splitlines()[-1])
    assert report["code"] == status, result.stdout + result.stderr
    assert report["modules"] == [], f"{command} {arguments} imported {report['modules']}"
    if status == 0:  # the usage line names the command as the user typed it
        assert f"usage: dermnet-{command}" in result.stdout


@pytest.mark.parametrize("module", ["dermnet.training", "dermnet.evaluation",
                                    "dermnet.inference", "gan", "preprocess", "dermnet.data"])
def test_python_dash_m_forms_answer_help(module):
    result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_a_checkout_script_keeps_its_own_name():
    result = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT, text=True,
                            capture_output=True, timeout=120, env={"PYTHONPATH": str(ROOT)})
    assert result.returncode == 0 and result.stdout.startswith("usage: train.py")


def test_installed_scripts_run_when_the_package_is_installed():
    folder = Path(sys.executable).parent
    if not (folder / "dermnet-train").exists():
        pytest.skip("dermnet is not installed into this interpreter's environment "
                    "(make test installs it)")
    for script in SCRIPTS:
        result = subprocess.run([str(folder / script), "--help"], capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, f"{script}: {result.stderr[-500:]}"
        assert "usage:" in result.stdout
