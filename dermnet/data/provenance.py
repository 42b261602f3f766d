"""What a run's images were: real or SYNTHETIC, where from, at what size, and whether the
model input enlarges them; and the source collection of each image.

``describe_images`` makes the run's ``data.json`` (read back by evaluation, TensorBoard and
predict, so that no figure from the phantom passes for a real one, and a 224x300 model fed
200x150 images says it upsampled them). ``read_sources`` attaches HAM10000's ``dataset``
column (the source collection) from the Dataverse metadata to a copy of the data that lacks
it, for leave-one-source-out splits.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dermnet.data.vocabulary import SOURCE_COLUMN


def describe_images(dataset, image_size, synthetic: bool, frame=None) -> dict:
    """``dataset``: a loaded ``dermnet.data.ham10000.Ham10000`` (its ``image_sizes`` come from
    the header check); ``image_size``: the model input (H, W); ``frame``: the metadata the run
    uses, when it is not ``dataset.frame`` (e.g. with a source column from ``read_sources``)."""
    frame = dataset.frame if frame is None else frame
    height, width = (int(side) for side in image_size)
    sizes = [{"width": w, "height": h, "images": n} for (w, h), n in dataset.image_sizes]
    smaller = [size for size in sizes if size["height"] < height or size["width"] < width]
    return {
        "kind": "synthetic" if synthetic else "real",
        "data_dir": str(dataset.root),
        "images": int(len(frame)),
        "source_sizes": sizes,  # (width, height) as stored, commonest first
        "input_size": [height, width],
        "upsampled_images": sum(size["images"] for size in smaller),
        "sources": _source_counts(frame),
    }


def describe_provenance(provenance: dict) -> str:
    """One line: 'REAL images ... (10,015; 200x150), upsampled to 224x300' or 'SYNTHETIC ...'."""
    if not provenance:
        return "images of unknown provenance (no data.json in the run)"
    kind = "SYNTHETIC phantom images" if provenance["kind"] == "synthetic" else "REAL images"
    sizes = ", ".join(f"{size['width']}x{size['height']}"
                      for size in provenance["source_sizes"][:3]) or "sizes not checked"
    height, width = provenance["input_size"]
    line = f"{kind} from {provenance['data_dir']} ({provenance['images']:,}; {sizes})"
    if provenance["upsampled_images"]:
        line += (f", {provenance['upsampled_images']:,} of them UPSAMPLED to the "
                 f"{height}x{width} model input")
    return line


def upsampling_notice(provenance: dict) -> str | None:
    """The one notice a run prints when its input is larger than (some of) its images."""
    count = provenance.get("upsampled_images", 0)
    if not count:
        return None
    height, width = provenance["input_size"]
    smaller = [f"{size['width']}x{size['height']}" for size in provenance["source_sizes"]
               if size["height"] < height or size["width"] < width]
    return (f"notice: {count:,} of {provenance['images']:,} images ({', '.join(smaller[:3])}) "
            f"are smaller than the {height}x{width} (HxW) model input and are upsampled; "
            "figures come from enlarged images")


def _source_counts(frame: pd.DataFrame) -> dict[str, int]:
    if SOURCE_COLUMN not in frame:
        return {}
    return {str(name): int(count) for name, count in frame[SOURCE_COLUMN].value_counts().items()}


def read_sources(frame: pd.DataFrame, csv_path: str | Path) -> pd.DataFrame:
    """``frame`` with its ``dataset`` column taken from ``csv_path`` (columns image_id and
    dataset, e.g. the Dataverse HAM10000_metadata.csv); every image must be listed."""
    path = Path(csv_path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot read the sources CSV ({error})") from None
    missing = [column for column in ("image_id", SOURCE_COLUMN) if column not in table]
    if missing:
        raise ValueError(f"{path}: no column {', '.join(missing)} (needs image_id and "
                         f"{SOURCE_COLUMN}, the source collection of each image)")
    sources = table.drop_duplicates("image_id").set_index("image_id")[SOURCE_COLUMN]
    mapped = frame["image_id"].map(sources)
    absent = frame.loc[mapped.isna() | (mapped == ""), "image_id"]
    if len(absent):
        raise ValueError(f"{path}: no {SOURCE_COLUMN} for {len(absent)} image(s) of the data, "
                         f"e.g. {', '.join(absent.head(3))}")
    return frame.assign(**{SOURCE_COLUMN: mapped.to_numpy()})
