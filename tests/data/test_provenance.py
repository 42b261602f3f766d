"""Provenance of a run's images (data.json) and the source column for leave-one-out splits."""

import pandas as pd
import pytest

from dermnet.data.ham10000 import Ham10000
from dermnet.data.provenance import (
    describe_images,
    describe_provenance,
    read_sources,
    upsampling_notice,
)


def make_dataset(sizes, dataset_column=None):
    frame = pd.DataFrame({"image_id": [f"I{i}" for i in range(sum(n for _, n in sizes))]})
    if dataset_column is not None:
        frame["dataset"] = dataset_column
    return Ham10000(root="/data/ham", metadata_path="/data/ham/m.csv", layout="images/",
                    frame=frame, warnings=(), image_sizes=tuple(sizes))


def test_upsampled_images_are_counted_against_the_model_input():
    dataset = make_dataset([((200, 150), 7), ((600, 450), 3)])
    provenance = describe_images(dataset, (224, 300), synthetic=False)
    assert provenance["kind"] == "real"
    assert provenance["upsampled_images"] == 7  # 200x150 is smaller than 300x224 (WxH)
    assert provenance["source_sizes"][0] == {"width": 200, "height": 150, "images": 7}
    notice = upsampling_notice(provenance)
    assert notice.startswith("notice: 7 of 10 images (200x150) are smaller than the 224x300")
    assert "REAL images" in describe_provenance(provenance)
    assert "7 of them UPSAMPLED to the 224x300" in describe_provenance(provenance)


def test_no_notice_when_the_input_is_not_larger():
    provenance = describe_images(make_dataset([((200, 150), 4)]), (150, 200), synthetic=True)
    assert provenance["upsampled_images"] == 0
    assert upsampling_notice(provenance) is None
    assert describe_provenance(provenance).startswith("SYNTHETIC phantom images")


def test_source_counts_come_from_the_dataset_column():
    dataset = make_dataset([((600, 450), 3)], ["rosendahl", "vidir_modern", "rosendahl"])
    assert describe_images(dataset, (64, 64), False)["sources"] == {"rosendahl": 2,
                                                                    "vidir_modern": 1}


def test_read_sources_attaches_and_checks(tmp_path):
    frame = pd.DataFrame({"image_id": ["A", "B"], "dx": ["nv", "mel"]})
    csv = tmp_path / "meta.csv"
    csv.write_text("image_id,dataset\nB,rosendahl\nA,vidir_modern\nC,vienna_dias\n")
    assert read_sources(frame, csv)["dataset"].tolist() == ["vidir_modern", "rosendahl"]
    csv.write_text("image_id,dataset\nA,vidir_modern\n")
    with pytest.raises(ValueError, match="no dataset for 1 image.*e.g. B"):
        read_sources(frame, csv)
    csv.write_text("image_id,dx\nA,nv\n")
    with pytest.raises(ValueError, match="no column dataset"):
        read_sources(frame, csv)
    with pytest.raises(ValueError, match="cannot read the sources CSV"):
        read_sources(frame, tmp_path / "absent.csv")
