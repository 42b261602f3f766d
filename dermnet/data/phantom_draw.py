"""Drawing engine of the phantom dataset: class signatures, lesion canvases and camera views.

`phantom.py` decides what to draw (classes, lesions, clinical data, files); this module owns
how a lesion of a given class looks. A lesion is rendered once, in its own square canvas, as
two layers: a multiplicative pigment `tint` (1 = skin unchanged, so pigment darkens any skin
tone) and a premultiplied `paint` layer for opaque structures (vessels, scale, white areas).
A view warps both onto a patch of skin with its own rotation, zoom, lighting, hair and noise,
so several images of one lesion show the same lesion under different conditions.

Every random choice comes from the `numpy.random.Generator` passed in: same generator state,
same pixels. OpenCV and numpy only; no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import functools

import cv2
import numpy as np

# Reference colours, RGB in [0, 1]. Pigment colours act relative to LIGHT_SKIN.
COLOURS = {
    "tan": (0.80, 0.62, 0.46),
    "light_brown": (0.68, 0.48, 0.33),
    "brown": (0.52, 0.33, 0.21),
    "dark_brown": (0.33, 0.20, 0.13),
    "black": (0.14, 0.10, 0.09),
    "blue_grey": (0.45, 0.48, 0.56),
    "grey": (0.58, 0.54, 0.52),
    "pink": (0.92, 0.64, 0.64),
    "red": (0.80, 0.32, 0.32),
    "dark_red": (0.55, 0.12, 0.16),
    "purple": (0.50, 0.26, 0.42),
    "dark_blue": (0.26, 0.24, 0.42),
}
WHITE = (0.95, 0.93, 0.90)  # scale, milia, scar-like and shiny white areas
VESSEL_RED = (0.78, 0.12, 0.14)
LIGHT_SKIN = np.array((0.94, 0.80, 0.71), np.float32)  # the reference for pigment colours
MEDIUM_SKIN = np.array((0.78, 0.58, 0.44), np.float32)
DARK_SKIN = np.array((0.42, 0.28, 0.20), np.float32)


@dataclasses.dataclass(frozen=True)
class Signature:
    """How one class tends to look. (mean, sd) pairs are normal draws, clipped to sane ranges;
    every range overlaps other classes so that images alone do not separate the classes."""

    radius: tuple[float, float]        # lesion radius, fraction of the image's short side
    irregularity: tuple[float, float]  # relative deviation of the border from a circle
    asymmetry: tuple[float, float]     # 0: colours in concentric rings, 1: random blotches
    edge: tuple[float, float]          # border blur, fraction of the radius
    opacity: tuple[float, float]       # pigment strength at the core
    atypia: tuple[float, float]        # disorder of network, dots and streaks, 0..1
    palette: dict[str, float]          # colour -> weight when picking the lesion's colours
    colour_counts: tuple[float, ...]   # probabilities of 1, 2, 3, ... colours
    structures: dict[str, float]       # structure -> probability a lesion shows it


@dataclasses.dataclass(frozen=True)
class Lesion:
    """One rendered lesion (and its patient's skin), ready to be viewed any number of times."""

    radius: float         # fraction of the image's short side
    skin: np.ndarray      # (3,) RGB skin tone of the patient
    hairiness: float      # mean number of hairs per image
    hair_colour: np.ndarray  # (3,) RGB in [0, 255]
    tint: np.ndarray      # (3, side, side) float32 multiplicative pigment, 1 = no change
    paint: np.ndarray | None  # (4, side, side) premultiplied RGB and alpha; None: nothing


@dataclasses.dataclass
class Canvas:
    """The lesion's square drawing surface while its structures are added."""

    side: int
    core: float           # nominal radius in pixels
    shape: np.ndarray     # (side, side) soft lesion alpha in [0, 1]
    depth: np.ndarray     # (side, side) 0 outside and at the border, 1 at the deepest point
    colours: list         # the lesion's own colours, RGB arrays
    # Channels first, (3 or 4, side, side): numpy broadcasts a per-pixel weight over whole
    # contiguous planes many times faster than over a trailing axis of length 3.
    tint: np.ndarray
    paint: np.ndarray

    def darken(self, weight, colour):
        """Multiply towards `colour` (relative to light skin) with per-pixel `weight`."""
        loss = 1 - np.minimum(np.asarray(colour, np.float32) / LIGHT_SKIN, 1)
        rows, columns = _window(weight)
        self.tint[:, rows, columns] *= 1 - weight[rows, columns] * loss[:, None, None]

    def cover(self, weight, colour):
        """Paint `colour` over everything with per-pixel opacity `weight`."""
        target = np.append(np.asarray(colour, np.float32), np.float32(1))
        rows, columns = _window(weight)
        change = self.paint[:, rows, columns] - target[:, None, None]
        change *= weight[rows, columns]
        self.paint[:, rows, columns] -= change


def _window(weight):
    """Slices around the non-zero weights: most marks touch a small part of the canvas."""
    x, y, width, height = cv2.boundingRect((weight > 1e-3).astype(np.uint8))
    return slice(y, y + height), slice(x, x + width)


def compute_work_size(image_size):
    """Views are composed at about 240 px on the short side, then resized to `image_size`:
    the soft dermoscopic look needs no more, and it keeps a 600x450 image under 10 ms."""
    height, width = image_size
    factor = max(1, round(min(height, width) / 240))
    return max(8, round(height / factor)), max(8, round(width / factor))


def compute_canvas_side(image_size):
    return int(np.clip(min(compute_work_size(image_size)), 48, 256))


def make_noise(rng, shape, cells):
    """Smooth float32 noise, about zero mean and unit deviation, with `cells` blobs across."""
    height, width = shape
    grid = rng.standard_normal((int(cells) + 2, int(cells * width / height) + 2))
    grid = ((grid - grid.mean()) / (grid.std() * 0.87 + 1e-6)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)  # 0.87: cubic's loss


def soften(mask, sigma):
    """Gaussian-like blur; stack blur for wide kernels, where it is many times faster."""
    if sigma < 3:
        return cv2.GaussianBlur(mask, (0, 0), sigma) if sigma > 0 else mask
    return cv2.stackBlur(mask, (2 * round(2.5 * sigma) + 1,) * 2)


def _draw_value(rng, mean_sd, low, high):
    return float(np.clip(rng.normal(*mean_sd), low, high))


def _jitter_colour(rng, name):
    colour = np.asarray(COLOURS[name], np.float32) * rng.uniform(0.88, 1.1)
    return np.clip(colour + rng.normal(0, 0.025, 3), 0.03, 1.0).astype(np.float32)


def make_canvas(rng, signature, side):
    """Draw the outline (soft alpha and depth map) and pick the lesion's colours."""
    core = 0.26 * side
    angles = np.linspace(0, 2 * np.pi, 240, endpoint=False)
    harmonics = np.arange(2, 18)
    weights = harmonics ** -0.7 / np.sqrt((harmonics ** -1.4).sum() / 2)
    amplitudes = _draw_value(rng, signature.irregularity, 0, 0.3) * weights
    waves = amplitudes * rng.standard_normal(harmonics.size)
    phases = rng.uniform(0, 2 * np.pi, harmonics.size)
    relative = 1 + waves @ np.cos(np.outer(harmonics, angles) + phases[:, None])
    radius = core * np.clip(relative, 0.4, 1.6)
    aspect = np.sqrt(np.exp(rng.normal(0, 0.15)))
    points = np.stack([radius * np.cos(angles) * aspect, radius * np.sin(angles) / aspect], 1)
    mask = np.zeros((side, side), np.uint8)
    cv2.fillPoly(mask, [np.round((points + side / 2) * 16).astype(np.int32)], 255,
                 cv2.LINE_AA, shift=4)
    depth = cv2.distanceTransform((mask > 127).astype(np.uint8), cv2.DIST_L2, 3)
    blur = _draw_value(rng, signature.edge, 0.02, 0.45) * core
    shape = soften(mask.astype(np.float32) / 255, blur)
    names, weights = list(signature.palette), np.array(list(signature.palette.values()))
    chances = np.asarray(signature.colour_counts) / np.sum(signature.colour_counts)
    count = min(rng.choice(len(chances), p=chances) + 1, len(names))
    picked = rng.choice(names, size=count, replace=False, p=weights / weights.sum())
    return Canvas(side, core, shape, depth / np.float32(max(depth.max(), 1.0)),
                  [_jitter_colour(rng, name) for name in picked],
                  np.ones((3, side, side), np.float32), np.zeros((4, side, side), np.float32))


def draw_base(rng, canvas, signature):
    """Fill the lesion with its colours: rings when symmetric, blotches when asymmetric.
    Colour zones are smooth, so they are mixed at a quarter of the pixels and resized."""
    asymmetry = _draw_value(rng, signature.asymmetry, 0, 1)
    colours = sorted(canvas.colours, key=lambda colour: float(colour.sum()), reverse=True)
    levels = [float(level) for level in np.linspace(0.05, 0.95, len(colours))]
    levels = levels if rng.random() < 0.7 else levels[::-1]  # mostly darkest in the middle
    small = cv2.resize(canvas.depth, (canvas.side // 2, canvas.side // 2))
    fields = [(1 - asymmetry) * -8 * (small - level) ** 2
              + asymmetry * 1.5 * make_noise(rng, small.shape, 3) for level in levels]
    top = np.maximum.reduce(fields)
    colour, total = np.zeros((3,) + small.shape, np.float32), np.zeros(small.shape, np.float32)
    for field, own in zip(fields, colours):
        weight = np.exp(6 * (field - top))
        total += weight
        colour += weight * own[:, None, None]
    strength = _draw_value(rng, signature.opacity, 0.25, 1.0)
    texture = np.clip(strength * (1 + 0.1 * make_noise(rng, small.shape, canvas.side / 10)), 0, 1)
    loss = texture * (1 - np.minimum(colour / total / LIGHT_SKIN[:, None, None], 1))
    for channel in range(3):
        resized = cv2.resize(loss[channel], (canvas.side, canvas.side))
        canvas.tint[channel] *= 1 - canvas.shape * resized


def _inside_points(rng, canvas, count, low=0.0, high=1.0):
    """Up to `count` random points whose depth lies in (low, high]."""
    candidates = rng.uniform(0, canvas.side - 1, size=(8 * count + 16, 2))
    depth = canvas.depth[candidates[:, 1].astype(int), candidates[:, 0].astype(int)]
    return candidates[(depth > low) & (depth <= high)][:count]


def _spots(canvas, points, radii, blur=0.0):
    """Float mask of filled circles (sub-pixel, anti-aliased)."""
    mask = np.zeros((canvas.side, canvas.side), np.uint8)
    for (x, y), radius in zip(np.round(points * 16).astype(int), radii):
        cv2.circle(mask, (int(x), int(y)), max(int(radius * 16), 12), 255, -1, cv2.LINE_AA, 4)
    return soften(mask.astype(np.float32) / 255, blur)


def _strokes(canvas, lines, thickness, blur=0.0):
    mask = np.zeros((canvas.side, canvas.side), np.uint8)
    cv2.polylines(mask, [np.round(line * 16).astype(np.int32) for line in lines], False, 255,
                  max(1, round(thickness)), cv2.LINE_AA, 4)
    return soften(mask.astype(np.float32) / 255, blur)


def _dark_colour(rng, canvas, atypia):
    if rng.random() < atypia:
        return _jitter_colour(rng, rng.choice(["black", "dark_brown", "blue_grey"]))
    return min(canvas.colours, key=lambda colour: float(colour.sum())) * 0.6


def draw_network(rng, canvas, atypia):
    """Pigment network: the edges of a Voronoi tessellation of jittered seeds. Typical: even
    holes and thin lines fading to the border; atypical: uneven holes, thick broken lines."""
    spacing = 2 * canvas.core / rng.uniform(10, 18)  # holes across the lesion
    ticks = np.arange(spacing / 2, canvas.side, spacing)
    seeds = np.stack(np.meshgrid(ticks, ticks), -1).reshape(-1, 2)
    seeds += rng.uniform(-0.5, 0.5, seeds.shape) * spacing * (0.6 + atypia)
    seeds = seeds[rng.random(len(seeds)) > 0.4 * atypia]  # merged holes: uneven sizes
    grid = np.ones((canvas.side, canvas.side), np.uint8)
    inside = np.all((seeds >= 0) & (seeds < canvas.side), axis=1)
    grid[seeds[inside, 1].astype(int), seeds[inside, 0].astype(int)] = 0
    _, labels = cv2.distanceTransformWithLabels(grid, cv2.DIST_L2, 3,
                                                labelType=cv2.DIST_LABEL_PIXEL)
    edges = np.zeros(grid.shape, np.float32)
    edges[:, 1:] += labels[:, 1:] != labels[:, :-1]
    edges[1:, :] += labels[1:, :] != labels[:-1, :]
    thickness = np.clip(1 + atypia * make_noise(rng, grid.shape, 5), 0.3, 2.5)
    lines = np.minimum(soften(edges, 0.6 + 0.4 * atypia) * 1.2 * thickness, 1)
    broken = make_noise(rng, grid.shape, 6) > 2 * (atypia - 0.8)  # atypical ones break off
    fade = np.clip(canvas.depth * rng.uniform(2, 6), 0, 1)  # thinner towards the border
    canvas.darken(rng.uniform(0.2, 0.5) * lines * broken * fade * canvas.shape,
                  _dark_colour(rng, canvas, atypia * 0.5))


def draw_spots(rng, canvas, atypia, size):
    """Dots or globules: even and alike when typical, clustered and varied when atypical."""
    count = int(rng.integers(8, 40))
    even = _inside_points(rng, canvas, count, 0.12)
    centres = _inside_points(rng, canvas, 3, 0.0, 0.5)
    if len(centres):
        clustered = centres[rng.integers(0, len(centres), len(even))]
        clustered = clustered + rng.normal(0, 0.15 * canvas.core, (len(even), 2))
        even = np.where((rng.random(len(even)) < atypia)[:, None], clustered, even)
    radii = size * canvas.core * np.exp(atypia * 0.6 * rng.standard_normal(len(even)))
    canvas.darken(rng.uniform(0.5, 0.9) * _spots(canvas, even, radii, 0.6),
                  _dark_colour(rng, canvas, atypia))


def draw_streaks(rng, canvas, atypia):
    """Short radial streaks at the border: all round (starburst) or in one sector."""
    count = int(rng.integers(12, 40))
    sector = rng.uniform(0.6, 2 * np.pi) if rng.random() < atypia else 2 * np.pi
    angles = rng.uniform(0, sector, count) + rng.uniform(0, 2 * np.pi)
    units = np.stack([np.cos(angles), np.sin(angles)], 1)
    reach = canvas.core * rng.uniform(0.85, 1.05, count)[:, None]
    lines = np.stack([units * reach * 0.8, units * reach * 1.12], 1) + canvas.side / 2
    colour = min(canvas.colours, key=lambda colour: float(colour.sum())) * 0.75
    canvas.darken(rng.uniform(0.3, 0.55) * _strokes(canvas, lines, 1, 0.6), colour)


def _make_branch(rng, start, angle, length, step):
    turns = np.cumsum(rng.normal(0, 0.35, length)) + angle
    steps = np.stack([np.cos(turns), np.sin(turns)], 1) * step
    return np.vstack([start, start + np.cumsum(steps, 0)])


def draw_vessels(rng, canvas, atypia):
    """Arborizing vessels: sharp red trunks that fork into ever finer twigs."""
    step, trunks, twigs = canvas.core * 0.06, [], []
    for root in _inside_points(rng, canvas, int(rng.integers(1, 5)), 0.2):
        trunks.append(_make_branch(rng, root, rng.uniform(0, 2 * np.pi),
                                   int(rng.integers(8, 20)), step))
        for fork in trunks[-1][rng.integers(1, len(trunks[-1]), int(rng.integers(3, 8)))]:
            twigs.append(_make_branch(rng, fork, rng.uniform(0, 2 * np.pi),
                                      int(rng.integers(3, 10)), step * 0.7))
    colour = np.array(VESSEL_RED, np.float32) * rng.uniform(0.85, 1.1)
    canvas.cover(0.8 * _strokes(canvas, trunks, canvas.side / 150, 0.4), colour)
    canvas.cover(0.6 * _strokes(canvas, twigs, 1, 0.3), colour)


def draw_speckles(rng, canvas, atypia, counts, sizes, colour, opaque, blur=0.0):
    """Small round marks of one kind: dotted vessels, milia-like cysts, comedo-like plugs."""
    points = _inside_points(rng, canvas, int(rng.integers(*counts)), 0.08)
    radii = canvas.core * rng.uniform(*sizes, len(points))
    weight = rng.uniform(0.7, 0.9) * _spots(canvas, points, radii, blur * canvas.side)
    colour = np.asarray(colour, np.float32) * rng.uniform(0.9, 1.05)
    (canvas.cover if opaque else canvas.darken)(weight, colour)


def draw_nests(rng, canvas, atypia):
    """Blue-grey ovoid nests: a few blurred ellipses."""
    mask = np.zeros((canvas.side, canvas.side), np.uint8)
    for x, y in _inside_points(rng, canvas, int(rng.integers(1, 7)), 0.1):
        axes = (canvas.core * rng.uniform(0.08, 0.25), canvas.core * rng.uniform(0.05, 0.15))
        cv2.ellipse(mask, (int(x), int(y)), (int(axes[0]) + 1, int(axes[1]) + 1),
                    rng.uniform(0, 180), 0, 360, 255, -1, cv2.LINE_AA)
    weight = soften(mask.astype(np.float32) / 255, canvas.side / 120)
    canvas.darken(rng.uniform(0.5, 0.85) * weight, _jitter_colour(rng, "blue_grey"))


def _patches(rng, canvas, coverage):
    """Blotchy areas over about `coverage` of the lesion, with a frayed, uneven texture."""
    shape = canvas.depth.shape
    field = make_noise(rng, shape, 5) + 0.5 * make_noise(rng, shape, canvas.side / 12)
    threshold = float(np.quantile(field[canvas.depth > 0], 1 - coverage))
    grain = np.clip(0.75 + 0.35 * make_noise(rng, shape, canvas.side / 5), 0, 1)
    return np.clip((field - threshold) * 2, 0, 1) * grain * canvas.shape


def draw_scale(rng, canvas, atypia):
    """White-yellow surface scale."""
    colour = np.array(WHITE, np.float32) * (0.95, 0.93, rng.uniform(0.75, 0.95))
    canvas.cover(rng.uniform(0.5, 0.85) * _patches(rng, canvas, rng.uniform(0.15, 0.5)), colour)


def draw_regression(rng, canvas, atypia):
    """Scar-like white areas peppered with fine blue-grey granules."""
    area = _patches(rng, canvas, rng.uniform(0.1, 0.35))
    canvas.cover(rng.uniform(0.3, 0.55) * area, (0.86, 0.86, 0.9))
    points = _inside_points(rng, canvas, int(rng.integers(20, 80)), 0.05)
    points = points[area[points[:, 1].astype(int), points[:, 0].astype(int)] > 0.2]
    radii = np.full(len(points), canvas.core * 0.015)
    canvas.darken(0.7 * _spots(canvas, points, radii, 0.3), _jitter_colour(rng, "blue_grey"))


def draw_central_patch(rng, canvas, atypia):
    """Central white scar-like patch (dermatofibroma)."""
    edge = rng.uniform(0.35, 0.65) + 0.12 * make_noise(rng, canvas.depth.shape, 5)
    weight = np.clip((canvas.depth - edge) * 5, 0, 1) * rng.uniform(0.5, 0.85)
    canvas.cover(weight, np.array(WHITE, np.float32) * (1.0, 0.93, 0.92))


def draw_lagoons(rng, canvas, atypia):
    """Red-purple-blue lagoons: round sharply bounded blobs with pale septa between."""
    points = _inside_points(rng, canvas, int(rng.integers(3, 13)), 0.15)
    names = rng.choice(["red", "dark_red", "purple", "dark_blue"], len(points))
    radii = canvas.core * rng.uniform(0.12, 0.35, len(points))
    for name in sorted(set(names)):
        chosen = names == name
        canvas.darken(0.85 * _spots(canvas, points[chosen], radii[chosen], canvas.side / 220),
                      _jitter_colour(rng, name))


def draw_shiny_lines(rng, canvas, atypia):
    """Shiny white lines in two perpendicular directions (chrysalis-like)."""
    points = _inside_points(rng, canvas, int(rng.integers(4, 13)), 0.1)
    angles = rng.uniform(0, np.pi) + np.pi / 2 * rng.integers(0, 2, len(points))
    half = canvas.core * rng.uniform(0.05, 0.1, len(points))
    offsets = np.stack([np.cos(angles), np.sin(angles)], 1) * half[:, None]
    canvas.cover(0.7 * _strokes(canvas, np.stack([points - offsets, points + offsets], 1), 1),
                 WHITE)


STRUCTURES = {
    "network": draw_network,
    "dots": functools.partial(draw_spots, size=0.025),
    "globules": functools.partial(draw_spots, size=0.07),
    "streaks": draw_streaks,
    "nests": draw_nests,
    "lagoons": draw_lagoons,
    "comedos": functools.partial(draw_speckles, counts=(2, 11), sizes=(0.025, 0.06),
                                 colour=np.array(COLOURS["dark_brown"]) * 0.7, opaque=False),
    "regression": draw_regression,
    "central_patch": draw_central_patch,
    "scale": draw_scale,
    "milia": functools.partial(draw_speckles, counts=(3, 16), sizes=(0.02, 0.05),
                               colour=WHITE, opaque=True, blur=0.005),
    "vessels": draw_vessels,
    "dotted_vessels": functools.partial(draw_speckles, counts=(15, 60), sizes=(0.015, 0.03),
                                        colour=VESSEL_RED, opaque=True, blur=0.002),
    "shiny_lines": draw_shiny_lines,
}  # drawing order: pigment first, then opaque white and red structures on top


def make_skin_tone(rng):
    """Fitzpatrick-like range, mostly light as in HAM10000's (Central European, Australian)
    patients; the tone says nothing about the class."""
    shade = rng.beta(1.3, 4.0) * 2
    low, high = (LIGHT_SKIN, MEDIUM_SKIN) if shade < 1 else (MEDIUM_SKIN, DARK_SKIN)
    tone = np.asarray(low) + (np.asarray(high) - np.asarray(low)) * (shade % 1.0)
    return np.clip(tone + rng.normal(0, 0.02, 3), 0.1, 1.0).astype(np.float32)


def make_lesion(rng, signature, side):
    """A lesion with `signature` on a `side`-pixel canvas, plus its patient's skin and hair."""
    canvas = make_canvas(rng, signature, side)
    draw_base(rng, canvas, signature)
    atypia = _draw_value(rng, signature.atypia, 0, 1)
    shown = {name for name, chance in signature.structures.items() if rng.random() < chance}
    for name, draw in STRUCTURES.items():
        if name in shown:
            draw(rng, canvas, atypia)
    hairy = rng.random() < 0.5
    return Lesion(_draw_value(rng, signature.radius, 0.1, 0.6), make_skin_tone(rng),
                  float(np.exp(rng.normal(1.8, 0.8))) if hairy else 0.0,
                  rng.uniform(15, 70) * np.array([1.0, 0.85, 0.75]), canvas.tint,
                  canvas.paint if canvas.paint[3].any() else None)


def make_view_matrix(rng, lesion, work_size):
    """Canvas -> image affine map: random rotation, flip, zoom and shift of the lesion."""
    height, width = work_size
    side = lesion.tint.shape[-1]
    scale = lesion.radius * min(height, width) / (0.26 * side) * np.exp(rng.normal(0, 0.1))
    angle = rng.uniform(0, 2 * np.pi)
    flip = 1 if rng.random() < 0.5 else -1
    linear = scale * np.array([[np.cos(angle), -np.sin(angle)],
                               [np.sin(angle), np.cos(angle)]]) @ np.diag([flip, 1])
    centre = np.array([width, height]) / 2 + rng.normal(0, 0.05, 2) * (width, height)
    offset = centre - linear @ np.array([side / 2, side / 2])
    return np.hstack([linear, offset[:, None]]).astype(np.float32)


def make_skin(rng, tone, work_size):
    """Skin planes (R, G, B) with mottling and faint redness; smooth, so made small."""
    small = (max(4, work_size[0] // 4), max(4, work_size[1] // 4))
    mottle = 1 + 0.03 * make_noise(rng, small, 4)
    redness = np.clip(make_noise(rng, small, 3), 0, None) * rng.uniform(0, 0.04)
    return [cv2.resize(tone[channel] * mottle * (1 - redness * pallor), work_size[::-1])
            for channel, pallor in enumerate((0.0, 1.0, 0.8))]  # redness: less green, blue


def make_lighting(rng, work_size):
    """Illumination gradient and fall-off, and on some images the scope's dark round rim.
    Smooth, so computed at half resolution and resized."""
    height, width = max(4, work_size[0] // 2), max(4, work_size[1] // 2)
    y, x = np.ogrid[-1:1:height * 1j, -1:1:width * 1j]
    x, y = x * width / max(height, width), y * height / max(height, width)
    angle = rng.uniform(0, 2 * np.pi)
    light = 1 + rng.uniform(0, 0.12) * (x * np.cos(angle) + y * np.sin(angle))
    distance = np.sqrt(x * x + y * y) / np.hypot(width, height) * max(height, width)
    light = light * (1 - rng.uniform(0, 0.15) * distance ** 2)
    if rng.random() < 0.3:
        rim = rng.uniform(0.82, 1.02)
        light = light * np.clip((rim - distance) / rng.uniform(0.02, 0.06), 0.02, 1)
    return cv2.resize(light.astype(np.float32), (work_size[1], work_size[0]))


def draw_hairs(rng, image, lesion):
    """Dark curved hairs, drawn at full resolution so that they stay thin."""
    height, width = image.shape[:2]
    steps = np.linspace(0, 1, 16)[:, None]
    for _ in range(rng.poisson(lesion.hairiness)):
        start = rng.uniform(-0.1, 1.1, 2) * (width, height)
        angle = rng.uniform(0, 2 * np.pi)
        direction = np.array([np.cos(angle), np.sin(angle)])
        end = start + direction * rng.uniform(0.15, 0.7) * width
        bend = (start + end) / 2 + direction[::-1] * (1, -1) * rng.normal(0, 0.12) * width
        curve = (1 - steps) ** 2 * start + 2 * steps * (1 - steps) * bend + steps ** 2 * end
        thickness = max(1, round(width / 600 * rng.uniform(1, 3)))
        colour = tuple(float(value) for value in lesion.hair_colour)
        cv2.polylines(image, [np.round(curve * 16).astype(np.int32)], False, colour,
                      thickness, cv2.LINE_AA, 4)


def draw_artefacts(rng, image):
    """Occasional air bubbles in the immersion fluid and a ruler along one edge."""
    height, width = image.shape[:2]
    for _ in range(rng.poisson(0.15)):
        centre = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
        radius = int(rng.uniform(0.02, 0.08) * width) + 1
        cv2.circle(image, centre, radius, (235, 235, 235), max(1, width // 300), cv2.LINE_AA)
    if rng.random() < 0.04:
        spacing, row = max(3, width // 60), int(rng.uniform(0.85, 0.95) * height)
        for index, x in enumerate(range(spacing, width - spacing, spacing)):
            tick = height // (20 if index % 5 == 0 else 40) + 1
            cv2.line(image, (x, row), (x, row - tick), (25, 25, 25), max(1, width // 400))


def _warp(plane, matrix, work_size, outside):
    """One canvas plane moved into the view (planes one by one: no channel shuffling)."""
    return cv2.warpAffine(plane, matrix, work_size[::-1], flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=outside)


def render_view(rng, lesion, image_size):
    """One photograph of `lesion`: uint8 RGB of shape (height, width, 3)."""
    height, width = image_size
    work_size = compute_work_size(image_size)
    matrix = make_view_matrix(rng, lesion, work_size)
    tint = [_warp(plane, matrix, work_size, 1.0) for plane in lesion.tint]
    paint = [_warp(plane, matrix, work_size, 0.0) for plane in lesion.paint] if (
        lesion.paint is not None) else None
    light = make_lighting(rng, work_size)
    balance = rng.normal(255, 7, 3)  # camera white balance, to 0..255
    blur = rng.uniform(0.3, 1.2) if rng.random() < 0.5 else 0.0  # slightly out of focus
    grain = (rng.random(work_size, np.float32) - 0.5) * rng.uniform(3, 10) + 0.5  # sensor noise
    planes = []
    for channel, skin in enumerate(make_skin(rng, lesion.skin, work_size)):
        plane = skin * tint[channel]
        if paint:
            plane = plane * (1 - paint[3]) + paint[channel]
        plane *= light * np.float32(balance[channel])
        plane = (cv2.GaussianBlur(plane, (0, 0), blur) if blur else plane) + grain
        planes.append(np.clip(plane, 0, 255, out=plane).astype(np.uint8))  # grain's +0.5 rounds
    image = cv2.merge(planes)
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    draw_hairs(rng, image, lesion)
    draw_artefacts(rng, image)
    return image
