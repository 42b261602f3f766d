"""Structural checks of JPEG and PNG image files, fast enough for a whole dataset.

Owns the image side of dataset validation: telling a readable image from an empty, corrupt
or truncated one, and reading its size, without TensorFlow. Three depths:

- ``header``: read the first few kilobytes and the last kilobyte of each file only. A JPEG
  must start with SOI, its marker segments must chain to exactly one SOF0/1/2 frame header
  (size, components) and then an SOS, and an EOI must sit in the last ``TAIL_BYTES`` after
  the scan. A PNG must have its signature and IHDR, and its chunk headers must chain to IEND.
- ``full``: everything ``header`` does on the whole file, then walks the JPEG entropy-coded
  data marker by marker, then decodes the image with OpenCV and compares its size with the
  header's.
- ``none``: nothing here; the caller only checks that the files exist.
"""

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CHECK_MODES = ("none", "header", "full")

# Headers of plain JPEGs end within 1 KiB; EXIF/ICC segments can push SOS further, and the
# reader then fetches the rest segment by segment.
HEAD_BYTES = 16384
# An EOI may be followed by this much padding or trailer before a file counts as truncated.
TAIL_BYTES = 1024
# Files per task handed to a worker thread: amortises executor overhead over ~1 ms of work.
BATCH_SIZE = 64
SHOWN_EXAMPLES = 5  # files quoted in one warning

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
JPEG_EOI = b"\xff\xd9"
SOS = 0xDA
EOI = 0xD9
SUPPORTED_FRAMES = {0xC0, 0xC1, 0xC2}  # SOF0 baseline, SOF1 extended, SOF2 progressive
# Other SOFn markers (lossless, hierarchical, arithmetic-coded): legal JPEG, but not decodable
# by every reader the pipeline may use.
OTHER_FRAMES = {0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# Markers without a length field: TEM and the restart markers RST0-7.
STANDALONE_MARKERS = {0x01, *range(0xD0, 0xD8)}
# Segments that may appear between the scans of a progressive or multi-scan JPEG:
# DHT, DNL, DQT, DRI, SOS, COM and APPn.
BETWEEN_SCANS = {0xC4, 0xDC, 0xDB, 0xDD, SOS, 0xFE, *range(0xE0, 0xF0)}
PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # colour type -> channels
SUFFIXES = {"jpeg": (".jpg", ".jpeg"), "png": (".png",)}  # file name endings per format


@dataclass(frozen=True)
class ImageInfo:
    """What the header of a readable image says."""

    format: str  # "jpeg" or "png"
    width: int  # pixels
    height: int  # pixels
    channels: int  # colour components: 1 grey, 3 colour, 4 CMYK or RGBA


@dataclass(frozen=True)
class ImageReport:
    """The outcome of checking a set of files, phrased for the user."""

    problems: list[str]  # one per unusable file, "<name>: <why>"
    warnings: list[str]  # usable but odd: unusual size, not 3 channels, misleading extension
    sizes: tuple[tuple[tuple[int, int], int], ...]  # ((width, height), files), commonest first


class ImageError(ValueError):
    """An image file that cannot be used; the message says why, without the file name."""


class _Reader:
    """Random access to a file's bytes: a buffered head, then ``pread`` for the rest."""

    def __init__(self, head: bytes, size: int, fd: int | None = None):
        self.head = head
        self.size = size
        self.fd = fd  # None when ``head`` already holds the whole file

    def read(self, offset: int, count: int) -> bytes:
        if offset + count <= len(self.head) or self.fd is None:
            return self.head[offset:offset + count]
        return os.pread(self.fd, count, offset)


def check_image_file(path, mode: str = "header") -> ImageInfo:
    """Check one image file at depth ``mode`` ("header" or "full"); raise ImageError."""
    try:
        if mode == "full":
            return check_image_bytes(Path(path).read_bytes())
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            return _check_structure(_Reader(os.pread(fd, HEAD_BYTES, 0), size, fd))[0]
        finally:
            os.close(fd)
    except OSError as error:
        raise ImageError(f"cannot read the file ({error.strerror})") from error


def check_image_bytes(data: bytes) -> ImageInfo:
    """Full check of an image held in memory: structure, JPEG scans, then an OpenCV decode."""
    info, scan_start = _check_structure(_Reader(data, len(data)))
    if info.format == "jpeg":
        _walk_jpeg_scans(data, scan_start)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageError(f"OpenCV cannot decode this {info.format.upper()}")
    if image.shape[:2] != (info.height, info.width):
        decoded = f"{image.shape[1]}x{image.shape[0]}"
        raise ImageError(f"decodes to {decoded}, header says {info.width}x{info.height}")
    return info


def check_image_files(paths, mode: str = "header", workers: int | None = None) -> list:
    """Check many files in parallel; return, in order, an ImageInfo or a defect message each.

    Threads, not processes: the reads and OpenCV's decoder release the GIL, and threads
    start instantly and are safe inside a process that already runs TensorFlow.
    """
    if mode not in ("header", "full"):
        raise ValueError(f"mode must be 'header' or 'full', not {mode!r}")
    paths = list(paths)
    batches = [paths[start:start + BATCH_SIZE] for start in range(0, len(paths), BATCH_SIZE)]
    workers = workers or min(8, 2 * (os.cpu_count() or 1))
    if workers == 1 or len(batches) <= 1:
        results = [_check_batch(batch, mode) for batch in batches]
    else:
        with ThreadPoolExecutor(max_workers=workers) as executor:
            results = list(executor.map(_check_batch, batches, [mode] * len(batches)))
    return [outcome for batch in results for outcome in batch]


def review_image_files(paths, names, mode: str = "header", workers: int | None = None):
    """Check ``paths`` in parallel and return an ImageReport naming files by ``names``."""
    outcomes = check_image_files(paths, mode, workers)
    problems = [f"{name}: {outcome}" for name, outcome in zip(names, outcomes)
                if isinstance(outcome, str)]
    infos = [(path, outcome) for path, outcome in zip(paths, outcomes)
             if isinstance(outcome, ImageInfo)]
    sizes = tuple(Counter((info.width, info.height) for _, info in infos).most_common())
    return ImageReport(problems, _odd_image_warnings(infos, sizes), sizes)


def _odd_image_warnings(infos: list, sizes: tuple) -> list[str]:
    """Odd sizes, non-RGB images and misleading extensions: usable, but worth a look."""
    if not infos:
        return []
    width, height = sizes[0][0]
    odd_sizes = [f"{Path(path).name} {info.width}x{info.height}" for path, info in infos
                 if (info.width, info.height) != (width, height)]
    odd_channels = [f"{Path(path).name} {info.channels} channels" for path, info in infos
                    if info.channels != 3]
    odd_content = [f"{Path(path).name} is a {info.format.upper()}" for path, info in infos
                   if not str(path).lower().endswith(SUFFIXES[info.format])]
    described = ((odd_sizes, f"image(s) differ from the usual size {width}x{height}"),
                 (odd_channels, "image(s) without 3 colour channels"),
                 (odd_content, "file(s) whose content does not match the extension"))
    return [f"{len(odd)} {message}: {', '.join(odd[:SHOWN_EXAMPLES])}"
            for odd, message in described if odd]


def _check_batch(paths: list, mode: str) -> list:
    outcomes = []
    for path in paths:
        try:
            outcomes.append(check_image_file(path, mode))
        except ImageError as defect:
            outcomes.append(str(defect))
    return outcomes


def _check_structure(reader: _Reader) -> tuple[ImageInfo, int]:
    """Dispatch on the file's signature; return the info and where JPEG scan data starts."""
    start = reader.read(0, 8)
    if reader.size == 0:
        raise ImageError("empty file (0 bytes)")
    if start.startswith(JPEG_SOI):
        return _check_jpeg(reader)
    if start == PNG_SIGNATURE:
        return _check_png(reader), 0
    raise ImageError(f"not a JPEG or PNG file (starts with {start[:4].hex(' ')})")


def _check_jpeg(reader: _Reader) -> tuple[ImageInfo, int]:
    """Walk the marker segments from SOI to the first SOS, then look for EOI near the end."""
    offset, frame = 2, None
    while True:
        marker, offset = _next_marker(reader, offset)
        if marker in STANDALONE_MARKERS:
            continue
        if marker in (EOI, 0xD8):
            name = "end-of-image" if marker == EOI else "second start-of-image"
            raise ImageError(f"{name} marker at byte {offset - 2} before any image data")
        segment, end = _read_segment(reader, marker, offset)
        if marker in SUPPORTED_FRAMES or marker in OTHER_FRAMES:
            if frame is not None:
                raise ImageError(f"second frame header (FF{marker:02X}) at byte {offset - 2}")
            frame = _parse_jpeg_frame(marker, segment)
        elif marker == SOS:
            if frame is None:
                raise ImageError("scan (SOS) before any frame header (SOF0/1/2)")
            _require_jpeg_eoi(reader, end)
            return frame, end
        offset = end


def _next_marker(reader: _Reader, offset: int) -> tuple[int, int]:
    """Return (marker code, offset after it), skipping 0xFF fill bytes."""
    while True:
        pair = reader.read(offset, 2)
        if len(pair) < 2:
            raise ImageError(f"truncated JPEG: file ends at byte {reader.size} before any scan")
        if pair[0] != 0xFF:
            raise ImageError(f"corrupt JPEG header: expected a marker at byte {offset}, "
                              f"found {pair.hex(' ')}")
        if pair[1] != 0xFF:
            return pair[1], offset + 2
        offset += 1


def _read_segment(reader: _Reader, marker: int, offset: int) -> tuple[bytes, int]:
    """Return (payload, end offset) of the segment whose length field is at ``offset``."""
    length = int.from_bytes(reader.read(offset, 2), "big")
    end = offset + length
    if length < 2 or end > reader.size:
        raise ImageError(f"truncated or corrupt JPEG: segment FF{marker:02X} at byte "
                          f"{offset - 2} claims {length} bytes, file has {reader.size}")
    # Only frame headers are parsed; reading their few bytes is cheap, skipping the rest free.
    wanted = marker in SUPPORTED_FRAMES or marker in OTHER_FRAMES
    return (reader.read(offset + 2, length - 2) if wanted else b""), end


def _parse_jpeg_frame(marker: int, segment: bytes) -> ImageInfo:
    if marker in OTHER_FRAMES:
        raise ImageError(f"unsupported JPEG coding (SOF{marker - 0xC0}: lossless, "
                          "hierarchical or arithmetic-coded)")
    if len(segment) < 6:
        raise ImageError("corrupt JPEG frame header (too short)")
    height = int.from_bytes(segment[1:3], "big")
    width = int.from_bytes(segment[3:5], "big")
    channels = segment[5]
    if width == 0 or height == 0:
        raise ImageError(f"JPEG frame header gives size {width}x{height}")
    if channels not in (1, 3, 4) or len(segment) < 6 + 3 * channels:
        raise ImageError(f"corrupt JPEG frame header ({channels} components)")
    return ImageInfo("jpeg", width, height, channels)


def _require_jpeg_eoi(reader: _Reader, scan_start: int) -> None:
    # Inside entropy-coded data every 0xFF is followed by 0x00 or a restart marker, so an
    # FFD9 after the scan start is the real end-of-image, not a coincidence.
    window_start = max(scan_start, reader.size - TAIL_BYTES)
    tail = reader.read(window_start, reader.size - window_start)
    if tail.rfind(JPEG_EOI) < 0:
        raise ImageError(f"truncated JPEG: no end-of-image marker (FFD9) in the last "
                          f"{TAIL_BYTES} bytes of {reader.size}")


def _walk_jpeg_scans(data: bytes, offset: int) -> None:
    """Follow the entropy-coded data to EOI; any marker not allowed between scans is damage."""
    # Vectorised: a scan holds ~1 0xFF per 256 bytes, nearly all stuffed (FF00), and a Python
    # loop over them would hold the GIL that the decoding threads need.
    data_array = np.frombuffer(data, np.uint8)
    found = offset + np.flatnonzero(data_array[offset:-1] == 0xFF)
    codes = data_array[found + 1]
    # Skip stuffed bytes (FF00), restart markers (FFD0-D7) and fill bytes (FF before FF).
    real = (codes != 0x00) & ((codes < 0xD0) | (codes > 0xD7)) & (codes != 0xFF)
    reader = _Reader(data, len(data))
    for position, code in zip(found[real].tolist(), codes[real].tolist()):
        if position < offset:
            continue  # an 0xFF inside a segment (e.g. a Huffman table) already skipped
        if code == EOI:
            return
        if code not in BETWEEN_SCANS:
            raise ImageError(f"corrupt JPEG data: marker FF{code:02X} at byte {position} "
                             "inside the scan data")
        offset = _read_segment(reader, code, position + 2)[1]
    raise ImageError("truncated JPEG: scan data runs to the end of the file")


def _check_png(reader: _Reader) -> ImageInfo:
    """Check IHDR, then hop from chunk header to chunk header until IEND."""
    header = reader.read(8, 25)
    if len(header) < 25 or header[4:8] != b"IHDR" or header[:4] != (13).to_bytes(4, "big"):
        raise ImageError("corrupt PNG: no IHDR chunk after the signature")
    width = int.from_bytes(header[8:12], "big")
    height = int.from_bytes(header[12:16], "big")
    channels = PNG_CHANNELS.get(header[17])
    if width == 0 or height == 0 or channels is None:
        raise ImageError(f"corrupt PNG header (size {width}x{height}, colour type {header[17]})")
    _walk_png_chunks(reader, 8)
    return ImageInfo("png", width, height, channels)


def _walk_png_chunks(reader: _Reader, offset: int) -> None:
    seen_data = False
    while True:
        chunk = reader.read(offset, 8)
        if len(chunk) < 8:
            raise ImageError(f"truncated PNG: file ends at byte {reader.size} before IEND")
        kind = chunk[4:8]
        offset += 12 + int.from_bytes(chunk[:4], "big")  # length, type, data, CRC
        if offset > reader.size:
            raise ImageError(f"truncated PNG: chunk {kind!r} runs past the end of the file")
        seen_data = seen_data or kind == b"IDAT"
        if kind == b"IEND":
            if not seen_data:
                raise ImageError("corrupt PNG: no image data (IDAT) before IEND")
            return
