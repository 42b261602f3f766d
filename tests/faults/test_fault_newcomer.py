"""Fault catalogue, first run (issue 12 of the outside trial): what a newcomer meets, such as
TensorFlow's C++ start-up lines around dermnet's own. Each test reproduced its finding first.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# TensorFlow's C++ log lines (absl format), and what it prints before absl is set up.
TENSORFLOW_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d|absl::InitializeLog|cuda drivers|"
                             r"cpu_feature_guard|rebuild TensorFlow with")


def run(arguments, **environment):
    # As a newcomer runs it: no TF_CPP_MIN_LOG_LEVEL of the test suite's own.
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, *arguments], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=env | environment)


def tensorflow_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if TENSORFLOW_LINE.search(line)]


# -- 7. log noise -----------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("script", ["evaluate.py", "predict.py"])
def test_7_a_command_prints_only_its_own_lines(tmp_path, script):
    extra = [str(tmp_path / "x.jpg")] if script == "predict.py" else []
    result = run([script, str(tmp_path / "missing-run"), *extra])
    assert result.returncode == 1
    assert tensorflow_lines(result.stderr + result.stdout) == [], result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.slow
def test_7_verbose_brings_tensorflow_lines_back(tmp_path):
    quiet = run(["evaluate.py", str(tmp_path / "missing-run")])
    flag = run(["evaluate.py", str(tmp_path / "missing-run"), "--verbose"])
    variable = run(["evaluate.py", str(tmp_path / "missing-run")], DERMNET_VERBOSE="1")
    for result in (quiet, flag, variable):  # --verbose is not an unknown option
        assert result.returncode == 1 and "missing-run: no config.json" in result.stderr
    # TensorFlow's own lines, whatever they are on this machine, are more than none.
    assert len(flag.stderr.splitlines()) > len(quiet.stderr.splitlines())
    assert len(variable.stderr.splitlines()) > len(quiet.stderr.splitlines())


@pytest.mark.slow
def test_7_training_prints_only_dermnets_lines(tmp_path):
    result = run(["train.py", "--preset", "smoke", "--set", "data.phantom_images=80",
                  "--epochs", "1", "--out", str(tmp_path / "run")],
                 DERMNET_CACHE=str(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert tensorflow_lines(result.stderr + result.stdout) == [], result.stderr[-3000:]


def test_7_a_failed_import_still_shows_what_went_wrong():
    from dermnet.quiet import stderr_captured

    reader, writer = os.pipe()
    saved = os.dup(2)
    os.dup2(writer, 2)
    try:
        with pytest.raises(ImportError), stderr_captured():
            os.write(2, b"why it failed\n")
            raise ImportError("broken")
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(writer)
    assert os.read(reader, 1000) == b"why it failed\n"
    os.close(reader)
