"""Fault catalogue, runs (issue 12 of the outside trial): two processes on one run folder, a
kill at the end of a phase, non-finite training and models, corrupt resume state, a model
file that names a function, leftovers.

Each test reproduced its fault before the fix; the case numbers are the trial's.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from dermnet.runs.lock import RunLock, RunLockedError

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ["--preset", "smoke", "--set", "data.phantom_images=80", "--epochs", "1"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One phantom dataset for every run of this module."""
    return tmp_path_factory.mktemp("cache")


def environment(cache_dir) -> dict:
    return os.environ | {"DERMNET_CACHE": str(cache_dir), "TF_CPP_MIN_LOG_LEVEL": "2"}


def run_train(arguments, cache_dir, **kwargs):
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *arguments],
                          env=environment(cache_dir), capture_output=True, text=True,
                          timeout=900, cwd=ROOT, **kwargs)


def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding ``folder``'s run lock until it is killed."""
    script = textwrap.dedent(f"""
        import sys, time
        from dermnet.runs.lock import RunLock
        RunLock({str(folder)!r}).acquire()
        print("held", flush=True)
        time.sleep(600)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE)
    assert process.stdout.readline().strip() == "held"
    return process


# -- 1. two processes on one --out ------------------------------------------------------------

@pytest.mark.slow
def test_1_a_second_train_on_a_held_folder_stops_naming_the_holder(tmp_path, cache_dir):
    out = tmp_path / "run"
    holder = hold_lock(out)
    try:
        result = run_train([*SMOKE, "--out", str(out)], cache_dir)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 1
    assert f"in use by another process (pid {holder.pid} on " in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(path.name for path in out.iterdir()) == [".lock"]  # nothing of its own


@pytest.mark.slow
def test_1_a_gan_run_on_a_held_folder_stops_too(tmp_path):
    out = tmp_path / "gan"
    holder = hold_lock(out)
    try:
        result = subprocess.run([sys.executable, "-m", "gan", "train", "--preset", "smoke",
                                 "--out", str(out)], cwd=ROOT, capture_output=True,
                                text=True, timeout=600)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 1
    assert f"in use by another process (pid {holder.pid} on " in result.stderr
    assert "Traceback" not in result.stderr


def test_1_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    holder = hold_lock(tmp_path / "run")
    with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
        RunLock(tmp_path / "run").acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (tmp_path / "run" / ".lock").exists()  # the file stays; the lock went with it
    with RunLock(tmp_path / "run"):
        record = json.loads((tmp_path / "run" / ".lock").read_text())
        assert record["pid"] == os.getpid()


@pytest.mark.slow
def test_1_two_trainings_started_together_one_runs_one_stops(tmp_path, cache_dir):
    out = tmp_path / "run"
    command = [sys.executable, str(ROOT / "train.py"), *SMOKE, "--out", str(out)]
    processes = [subprocess.Popen(command, env=environment(cache_dir), cwd=ROOT, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(2)]
    results = [(process.wait(timeout=900), *process.communicate()) for process in processes]
    assert sorted(code for code, _, _ in results) == [0, 1], results
    refused = next(stderr for code, _, stderr in results if code == 1)
    assert "in use by another process (pid " in refused and "Traceback" not in refused
    assert pd.read_csv(out / "history.csv")["epoch"].tolist() == [0]
    assert (out / "finished.json").exists()


# -- 2. a kill at the end of a phase ----------------------------------------------------------

class Killed(BaseException):
    """Stands for a SIGKILL at one instant: nothing after it runs."""


@pytest.mark.slow
def test_2_a_kill_between_fit_and_the_phase_commit_loses_no_epoch(tmp_path, cache_dir,
                                                                  monkeypatch):
    from dermnet.config import apply_overrides, make_config
    from dermnet.training import run

    monkeypatch.setenv("DERMNET_CACHE", str(cache_dir))
    config = apply_overrides(make_config("smoke"), ["data.phantom_images=80"])
    real_write = run.write_atomic

    def dies_before_the_phase_commit(path, writer, *args):
        if Path(path).name == "main.weights.h5":
            raise Killed()
        return real_write(path, writer, *args)

    monkeypatch.setattr(run, "write_atomic", dies_before_the_phase_commit)
    with pytest.raises(Killed):
        run.train_and_evaluate(config, tmp_path / "run", log=lambda line: None)
    assert (tmp_path / "run" / "state" / "backup-main" / "training_metadata.json").exists()

    monkeypatch.setattr(run, "write_atomic", real_write)
    lines = []
    run.train_and_evaluate(config, tmp_path / "run", log=lines.append)
    assert not any("epochs 1-" in line for line in lines), lines  # no epoch trained again
    assert any("ended in an earlier session" in line for line in lines), lines
    assert pd.read_csv(tmp_path / "run" / "history.csv")["epoch"].tolist() == [0, 1]
    assert not (tmp_path / "run" / "state" / "backup-main").exists()  # gone after the commit


# -- 3. non-finite training -------------------------------------------------------------------

@pytest.mark.parametrize("value, message", [
    ("nan", "expected a finite number"), ("inf", "expected a finite number"),
    ("-1", "learning_rate must be in (0, inf)"), ("0", "learning_rate must be in (0, inf)")])
def test_3_an_impossible_learning_rate_is_refused_at_parse_time(tmp_path, capsys, value,
                                                                 message):
    from dermnet.training.cli import main

    assert main([*SMOKE, "--learning-rate", value, "--out", str(tmp_path / "run")]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_3_a_diverging_run_stops_with_an_error_and_is_not_finished(tmp_path, cache_dir):
    out = tmp_path / "run"
    result = run_train([*SMOKE, "--learning-rate", "1e30", "--set", "training.optimizer=sgd",
                        "--out", str(out)], cache_dir)
    assert result.returncode == 1, result.stdout[-2000:]
    assert "error: training diverged:" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (out / "finished.json").exists() and not (out / "model.keras").exists()


@pytest.fixture(scope="module")
def nan_run(tmp_path_factory, finished_run) -> Path:
    """A finished run whose model.keras holds NaN weights (what a diverged run used to save)."""
    out = tmp_path_factory.mktemp("nan") / "run"
    shutil.copytree(finished_run, out)
    script = textwrap.dedent(f"""
        import numpy as np
        import dermnet.models
        model = dermnet.models.load_model({str(out / "model.keras")!r})
        model.set_weights([np.full_like(w, np.nan) for w in model.get_weights()])
        model.save({str(out / "model.keras")!r})
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("json_output", [False, True])
def test_3_predict_never_prints_nan_as_a_probability(nan_run, cache_dir, json_output):
    image = _any_phantom_image(cache_dir)
    result = subprocess.run([sys.executable, str(ROOT / "predict.py"), str(nan_run),
                             str(image), *(["--json"] if json_output else [])],
                            env=environment(cache_dir), cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 1
    assert "nan" not in result.stdout.lower()
    assert "output is not finite for 1 of 1 images" in result.stderr
    assert "Traceback" not in result.stderr


def _any_phantom_image(cache_dir) -> Path:
    return next(Path(cache_dir).rglob("*.jpg"))


@pytest.mark.slow
def test_3_evaluate_refuses_a_model_with_non_finite_output(nan_run, cache_dir):
    result = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), str(nan_run)],
                            env=environment(cache_dir), cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 1
    assert "output is not finite for" in result.stderr, result.stderr[-2000:]
    assert not (nan_run / "metrics.json").exists()


