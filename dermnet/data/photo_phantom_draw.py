"""Drawing engine of the clinical photo phantom: backgrounds, skin regions, disease patterns.

`photo_phantom.py` decides what to draw (patients, diagnoses, traits, files); this module owns
how a photo looks. A patient's `Look` (skin tone, severity, disease traits) is drawn once, so
the 1-4 photos of a patient share skin and disease appearance; each photo then has its own
framing, background, lesion layout, lighting and camera.

A photo is composed as float32 RGB planes (3, height, width) in [0, 1]: numpy broadcasts a
per-pixel weight over whole contiguous planes much faster than over a trailing axis of 3.
The skin region is a rectangle or an ellipse covering 30-80% of the frame; the disease is
painted into the skin's bounding box only, then the box is blended onto the background.
Classes share colours and signs on purpose (eczema may scale, rosacea may have papules, CTCL
patches are pink like eczema) and mild cases are faint, so photos alone cannot always tell
them apart. Every random choice comes from the Generator passed in. OpenCV and numpy only.
"""

from __future__ import annotations

import dataclasses
import functools

import cv2
import numpy as np

from dermnet.data.phantom_draw import make_noise, soften

SILVER = np.array((0.86, 0.86, 0.88), np.float32)  # psoriatic scale
PUS = np.array((0.96, 0.92, 0.68), np.float32)  # pustule centres, white-yellow
BLACKHEAD = np.array((0.22, 0.17, 0.14), np.float32)  # open comedones
VESSEL_LOSS = np.array((0.15, 0.75, 0.7), np.float32)  # telangiectasia, deep red
SCRATCH_LOSS = np.array((0.35, 0.7, 0.65), np.float32)  # excoriations, dark red-brown
BACKGROUNDS = {  # kind -> (base RGB, chance)
    "blue_cloth": ((0.28, 0.45, 0.62), 0.3),
    "grey_wall": ((0.68, 0.67, 0.64), 0.3),
    "dark_clothes": ((0.12, 0.12, 0.14), 0.2),
    "patterned_fabric": ((0.55, 0.35, 0.3), 0.2),
}
JEWELLERY_CHANCE = 0.15
GOLD, STEEL = (0.86, 0.7, 0.32), (0.8, 0.8, 0.83)


@dataclasses.dataclass(frozen=True)
class Look:
    """What a patient's photos share: skin tone and the appearance of their disease."""

    diagnosis: str  # picks the painter
    skin: np.ndarray  # (3,) RGB skin tone
    severity: float  # 0.2..1: mild cases show faint signs
    redness: np.ndarray  # (3,) fraction of each channel the patient's erythema removes
    traits: dict  # the painter's sizes, counts and chances (photo_phantom.TRAITS)


def render_photo(rng, look: Look, image_size=(450, 600)) -> tuple[np.ndarray, tuple]:
    """One photo (uint8 RGB, ``image_size`` = (height, width)) and its skin box (x0, y0, x1, y1),
    the bounding box of the skin region, end-exclusive."""
    shape = tuple(int(side) for side in image_size)
    grain = _grain_texture(shape)
    image = draw_background(rng, shape, grain)
    alpha, box = draw_skin_shape(rng, shape)
    x0, y0, x1, y1 = box
    skin = draw_skin(rng, look, (y1 - y0, x1 - x0), grain)
    PAINTERS[look.diagnosis](rng, look, skin)
    for plane, skin_plane in zip(image[:, y0:y1, x0:x1], skin):
        plane += (skin_plane - plane) * alpha
    if rng.random() < JEWELLERY_CHANCE:
        draw_jewellery(rng, image, box)
    return develop(rng, image, grain), box


# --- background, skin and camera ----------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _grain_texture(shape) -> np.ndarray:
    """Fixed fine noise (unit deviation) a little larger than the frame; photos take shifted
    windows of it: drawing fresh full-frame normal noise per photo costs more than the rest."""
    height, width = shape
    texture = np.random.default_rng(20200).standard_normal((height + 32, width + 32))
    return texture.astype(np.float32)


def _grain(rng, grain, shape) -> np.ndarray:
    top, left = rng.integers(0, 32, 2)
    return grain[top:top + shape[0], left:left + shape[1]]


