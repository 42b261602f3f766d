"""dermnet.data.staging: a folder appears complete or not at all."""

import pytest

from dermnet.data.staging import check_new_folder, staged_folder


def test_a_finished_block_renames_the_staging_folder_into_place(tmp_path):
    out = tmp_path / "deep" / "set"
    with staged_folder(out) as staging:
        assert staging.parent == out.parent and staging.name.endswith(".partial")
        (staging / "a.txt").write_text("done")
        assert not out.exists()
    assert (out / "a.txt").read_text() == "done"
    assert [path.name for path in out.parent.iterdir()] == ["set"]


def test_a_failed_block_leaves_nothing(tmp_path):
    out = tmp_path / "set"
    with pytest.raises(KeyboardInterrupt), staged_folder(out) as staging:
        (staging / "half.txt").write_text("half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_an_empty_destination_is_replaced_and_a_full_one_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    check_new_folder(empty)
    with staged_folder(empty) as staging:
        (staging / "a.txt").write_text("x")
    assert (empty / "a.txt").exists()
    with pytest.raises(ValueError, match=r"refusing to write a test set into .*empty"):
        check_new_folder(empty, "a test set")