# -- 4. a full disk while evaluating and writing Grad-CAM -------------------------------------

@pytest.mark.slow
def test_4_evaluate_on_a_full_disk_keeps_the_earlier_evaluation(tmp_path, finished_run,
                                                                cache_dir, file_size_limit):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    first = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), str(out)],
                           env=environment(cache_dir), cwd=ROOT, capture_output=True,
                           text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    before = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    result = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), str(out), "--tta", "2"],
                            env=environment(cache_dir), cwd=ROOT, capture_output=True,
                            text=True, timeout=600, preexec_fn=file_size_limit(4000))
    assert result.returncode == 1
    assert f"cannot write the evaluation into {out}: File too large" in result.stderr, \
        result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    after = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    assert after == before and not (out / ".evaluation-partial").exists()


@pytest.mark.slow
def test_4_gradcam_on_a_full_disk_is_one_line(tmp_path, finished_run, cache_dir,
                                              file_size_limit):
    image = _any_phantom_image(cache_dir)
    result = subprocess.run([sys.executable, str(ROOT / "predict.py"), str(finished_run),
                             str(image), "--gradcam", str(tmp_path / "maps")],
                            env=environment(cache_dir), cwd=ROOT, capture_output=True,
                            text=True, timeout=600, preexec_fn=file_size_limit(2000))
    assert result.returncode == 1
    assert "predict.py: error: cannot write" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "maps").glob("*"))  # no half-written heatmap


@pytest.mark.slow
def test_5_gradcam_into_a_file_is_one_line(tmp_path, finished_run, cache_dir, capsys):
    (tmp_path / "a-file").write_text("keep me")
    from dermnet.inference.cli import main

    status = main([str(finished_run), str(_any_phantom_image(cache_dir)), "--gradcam",
                   str(tmp_path / "a-file")])
    assert status == 2
    assert f"--gradcam OUT_DIR: {tmp_path / 'a-file'} exists and is not a folder" in \
        capsys.readouterr().err
    assert (tmp_path / "a-file").read_text() == "keep me"


