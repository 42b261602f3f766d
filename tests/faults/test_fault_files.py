"""Fault catalogue, files (issue 12 of the outside trial): a full disk, output paths that are
files, dangling symbolic links. Each test reproduced its fault before the fix.

A full disk is stood in for by a file-size limit (``RLIMIT_FSIZE`` with ``SIGXFSZ``
ignored): the kernel then fails every write past the limit with ``EFBIG``, as it fails them
with ``ENOSPC`` on a full disk, and the command under test meets a real failing ``write``.
"""

import csv
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from preprocess.skin_crop import make_synthetic_photo

ROOT = Path(__file__).resolve().parents[2]


def run_module(arguments, limit=None, **kwargs):
    """``limit``: a ``file_size_limit(n)``, standing in for a disk with n bytes free."""
    return subprocess.run([sys.executable, *arguments], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, preexec_fn=limit, **kwargs)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("photos")
    for seed in range(3):
        cv2.imwrite(str(src / f"p{seed}.jpg"), make_synthetic_photo(seed, size=(150, 200))[0])
    return src


# -- 4. a full disk ---------------------------------------------------------------------------

def test_4_crop_on_a_full_disk_is_one_line_and_a_non_zero_exit(photos, tmp_path,
                                                              file_size_limit):
    dst = tmp_path / "cropped"
    result = run_module(["-m", "preprocess", "crop", str(photos), str(dst)],
                        limit=file_size_limit(2000))
    assert result.returncode == 1
    assert "crop: error: cannot write" in result.stderr, result.stderr[-2000:]
    assert "Stopped after 0 of 3 images" in result.stderr
    assert "Traceback" not in result.stderr
    # No half-written crop; the manifest (small enough to fit) lists what was done: nothing.
    assert [path.name for path in dst.rglob("*") if path.is_file()] == ["crop_manifest.csv"]
    assert (dst / "crop_manifest.csv").read_text().count("\n") == 1
    assert f"the manifest of those is in {dst / 'crop_manifest.csv'}" in result.stderr


# -- 5. an output path that is a file ---------------------------------------------------------

def test_5_crop_into_an_existing_file_is_one_line(photos, tmp_path):
    target = tmp_path / "a-file"
    target.write_text("keep me")
    result = run_module(["-m", "preprocess", "crop", str(photos), str(target)])
    assert result.returncode == 1
    assert f"DST {target} exists and is not a folder" in result.stderr
    assert "Traceback" not in result.stderr and target.read_text() == "keep me"


# -- 6. a dangling symbolic link in a source folder -------------------------------------------

def test_6_a_dangling_link_is_listed_as_unreadable(photos, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for path in photos.iterdir():
        (src / path.name).write_bytes(path.read_bytes())
    (src / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    result = run_module(["-m", "preprocess", "crop", str(src), str(tmp_path / "out")])
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "out" / "crop_manifest.csv", newline="") as file:
        rows = {row["file"]: row for row in csv.DictReader(file)}
    assert rows["gone.jpg"]["status"] == "unreadable"
    assert "broken symbolic link" in rows["gone.jpg"]["error"]
    assert "gone.jpg: broken symbolic link" in result.stdout


@pytest.fixture()
def small_disk(tmp_path):
    """A 60 MiB tmpfs: a real full disk (skips where this process may not mount one)."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=60m", "tmpfs", str(folder)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def run_train(arguments, cache_dir, limit=None):
    import os

    return run_module([str(ROOT / "train.py"), "--preset", "smoke", "--set",
                       "data.phantom_images=80", *arguments], limit=limit,
                      env=os.environ | {"DERMNET_CACHE": str(cache_dir),
                                        "TF_CPP_MIN_LOG_LEVEL": "2"})


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.slow
def test_4_training_on_a_full_disk_stops_with_one_line_not_a_segfault(small_disk, cache_dir):
    # The smoke model's weights with Adam's state are 39 MB: the first epoch's best weights
    # fit on 60 MiB, its resume backup does not.
    out = small_disk / "run"
    result = run_train(["--epochs", "2", "--out", str(out)], cache_dir)
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])  # was 139
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "no space left on device" in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert (out / "history.csv").exists() and (out / "state" / "best.weights.h5").exists()
    # Space freed, the same command resumes and finishes.
    subprocess.run(["mount", "-o", "remount,size=200m", str(small_disk)], check=True)
    resumed = run_train(["--epochs", "2", "--out", str(out)], cache_dir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]


@pytest.mark.slow
def test_4_a_failing_write_in_training_is_one_line(tmp_path, cache_dir, file_size_limit):
    out = tmp_path / "run"
    result = run_train(["--epochs", "1", "--out", str(out)], cache_dir,
                       limit=file_size_limit(5_000_000))
    assert result.returncode == 1
    lines = error_lines(result.stderr)
    assert lines == [f"error: cannot write {out / 'state' / 'best.weights.h5'}: "
                     "File too large"], result.stderr[-2000:]
    assert not out.exists()  # nothing completed: the folder it created is gone


# -- 6. leftovers of killed writers -----------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("command", ["phantom"])
def test_6_a_killed_writer_leaves_a_partial_folder_the_next_one_removes(tmp_path, command):
    import os
    import signal
    import time

    out = tmp_path / "phantom"
    arguments = ["-m", "dermnet.data", "phantom", str(out), "--num-images", "3000"]
    process = subprocess.Popen([sys.executable, *arguments], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2"})
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob(".phantom.*.partial/*/*.jpg")):
        assert process.poll() is None and time.monotonic() < deadline, "it ended too soon"
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    leftover = list(tmp_path.glob(".phantom.*.partial"))
    assert len(leftover) == 1
    result = run_module([*arguments[:-1], "40"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"removed {leftover[0]}" in result.stdout
    assert not list(tmp_path.glob(".phantom.*.partial"))
    assert (out / "HAM10000_metadata.csv").is_file()


def test_6_a_live_writers_staging_folder_is_left_alone(tmp_path):
    from dermnet.data.staging import remove_leftovers, staged_folder

    out = tmp_path / "data"
    with staged_folder(out) as staging:
        assert remove_leftovers(out, log=lambda line: None) == [] and staging.is_dir()
        (staging / "file").write_text("x")
    assert (out / "file").read_text() == "x" and not (out / ".lock").exists()