def _field(rng, shape, cells) -> np.ndarray:
    """Smooth noise (``make_noise``) drawn at up to a quarter of the size, with 8 or more
    pixels per blob there, then enlarged linearly: a cubic resize to full size costs 25x."""
    factor = int(np.clip(min(shape) / (8 * cells), 1, 4))
    if factor == 1:
        return make_noise(rng, shape, cells)
    small = make_noise(rng, (max(2, shape[0] // factor), max(2, shape[1] // factor)), cells)
    return cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def draw_background(rng, shape, grain) -> np.ndarray:
    """(3, H, W) planes: cloth, wall, clothes or patterned fabric, with folds and weave."""
    names = list(BACKGROUNDS)
    chances = np.array([chance for _, chance in BACKGROUNDS.values()])
    kind = names[rng.choice(len(names), p=chances / chances.sum())]
    base = np.clip(np.asarray(BACKGROUNDS[kind][0]) * rng.uniform(0.75, 1.2)
                   + rng.normal(0, 0.05, 3), 0.02, 0.95).astype(np.float32)
    light = 1 + rng.uniform(0.04, 0.15) * _field(rng, shape, rng.uniform(1.5, 4))
    texture = light + rng.uniform(0.01, 0.05) * _grain(rng, grain, shape)
    image = base[:, None, None] * texture
    if kind == "patterned_fabric":
        second = np.clip(rng.uniform(0.1, 0.95, 3), 0, 1).astype(np.float32)
        texture *= _stripes(rng, shape)
        for plane, change in zip(image, second - base):
            plane += texture * change
    return image


def _stripes(rng, shape) -> np.ndarray:
    """Soft stripes (or checks) at a random angle and period."""
    height, width = shape
    period = rng.uniform(0.03, 0.12) * min(shape)
    angle = rng.uniform(0, np.pi)
    rows = np.arange(height, dtype=np.float32) * np.float32(2 * np.pi / period)
    columns = np.arange(width, dtype=np.float32) * np.float32(2 * np.pi / period)
    stripes = _wave(np.cos(angle) * columns, np.sin(angle) * rows) > 0.2
    if rng.random() < 0.4:  # checks
        stripes ^= _wave(-np.sin(angle) * columns, np.cos(angle) * rows) > 0.2
    return soften(stripes.astype(np.float32), 0.8)


def _wave(columns, rows) -> np.ndarray:
    """sin(columns + rows) on the grid, as sin(u)cos(v) + cos(u)sin(v): two outer products
    instead of a sine per pixel."""
    return np.outer(np.cos(rows), np.sin(columns)) + np.outer(np.sin(rows), np.cos(columns))


def draw_skin_shape(rng, shape) -> tuple[np.ndarray, tuple]:
    """A soft-edged rectangle or ellipse covering 30-80% of the frame: (alpha over its box,
    box). Ellipses are capped at 70%: one filling more would have to leave the frame."""
    height, width = shape
    ellipse = rng.random() < 0.5
    area = rng.uniform(0.3, 0.7 if ellipse else 0.8) * height * width
    box_area = area / (np.pi / 4) if ellipse else area
    aspect = width / height * np.exp(rng.normal(0, 0.25))  # box width / height
    box_height = min(height, max(4.0, np.sqrt(box_area / aspect)))
    box_width = min(width, max(4.0, box_area / box_height))
    box_height = min(height, max(4.0, box_area / box_width))  # refill when width was capped
    x0 = int(rng.integers(0, width - int(box_width) + 1))
    y0 = int(rng.integers(0, height - int(box_height) + 1))
    x1, y1 = x0 + int(box_width), y0 + int(box_height)
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    if ellipse:
        centre = ((x1 - x0 - 1) * 8, (y1 - y0 - 1) * 8)  # 1/16 px units (shift=4)
        axes = ((x1 - x0 - 1) * 8, (y1 - y0 - 1) * 8)
        cv2.ellipse(mask, centre, axes, 0, 0, 360, 255, -1, cv2.LINE_AA, 4)
    else:
        mask[:] = 255
    # Soften inwards only, so the box stays the exact extent of the skin.
    inner = cv2.erode(mask, np.ones((3, 3), np.uint8), borderValue=0) if min(mask.shape) > 8 \
        else mask
    return soften(inner.astype(np.float32) / 255, 1.0), (x0, y0, x1, y1)


def draw_skin(rng, look: Look, shape, grain) -> np.ndarray:
    """(3, h, w) skin: the patient's tone, rounded like a limb or face, with pores."""
    height, width = shape
    across = np.linspace(-1, 1, height, dtype=np.float32)[:, None] ** 2
    along = np.linspace(-1, 1, width, dtype=np.float32)[None, :] ** 2
    rounding = 1 - rng.uniform(0.1, 0.3) * (across if height < width else along)
    light = rounding * (1 + rng.uniform(0.03, 0.1) * _field(rng, shape, 2))
    light += rng.uniform(0.01, 0.025) * _grain(rng, grain, shape)
    tone = look.skin * rng.uniform(0.93, 1.07, 3).astype(np.float32)
    return tone[:, None, None] * light


def draw_jewellery(rng, image, box) -> None:
    """A ring, bracelet or necklace: a metal arc crossing the skin region."""
    x0, y0, x1, y1 = box
    side = min(x1 - x0, y1 - y0)
    colour = GOLD if rng.random() < 0.5 else STEEL
    centre = (int(rng.integers(x0, x1)), int(rng.integers(y0, y1)))
    axes = (int(side * rng.uniform(0.1, 0.5)), int(side * rng.uniform(0.03, 0.2)))
    thickness = max(1, int(side * rng.uniform(0.01, 0.03)))
    angle, start = rng.uniform(0, 180), rng.uniform(0, 180)
    for plane, value in zip(image, colour):
        cv2.ellipse(plane, centre, axes, angle, start, start + 200, value, thickness, cv2.LINE_AA)


def develop(rng, image, grain) -> np.ndarray:
    """Camera: light falling off across the frame, white balance, exposure, sensor noise."""
    shape = image.shape[1:]
    ramp = np.linspace(-1, 1, shape[1], dtype=np.float32)[None, :] * rng.uniform(-0.12, 0.12)
    ramp = ramp + np.linspace(-1, 1, shape[0], dtype=np.float32)[:, None] * rng.uniform(-0.1, 0.1)
    light = 1 + ramp + rng.uniform(0.005, 0.02) * _grain(rng, grain, shape)
    gains = rng.uniform(0.85, 1.15) * np.exp(rng.normal(0, 0.04, 3))
    planes = [cv2.convertScaleAbs(plane * light, alpha=255 * gain)
              for plane, gain in zip(image, gains)]
    return cv2.merge(planes)


# --- disease patterns: each paints a patient's signs onto the (3, h, w) skin planes ---------


def _redden(skin, weight, loss) -> None:
    """Multiply towards red: each channel loses ``loss`` of itself where ``weight`` is 1."""
    rows, columns = _window(weight)
    weight = weight[rows, columns]
    factor = np.empty_like(weight)
    for plane, channel_loss in zip(skin[:, rows, columns], loss):
        np.multiply(weight, -float(channel_loss), out=factor)
        factor += 1
        plane *= factor


def _cover(skin, weight, colour) -> None:
    """Paint ``colour`` over the skin with per-pixel opacity ``weight``."""
    rows, columns = _window(weight)
    weight = weight[rows, columns]
    for plane, value in zip(skin[:, rows, columns], colour):
        plane += (float(value) - plane) * weight


def _window(weight):
    """Slices around the non-zero weights: dots and lines touch a small part of the skin."""
    x, y, width, height = cv2.boundingRect((weight > 1e-3).astype(np.uint8))
    return slice(y, y + height), slice(x, x + width)


def _points(rng, count, shape, spread=0.8) -> np.ndarray:
    """``count`` (x, y) points spread evenly over the ellipse inscribed in the box, so they
    fall on skin whatever the region's shape."""
    height, width = shape
    radius = spread * np.sqrt(rng.random(count))
    angle = rng.uniform(0, 2 * np.pi, count)
    return np.stack([(1 + radius * np.cos(angle)) * width / 2,
                     (1 + radius * np.sin(angle)) * height / 2], axis=1)


def _dots(shape, points, radii, blur=0.0) -> np.ndarray:
    """Float mask of filled, anti-aliased circles (radii in pixels, sub-pixel positions)."""
    mask = np.zeros(shape, np.uint8)
    for (x, y), radius in zip(np.round(points * 16).astype(int), radii):
        cv2.circle(mask, (int(x), int(y)), max(int(radius * 16), 8), 255, -1, cv2.LINE_AA, 4)
    return soften(mask.astype(np.float32) * np.float32(1 / 255), blur)


def _blobs(rng, shape, centres, radii, irregularity, scale=1.0) -> np.ndarray:
    """Float mask of irregular blobs: circles whose radius wobbles with a few harmonics."""
    mask = np.zeros(shape, np.uint8)
    angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    harmonics = np.arange(2, 7)[:, None]
    for centre, radius in zip(centres, radii):
        waves = rng.normal(0, irregularity, (len(harmonics), 1)) / harmonics ** 0.5
        wobble = 1 + (waves * np.cos(harmonics * angles + rng.uniform(0, 6.3, (5, 1)))).sum(0)
        outline = centre + scale * radius * np.clip(wobble, 0.5, 1.6)[:, None] \
            * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        cv2.fillPoly(mask, [np.round(outline * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    return mask.astype(np.float32) * np.float32(1 / 255)


def _count(rng, mean) -> int:
    return int(rng.poisson(max(mean, 0.0)))


def _scale_flakes(rng, skin, where, amount) -> None:
    """Silvery-white scale: flaky, patchy cover, thickest where ``where`` is 1."""
    side = min(where.shape)
    flakes = np.clip(0.45 + 0.4 * _field(rng, where.shape, max(2.0, side / 10)), 0, 1)
    _cover(skin, where * flakes * amount, SILVER)


def paint_psoriasis(rng, look, skin) -> None:
    """Well-demarcated red plaques with silvery-white scale."""
    traits, shape = look.traits, skin.shape[1:]
    side = min(shape)
    count = max(1, _count(rng, traits["plaques"]))
    radii = side * traits["size"] * rng.lognormal(0, 0.35, count)
    plaques = _blobs(rng, shape, _points(rng, count, shape, 0.7), radii, 0.15)
    plaques = soften(plaques, traits["edge"] * side)  # sharp borders: well demarcated
    _redden(skin, plaques * (0.45 + 0.5 * look.severity), look.redness)
    core = soften(plaques, 0.02 * side) ** 2  # scale thins out towards the border
    _scale_flakes(rng, skin, core, traits["scale"] * (0.4 + 0.6 * look.severity))


def paint_eczema(rng, look, skin) -> None:
    """Ill-defined pink-red patches with fine papules and excoriations (scratch marks)."""
    traits, shape = look.traits, skin.shape[1:]
    side = min(shape)
    field = _field(rng, shape, traits["cells"])
    patches = np.clip((field - (1 - 2 * traits["extent"])) * 0.6, 0, 1)  # soft: ill-defined
    _redden(skin, patches * (0.3 + 0.5 * look.severity), look.redness)
    points = _points(rng, _count(rng, traits["papules"] * (0.5 + look.severity)), shape, 0.95)
    inside = patches[points[:, 1].astype(int), points[:, 0].astype(int)] > 0.15
    radii = side * rng.uniform(0.003, 0.007, len(points))
    papules = _dots(shape, points[inside], radii[inside], 0.5)
    _redden(skin, papules * 0.5 * look.severity, look.redness)
    _draw_scratches(rng, skin, patches, _count(rng, traits["scratches"] * look.severity))
    if traits["scale"]:
        _scale_flakes(rng, skin, patches, traits["scale"])


def _draw_scratches(rng, skin, patches, count) -> None:
    shape = patches.shape
    side = min(shape)
    starts = _points(rng, count * 3, shape, 0.9)
    starts = starts[patches[starts[:, 1].astype(int), starts[:, 0].astype(int)] > 0.2][:count]
    angles = rng.uniform(0, np.pi, len(starts))[:, None]
    lengths = side * rng.uniform(0.02, 0.07, len(starts))[:, None]
    ends = starts + lengths * np.hstack([np.cos(angles), np.sin(angles)])
    mask = np.zeros(shape, np.uint8)
    lines = np.round(np.stack([starts, ends], axis=1) * 16).astype(np.int32)
    cv2.polylines(mask, list(lines), False, 255, max(1, round(side / 250)), cv2.LINE_AA, 4)
    _redden(skin, mask.astype(np.float32) * np.float32(0.7 / 255), SCRATCH_LOSS)


def _draw_papules(rng, look, skin, count, pustule_share) -> None:
    """Inflamed papules (red halos); a share of them pustules with white-yellow centres."""
    shape = skin.shape[1:]
    side = min(shape)
    points = _points(rng, count, shape, 0.8)
    radii = side * rng.uniform(0.007, 0.016, count)
    halos = _dots(shape, points, radii * 1.5, blur=0.012 * side)
    _redden(skin, np.minimum(halos * 1.5, 1) * (0.45 + 0.45 * look.severity), look.redness)
    pustules = rng.random(count) < pustule_share
    heads = _dots(shape, points[pustules], radii[pustules] * 0.45, blur=0.4)
    _cover(skin, heads * 0.85, PUS)


def paint_acne(rng, look, skin) -> None:
    """Papules and pustules plus comedones (blackheads and whiteheads) on face-like skin."""
    traits, shape = look.traits, skin.shape[1:]
    side = min(shape)
    if traits["flush"]:
        _redden(skin, np.clip(_field(rng, shape, 2.5) * 0.5 + 0.3, 0, 1) * traits["flush"],
                look.redness)
    _draw_papules(rng, look, skin, max(1, _count(rng, traits["papules"])), traits["pustules"])
    comedones = _count(rng, traits["comedones"])
    points = _points(rng, comedones, shape, 0.85)
    dots = _dots(shape, points, side * rng.uniform(0.0025, 0.005, comedones), 0.3)
    open_ones = rng.random() < 0.6  # blackheads or closed, skin-coloured whiteheads
    _cover(skin, dots * 0.75, BLACKHEAD if open_ones else look.skin * 1.12)
    sheen = _dots(shape, _points(rng, 2, shape, 0.5), side * rng.uniform(0.08, 0.2, 2), 0.1 * side)
    _cover(skin, sheen * 0.12, (1.0, 1.0, 1.0))  # oily facial skin catches the flash


def paint_rosacea(rng, look, skin) -> None:
    """Diffuse central erythema with telangiectasia, sometimes papules and pustules."""
    traits, shape = look.traits, skin.shape[1:]
    height, width = shape
    centre = rng.normal(0.5, 0.06, 2)
    spread = traits["spread"]
    rows = ((np.arange(height, dtype=np.float32) / height - centre[1]) / spread) ** 2
    columns = ((np.arange(width, dtype=np.float32) / width - centre[0]) / spread) ** 2
    flush = np.exp(-rows)[:, None] * np.exp(-columns)[None, :]
    flush *= np.clip(1 + 0.25 * _field(rng, shape, 4), 0, 1.5)
    _redden(skin, flush * traits["flush"] * (0.5 + 0.5 * look.severity), look.redness)
    _draw_vessels(rng, skin, _count(rng, traits["vessels"] * (0.4 + look.severity)), spread)
    if traits["papules"]:
        _draw_papules(rng, look, skin, _count(rng, traits["papules"]), traits["pustules"])


def _draw_vessels(rng, skin, count, spread) -> None:
    """Telangiectasia: thin, wandering, branching red lines near the centre of the flush."""
    shape = skin.shape[1:]
    side = min(shape)
    mask = np.zeros(shape, np.uint8)
    for start in _points(rng, count, shape, spread * 1.5):
        steps = rng.normal(0, 1, (int(rng.integers(5, 14)), 2)).cumsum(axis=0) * 0.3
        heading = rng.normal(0, 1, 2)
        path = start + np.cumsum(heading + steps, axis=0) * side * 0.012
        path = np.vstack([start, path])
        cv2.polylines(mask, [np.round(path * 16).astype(np.int32)], False, 255, 1,
                      cv2.LINE_AA, 4)
    _redden(skin, mask.astype(np.float32) * np.float32(0.8 / 255), VESSEL_LOSS)


def paint_ctcl(rng, look, skin) -> None:
    """Large irregular pink-brown patches, some annular (a ring with a clearer centre)."""
    traits, shape = look.traits, skin.shape[1:]
    side = min(shape)
    count = max(1, _count(rng, traits["patches"]))
    centres = _points(rng, count, shape, 0.6)
    radii = side * traits["size"] * rng.lognormal(0, 0.3, count)
    patches = np.zeros(shape, np.float32)
    for centre, radius in zip(centres, radii):
        patch = _blobs(rng, shape, [centre], [radius], 0.45)
        if rng.random() < traits["annular"]:
            patch -= 0.85 * _blobs(rng, shape, [centre], [radius], 0.2, scale=0.55)
        np.maximum(patches, patch, out=patches)
    patches = soften(np.clip(patches, 0, 1), traits["edge"] * side)
    mottle = np.clip(0.75 + 0.3 * _field(rng, shape, 6), 0, 1)
    _redden(skin, patches * mottle * (0.35 + 0.45 * look.severity), look.redness)
    if traits["scale"]:
        _scale_flakes(rng, skin, patches, traits["scale"])


PAINTERS = {"psoriasis": paint_psoriasis, "eczema": paint_eczema, "acne": paint_acne,
            "rosacea": paint_rosacea, "ctcl": paint_ctcl}