# -- 5. a corrupt resume file names itself ----------------------------------------------------

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, cache_dir) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    first = run_train([*SMOKE, "--out", str(out)], cache_dir)
    assert first.returncode == 0, first.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def unfinished_run(tmp_path_factory, finished_run) -> Path:
    """A one-epoch run turned back into an unfinished one (its phase not committed)."""
    out = tmp_path_factory.mktemp("unfinished") / "run"
    shutil.copytree(finished_run, out)
    (out / "finished.json").unlink()
    (out / "state" / "main.weights.h5").unlink()
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name, text", [
    ("state/backup-main/training_metadata.json", '{"epoch": }'),
    ("state/best.json", "[1, 2]")])
def test_5_corrupt_resume_state_is_an_error_naming_the_file(tmp_path, cache_dir,
                                                             unfinished_run, name, text):
    out = tmp_path / "run"
    shutil.copytree(unfinished_run, out)
    (out / name).parent.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(text)
    result = run_train([*SMOKE, "--out", str(out)], cache_dir)
    assert result.returncode == 1
    assert f"{out / name}: unreadable" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def write_model_naming_os_system(source: Path, target: Path) -> None:
    """``source``'s model.keras with its softmax replaced by a reference to ``os.system``."""
    function = json.dumps({"module": "os", "class_name": "function", "config": "system",
                           "registered_name": "function"})
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w") as out:
        for item in archive.infolist():
            data = archive.read(item.filename)
            if item.filename == "config.json":
                text = data.decode()
                assert '"activation": "softmax"' in text
                data = text.replace('"activation": "softmax"', f'"activation": {function}',
                                    1).encode()
            out.writestr(item, data)


@pytest.mark.slow
@pytest.mark.parametrize("script", ["evaluate.py", "predict.py"])
def test_5_a_model_naming_os_system_is_one_line_error(tmp_path, finished_run, cache_dir,
                                                      script):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    write_model_naming_os_system(finished_run / "model.keras", out / "model.keras")
    extra = [str(_any_phantom_image(cache_dir))] if script == "predict.py" else []
    result = subprocess.run([sys.executable, str(ROOT / script), str(out), *extra],
                            env=environment(cache_dir), cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 1
    assert f"{out / 'model.keras'}: cannot load the model" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr[-3000:]


def test_5_load_model_names_the_file_whatever_keras_raises(tmp_path):
    from dermnet.models import ModelFileError, load_model

    for name, content in (("text.keras", b"not a zip"), ("empty.keras", b"")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ModelFileError, match=f"{tmp_path / name}: cannot load the model"):
            load_model(tmp_path / name)


# -- 6. leftovers and lock-outs ---------------------------------------------------------------

@pytest.mark.slow
def test_6_a_run_refused_by_validation_leaves_no_folder(tmp_path, cache_dir):
    out = tmp_path / "run"
    result = run_train([*SMOKE, "--backbone", "nosuch", "--out", str(out)], cache_dir)
    assert result.returncode == 1 and "unknown backbone 'nosuch'" in result.stderr
    assert not out.exists()


@pytest.mark.slow
def test_6_a_run_failing_on_its_data_leaves_no_folder(tmp_path, cache_dir):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "HAM10000_metadata.csv").write_text("lesion_id,image_id,dx\nHAM_1,ISIC_1,mel\n")
    out = tmp_path / "run"
    result = run_train([*SMOKE, "--data-dir", str(data), "--out", str(out)], cache_dir)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert not out.exists()


def test_6_an_unstarted_run_of_another_config_is_replaced(tmp_path):
    from dermnet.config import load_config, make_config, save_config
    from dermnet.runs.folder import RunExistsError, prepare_run_dir

    out = tmp_path / "run"
    (out / "state").mkdir(parents=True)
    save_config(make_config("default"), out / "config.json")
    (out / "splits.csv").write_text("image_id,split\n")
    lines = []
    prepare_run_dir(out, make_config("smoke"), False, load_config, save_config, lines.append)
    assert load_config(out / "config.json") == make_config("smoke")
    assert not (out / "splits.csv").exists()  # derived from the old config: gone
    assert "replacing an unstarted run" in lines[0]
    # One completed epoch makes it a run worth keeping.
    (out / "history.csv").write_text("epoch,loss\n0,1.0\n")
    with pytest.raises(RunExistsError, match="unfinished run of a different config"):
        prepare_run_dir(out, make_config("default"), False, load_config, save_config)


def test_6_overwrite_keeps_the_lock_of_the_process_that_holds_it(tmp_path):
    from dermnet.config import load_config, make_config, save_config
    from dermnet.runs.folder import prepare_run_dir

    out = tmp_path / "run"
    with RunLock(out):
        (out / "finished.json").write_text("{}")
        prepare_run_dir(out, make_config("smoke"), True, load_config, save_config)
        assert sorted(path.name for path in out.iterdir()) == [".lock", "config.json", "state"]
        with pytest.raises(RunLockedError):
            RunLock(out).acquire()
