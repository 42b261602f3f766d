"""End-to-end training runs of the smoke preset: outputs, refusal to overwrite, kill and
resume, MirroredStrategy on two logical CPUs, two-worker MultiWorkerMirroredStrategy."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.smoke import ROOT, SMOKE, copy_run, run_script


@pytest.fixture(scope="module")
def cache_dir(session_cache):
    """The session's phantom datasets, shared with the session's smoke run."""
    return session_cache


def run_train(arguments, cache_dir, env=None, **kwargs):
    return run_script("train.py", arguments, cache_dir, env=env, **kwargs)


def load_weights(run_dir: Path) -> list[np.ndarray]:
    """The weights of a run's model.keras, read in a fresh process (safe_mode=True)."""
    script = textwrap.dedent(f"""
        import numpy as np
        import dermnet.models
        model = dermnet.models.load_model({str(run_dir / "model.keras")!r})
        np.savez({str(run_dir / "weights.npz")!r}, *model.get_weights())
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    data = np.load(run_dir / "weights.npz")
    return [data[key] for key in data.files]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, trained_smoke_run):
    """A copy of the session's clinical smoke run, and train.py's output."""
    out = copy_run(trained_smoke_run.out, tmp_path_factory.mktemp("runs") / "smoke")
    return out, trained_smoke_run.result


def test_smoke_run_writes_the_run_directory(smoke_run):
    out, result = smoke_run
    for name in ("config.json", "clinical_encoding.json", "splits.csv", "model.keras",
                 "history.csv", "finished.json"):
        assert (out / name).is_file(), name
    assert (out / "saved_model" / "saved_model.pb").is_file()
    assert list((out / "tb" / "train").glob("events.out.tfevents.*"))
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == [0, 1]
    for column in ("loss", "val_loss", "val_balanced_accuracy", "val_macro_auc",
                   "images_per_second", "learning_rate"):
        assert column in history.columns, column
    assert json.loads((out / "config.json").read_text())["data"]["clinical"] is True
    assert "epoch 1/2" in result.stdout and "epoch 2/2" in result.stdout
    assert "SYNTHETIC" in result.stdout


@pytest.mark.slow
def test_saved_model_reloads_in_a_fresh_process(smoke_run):
    weights = load_weights(smoke_run[0])
    assert len(weights) > 10 and all(np.isfinite(w).all() for w in weights)


@pytest.mark.slow
def test_finished_run_is_not_overwritten(smoke_run, cache_dir):
    out, _ = smoke_run
    before = (out / "model.keras").stat().st_mtime_ns
    result = run_train([*SMOKE, "--clinical", "--out", str(out)], cache_dir)
    assert result.returncode == 1
    assert "already holds a finished run; use --overwrite" in result.stderr
    assert (out / "model.keras").stat().st_mtime_ns == before


@pytest.mark.slow
def test_config_mismatch_is_refused(tmp_path, cache_dir):
    out = tmp_path / "run"
    out.mkdir()
    (out / "state").mkdir()
    from dermnet.config import make_config, save_config

    save_config(make_config("default"), out / "config.json")
    (out / "history.csv").write_text("epoch,loss\n0,1.5\n")  # it completed an epoch
    result = run_train([*SMOKE, "--out", str(out)], cache_dir)
    assert result.returncode == 1
    assert "unfinished run of a different config" in result.stderr


@pytest.mark.slow
def test_bad_option_value_is_a_clear_error(tmp_path, cache_dir):
    result = run_train([*SMOKE, "--backbone", "resnet19", "--out", str(tmp_path / "x")],
                       cache_dir)
    assert result.returncode == 1
    assert "unknown backbone 'resnet19'" in result.stderr
    assert "Traceback" not in result.stderr


def wait_for_epochs(out: Path, count: int, process, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        history = out / "history.csv"
        if history.exists() and len(pd.read_csv(history)) >= count:
            return
        assert process.poll() is None, "training ended before it could be killed"
        time.sleep(0.2)
    raise TimeoutError("no progress")


@pytest.mark.slow
def test_kill_and_resume_ends_with_the_uninterrupted_weights(tmp_path, cache_dir):
    arguments = [*SMOKE, "--epochs", "4", "--clinical"]
    reference = run_train([*arguments, "--out", str(tmp_path / "straight")], cache_dir)
    assert reference.returncode == 0, reference.stderr[-3000:]

    out = tmp_path / "killed"
    environment = os.environ | {"DERMNET_CACHE": str(cache_dir), "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *arguments, "--out",
                                str(out)], env=environment, cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_epochs(out, 2, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "finished.json").exists()
    resumed = run_train([*arguments, "--out", str(out)], cache_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "epoch 1/4" not in resumed.stdout  # it resumed, it did not start over
    for ours, theirs in zip(load_weights(out), load_weights(tmp_path / "straight")):
        np.testing.assert_array_equal(ours, theirs)
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == [0, 1, 2, 3]


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(tmp_path, cache_dir):
    out = tmp_path / "mirrored"
    result = run_train([*SMOKE, "--strategy", "mirrored", "--out", str(out)], cache_dir,
                       env={"DERMNET_LOGICAL_CPUS": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MirroredStrategy with 2 replica(s)" in result.stdout
    assert (out / "finished.json").exists()


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for item in sockets:
        item.bind(("127.0.0.1", 0))
    ports = [item.getsockname()[1] for item in sockets]
    for item in sockets:
        item.close()
    return ports


@pytest.mark.slow
def test_two_worker_multiworker_run_ends_with_identical_weights(tmp_path, cache_dir):
    # Make the phantom dataset first, so both workers read the same, complete folder.
    warm = run_train([*SMOKE, "--epochs", "1", "--out", str(tmp_path / "warm")], cache_dir)
    assert warm.returncode == 0, warm.stderr[-3000:]
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    out = tmp_path / "multiworker"
    environment = os.environ | {"DERMNET_CACHE": str(cache_dir), "TF_CPP_MIN_LOG_LEVEL": "2"}
    processes = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), *SMOKE, "--strategy", "multiworker",
             "--out", str(out)],
            env=environment | {"TF_CONFIG": json.dumps({"cluster": cluster,
                                                        "task": {"type": "worker",
                                                                 "index": index}})},
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for index in range(2)
    ]
    outputs = [process.communicate(timeout=900) for process in processes]
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stdout[-2000:] + stderr[-3000:]
    assert "MultiWorkerMirroredStrategy with 2 replica(s)" in outputs[0][0]
    chief, worker = load_weights(out), load_weights(out / "worker-1")
    for ours, theirs in zip(chief, worker):
        np.testing.assert_array_equal(ours, theirs)
