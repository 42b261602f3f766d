"""Synthetic skin and non-skin photographs for the non-skin filter's demos and tests.

This module owns how a synthetic example of each class is drawn. Skin: real skin tones (in
the YCrCb skin box Cr 133-173, Cb 77-127) with shading, redness, pores, lines, hairs,
lesions and highlights, framed as a close-up, a limb on a background or a portrait with
hair. Non-skin: drapes, paper slips, gradients, sky with masts, foliage, and the hard cases
in skin-like colours (wood, objects, tableware), a fifth of them grey. Images are drawn at twice
the asked size and shrunk by area averaging, as a loaded photograph is; image `i` of a class
depends only on (seed, class, i). numpy and OpenCV only; no Keras.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

OVERSAMPLE = 2          # draw at 2x and shrink, so edges and dots are anti-aliased
SKIN_STREAM, NON_SKIN_STREAM = 0, 1

# Real skin tones (RGB), light to dark, from Fitzpatrick-scale swatches; all lie in the
# YCrCb skin box. A drawn tone mixes two neighbours and jitters.
SKIN_TONES = np.array([
    (255, 219, 190), (241, 194, 167), (235, 180, 170), (224, 172, 138), (198, 134, 104),
    (198, 134, 90), (160, 105, 75), (141, 85, 50), (120, 78, 55), (85, 55, 40),
], dtype=np.float32)
HAIR_COLOURS = np.array([(25, 20, 18), (60, 40, 30), (110, 75, 50), (150, 110, 70),
                         (200, 165, 110), (150, 70, 40), (170, 170, 165)], np.float32)


def make_synthetic_skin_images(n: int, seed: int = 0, size: int = 128,
                               start: int = 0) -> np.ndarray:
    """Skin photographs `start` .. `start + n - 1`, uint8 RGB of shape (n, size, size, 3)."""
    return render(draw_skin, range(start, start + n), (seed, SKIN_STREAM), size)


def make_synthetic_non_skin_images(n: int, seed: int = 0, size: int = 128,
                                   start: int = 0) -> np.ndarray:
    """Non-skin photographs `start` .. `start + n - 1`, uint8 RGB (n, size, size, 3)."""
    return render(draw_non_skin, range(start, start + n), (seed, NON_SKIN_STREAM), size)


def render(draw: Callable, indices: range, stream: tuple[int, int], size: int) -> np.ndarray:
    """Draw each image from its own random stream, then shrink it to `size`."""
    images = np.empty((len(indices), size, size, 3), np.uint8)
    for position, index in enumerate(indices):
        rng = np.random.default_rng((*stream, index))
        canvas = add_camera_noise(rng, draw(rng, size * OVERSAMPLE))
        shrunk = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
        images[position] = np.clip(shrunk, 0, 255).astype(np.uint8)
    return images


def smooth_noise(rng: np.random.Generator, side: int, cells: int) -> np.ndarray:
    """A smooth random field in about [-1, 1] with `cells` bumps across the image."""
    coarse = rng.uniform(-1, 1, (cells + 1, cells + 1)).astype(np.float32)
    return cv2.resize(coarse, (side, side), interpolation=cv2.INTER_CUBIC)


def linear_ramp(rng: np.random.Generator, side: int) -> np.ndarray:
    """A ramp from -1 to 1 along a random direction."""
    angle = rng.uniform(0, 2 * np.pi)
    rows, cols = np.mgrid[0:side, 0:side].astype(np.float32) / side - 0.5
    return 2 * (np.cos(angle) * cols + np.sin(angle) * rows)


def random_point(rng: np.random.Generator, side: int) -> tuple[int, int]:
    return int(rng.integers(0, side)), int(rng.integers(0, side))


def add_camera_noise(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Defocus blur, exposure, a white-balance cast and sensor noise, as in any photograph."""
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 2.0))
    exposure = rng.uniform(0.45, 1.0) if rng.uniform() < 0.3 else 1.0  # some are dim
    image = image * (exposure * rng.uniform(0.92, 1.08, 3)).astype(np.float32)
    return image + rng.normal(0, rng.uniform(1, 5), image.shape).astype(np.float32)


def fill(side: int, colour) -> np.ndarray:
    return np.ones((side, side, 3), np.float32) * np.asarray(colour, np.float32)


def skin_tone(rng: np.random.Generator) -> np.ndarray:
    """A skin colour: a mix of two neighbouring swatches plus a small jitter."""
    first, mix = int(rng.integers(0, len(SKIN_TONES) - 1)), rng.uniform()
    tone = (1 - mix) * SKIN_TONES[first] + mix * SKIN_TONES[first + 1]
    return tone + rng.normal(0, 5, 3).astype(np.float32)


def draw_skin(rng: np.random.Generator, side: int) -> np.ndarray:
    """A skin photograph: a close-up, a limb or trunk on a background, or a face."""
    tone = skin_tone(rng)
    image = fill(side, tone)
    add_redness(rng, image)
    add_shading(rng, image)
    add_pores_and_lines(rng, image, tone)
    for _ in range(int(rng.integers(0, 6))):
        draw_lesion(rng, image, tone)
    add_hairs(rng, image, int(rng.integers(0, 25)) * int(rng.uniform() < 0.5))
    add_highlight(rng, image)
    layout = rng.uniform()
    if layout < 0.3:  # acne and rosacea are photographed on the face
        draw_face(rng, image, tone)
    elif layout < 0.6:
        centre, axes = side * rng.uniform(0.3, 0.7, 2), side * rng.uniform(0.3, 0.8, 2)
        place_on_background(rng, image, ellipse_mask(side, centre, axes, rng.uniform(0, 180)))
    elif layout < 0.8:  # a straight edge of drape or wall, as in framed clinical photographs
        place_on_background(rng, image, np.float32(linear_ramp(rng, side) < rng.uniform(0.1, 0.9)))
    return image


def ellipse_mask(side: int, centre, axes, angle: float) -> np.ndarray:
    centre, axes = tuple(int(c) for c in centre), tuple(int(a) + 1 for a in axes)
    return cv2.ellipse(np.zeros((side, side), np.float32), centre, axes, angle, 0, 360, 1.0, -1)


def place_on_background(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray) -> None:
    """Keep the skin inside `mask`, darkened towards its edge as a curved surface is."""
    side = image.shape[0]
    distance = cv2.distanceTransform((mask > 0.5).astype(np.uint8), cv2.DIST_L2, 5)
    image *= (1 - rng.uniform(0.1, 0.4) * np.exp(-distance / (0.08 * side)))[..., None]
    backgrounds = [draw_cloth, draw_gradient, hair_patch, draw_cloth]
    blend(image, backgrounds[int(rng.integers(0, 4))](rng, side), 1 - mask, sigma=1.0)


def draw_face(rng: np.random.Generator, image: np.ndarray, tone) -> None:
    """A portrait: an oval face with features, hair around it, clothes below the chin."""
    side = image.shape[0]
    centre = side * rng.uniform(0.4, 0.6, 2)
    axes = side * np.array([rng.uniform(0.25, 0.5), rng.uniform(0.35, 0.65)])
    add_features(rng, image, tone, centre, axes)
    place_on_background(rng, image, ellipse_mask(side, centre, axes, 0))
    if rng.uniform() < 0.5:
        chin = int(centre[1] + axes[1] * rng.uniform(0.8, 1.1))
        image[chin:] = draw_cloth(rng, side)[chin:]
    if rng.uniform() < 0.9:
        blend(image, hair_patch(rng, side), hair_mask(rng, side, centre, axes))


def hair_mask(rng: np.random.Generator, side: int, centre, axes) -> np.ndarray:
    """Hair from above the forehead down the sides of the face to a random length."""
    outer = ellipse_mask(side, centre - (0, 0.15 * axes[1]), axes * rng.uniform(1.1, 1.35), 0)
    opening = ellipse_mask(side, centre + (0, 0.1 * axes[1]), axes * (0.95, 1.0), 0)
    opening[:max(0, int(centre[1] - axes[1] * rng.uniform(0.2, 0.7)))] = 0  # the hairline
    hair = outer * (1 - opening)
    hair[max(0, int(centre[1] + axes[1] * rng.uniform(-0.3, 1.0))):] = 0  # hair length
    return hair


def blend(image: np.ndarray, other: np.ndarray, mask: np.ndarray, sigma: float = 1.5) -> None:
    """Paste `other` where `mask` is 1, with a soft edge."""
    soft = cv2.GaussianBlur(np.ascontiguousarray(mask), (0, 0), sigma)[..., None]
    image[:] = image * (1 - soft) + other * soft


def add_features(rng: np.random.Generator, image: np.ndarray, tone, centre, axes) -> None:
    """Eyes, brows, nostrils and lips placed by the usual proportions of a face."""
    dark = (float(rng.uniform(20, 90)), float(rng.uniform(15, 60)), 20.0)
    lips = tuple(float(c) for c in tone * np.float32([0.95, 0.55, 0.55]))
    shadow = tuple(float(c) for c in tone * 0.5)
    features = [  # (x, y) offset and (width, height) in face axes, arc, colour, thickness
        *[((0.4 * sign, -0.15), (0.17, 0.06), 360, (235, 230, 225), -1) for sign in (-1, 1)],
        *[((0.4 * sign, -0.15), (0.06, 0.06), 360, dark, -1) for sign in (-1, 1)],  # irises
        *[((0.4 * sign, -0.3), (0.2, 0.0), 180, dark, 3) for sign in (-1, 1)],  # brows
        *[((0.1 * sign, 0.2), (0.03, 0.03), 360, shadow, -1) for sign in (-1, 1)],  # nostrils
        ((0, 0.45), (0.3, 0.08), 360, lips, -1),
    ]
    if rng.uniform() < 0.5:  # a smile shows teeth
        features.append(((0, 0.45), (0.22, 0.04), 180, (240, 235, 220), -1))
    for offset, extent, arc, colour, thickness in features:
        point = tuple(int(c) for c in centre + np.multiply(offset, axes))
        size = tuple(int(e) + 1 for e in np.multiply(extent, axes))
        start = 180 if thickness > 0 else 0  # brows are the upper half of an arc
        cv2.ellipse(image, point, size, 0, start, start + arc, colour, thickness)


def add_redness(rng: np.random.Generator, image: np.ndarray) -> None:
    """Blotchy erythema: more red, less green and blue where the field is high."""
    field = np.maximum(smooth_noise(rng, image.shape[0], int(rng.integers(2, 6))), 0)
    image += field[..., None] * np.float32([0.6, -0.5, -0.4]) * rng.uniform(0, 35)


def add_shading(rng: np.random.Generator, image: np.ndarray) -> None:
    """Light over a curved body part: a slope, soft bumps, often a side turned into shadow."""
    side = image.shape[0]
    ramp = linear_ramp(rng, side)
    shade = 1 + rng.uniform(0, 0.25) * ramp + rng.uniform(0, 0.15) * smooth_noise(rng, side, 3)
    if rng.uniform() < 0.5:  # the terminator: where the surface turns away from the light
        edge, width = rng.uniform(-0.5, 0.5), rng.uniform(0.05, 0.3)
        shade *= 1 - rng.uniform(0.2, 0.5) / (1 + np.exp(-(ramp - edge) / width))
    image *= shade[..., None]


def add_pores_and_lines(rng: np.random.Generator, image: np.ndarray, tone) -> None:
    """Pores as dark dots, skin lines as faint crossing strokes, fine grain."""
    side = image.shape[0]
    dark = tuple(float(c) for c in tone * rng.uniform(0.75, 0.95))
    for _ in range(int(rng.integers(0, side * side // 200))):
        cv2.circle(image, random_point(rng, side), 1, dark, -1)
    lines = np.zeros((side, side), np.float32)
    for _ in range(int(rng.integers(0, 40))):
        cv2.line(lines, random_point(rng, side), random_point(rng, side), 1.0, 1)
    image *= (1 - rng.uniform(0, 0.12) * lines)[..., None]
    grain = cv2.GaussianBlur(rng.normal(0, 1, (side, side)).astype(np.float32), (0, 0), 1.2)
    image *= (1 + rng.uniform(0, 0.06) * grain)[..., None]


def draw_lesion(rng: np.random.Generator, image: np.ndarray, tone) -> None:
    """A naevus, an erythematous plaque, a papule or a patch of white scale."""
    kind = rng.choice(["naevus", "plaque", "papule", "scale"])
    colour, radius = {  # radius as a fraction of the image side
        "naevus": (tone * rng.uniform(0.25, 0.6) * np.float32([1.0, 0.85, 0.75]), 0.05),
        "plaque": (tone * np.float32([1.0, rng.uniform(0.55, 0.8), rng.uniform(0.55, 0.8)]), 0.25),
        "papule": (tone * np.float32([1.0, 0.6, 0.6]), 0.03),
        "scale": (np.float32([235, 228, 220]), 0.12),
    }[kind]
    axes = image.shape[0] * radius * rng.uniform(0.4, 1.2, 2)
    blur = max(axes) * rng.uniform(0.1, 0.4) + 0.5
    paint_blob(rng, image, colour, axes, blur, rng.uniform(0.5, 1.0))


def paint_blob(rng: np.random.Generator, image: np.ndarray, colour, axes, blur: float,
               strength: float) -> None:
    """Paint `colour` into a soft ellipse at a random place and angle."""
    side = image.shape[0]
    mask = ellipse_mask(side, random_point(rng, side), axes, rng.uniform(0, 180))
    mask = cv2.GaussianBlur(mask, (0, 0), blur)[..., None] * strength
    image[:] = image * (1 - mask) + np.asarray(colour, np.float32) * mask


def add_hairs(rng: np.random.Generator, image: np.ndarray, count: int, colour=None) -> None:
    """Thin curved hairs, dark unless a colour is given."""
    side = image.shape[0]
    colour = rng.uniform(20, 90) * np.float32([1.0, 0.8, 0.6]) if colour is None else colour
    for _ in range(count):
        start = np.array(random_point(rng, side), np.float32)
        bend, step = rng.normal(0, side * 0.05, 2), rng.normal(0, side * 0.15, 2)
        points = [start + t * step + t * t * bend for t in np.linspace(0, 1, 6)]
        curve = np.array(points, np.int32).reshape(-1, 1, 2)
        shade = tuple(float(c) for c in colour * rng.uniform(0.6, 1.4))
        cv2.polylines(image, [curve], False, shade, 1, cv2.LINE_AA)


def add_highlight(rng: np.random.Generator, image: np.ndarray) -> None:
    """A soft specular sheen from the flash on oily skin."""
    side = image.shape[0]
    axes = side * np.array([rng.uniform(0.05, 0.2), rng.uniform(0.02, 0.1)])
    paint_blob(rng, image, 250.0, axes, side * 0.03, rng.uniform(0, 0.35))


def hair_patch(rng: np.random.Generator, side: int) -> np.ndarray:
    """Head hair: a shaded field of one hair colour, streaked with lighter and darker strands."""
    colour = HAIR_COLOURS[int(rng.integers(0, len(HAIR_COLOURS)))] * rng.uniform(0.8, 1.2)
    image = fill(side, colour) * (1 + 0.3 * smooth_noise(rng, side, 4))[..., None]
    add_hairs(rng, image, side * 2, colour)
    return image


def draw_non_skin(rng: np.random.Generator, side: int) -> np.ndarray:
    """A random non-skin scene; a fifth of them in grey, like scanned slips and old prints."""
    # Wood, objects and tableware come twice: in skin-like colours, they are the hard cases.
    scenes = [draw_cloth, draw_paper, draw_gradient, draw_sky, draw_foliage, draw_sky,
              draw_wood, draw_objects, draw_tableware, draw_wood, draw_objects, draw_tableware]
    image = scenes[int(rng.integers(0, len(scenes)))](rng, side)
    return image.mean(axis=2, keepdims=True).repeat(3, axis=2) if rng.uniform() < 0.2 else image


def draw_cloth(rng: np.random.Generator, side: int) -> np.ndarray:
    """A blue, green or grey drape: woven texture and soft folds."""
    palette = [(40, 80, 160), (70, 110, 180), (60, 140, 130), (120, 120, 125), (200, 205, 210),
               (25, 25, 30)]
    image = fill(side, palette[int(rng.integers(0, len(palette)))])
    rows, cols = np.mgrid[0:side, 0:side].astype(np.float32) * 2 * np.pi / rng.uniform(2, 5)
    weave = np.sin(cols) * np.sin(rows)
    folds = smooth_noise(rng, side, int(rng.integers(2, 5)))
    image *= (1 + 0.06 * weave + rng.uniform(0.1, 0.35) * folds)[..., None]
    return image


def draw_paper(rng: np.random.Generator, side: int) -> np.ndarray:
    """A white or yellow slip with lines of text-like dashes."""
    paper = [(245, 245, 240), (250, 235, 120), (240, 220, 90), (230, 230, 230)]
    image = fill(side, paper[int(rng.integers(0, len(paper)))])
    ink = tuple(float(c) for c in rng.uniform(0, 80, 3))
    height = int(rng.integers(side // 40 + 2, side // 12 + 3))
    for top in range(int(rng.integers(0, height)), side, int(height * rng.uniform(1.4, 2.2))):
        left = int(rng.integers(0, side // 8 + 1))
        while left < side:
            width = int(rng.integers(height, height * 6))
            cv2.rectangle(image, (left, top), (left + width, top + height // 2), ink, -1)
            left += width + int(rng.integers(height // 2 + 1, height * 2))
    add_shading(rng, image)
    return image


def draw_gradient(rng: np.random.Generator, side: int) -> np.ndarray:
    """A smooth blend of two random colours, like a wall under uneven light."""
    first, second = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    weight = (linear_ramp(rng, side)[..., None] + 1) / 2
    return ((1 - weight) * first + weight * second).astype(np.float32)


def draw_sky(rng: np.random.Generator, side: int) -> np.ndarray:
    """Day or night sky with clouds or lights, sometimes masts and a dark horizon."""
    night = rng.uniform() < 0.4
    top, bottom = ((10, 20, 60), (40, 70, 140)) if night else ((60, 120, 220), (170, 210, 245))
    weight = np.linspace(0, 1, side, dtype=np.float32)[:, None, None]
    image = np.repeat(np.float32(top) * (1 - weight) + np.float32(bottom) * weight, side, 1)
    clouds = np.clip(smooth_noise(rng, side, int(rng.integers(3, 8))), 0, 1) ** 2
    image += clouds[..., None] * (40 if night else 200) * rng.uniform(0, 1)
    for _ in range(int(rng.integers(0, 30)) * night):  # lights
        cv2.circle(image, random_point(rng, side), int(rng.integers(1, 4)), (255, 230, 180), -1)
    masts = tuple(float(c) for c in rng.uniform(0, 255, 3))
    for _ in range(int(rng.integers(0, 25)) * int(rng.uniform() < 0.5)):  # masts and towers
        cv2.line(image, random_point(rng, side), random_point(rng, side), masts, 1)
    if rng.uniform() < 0.5:
        image[int(side * rng.uniform(0.6, 0.95)):] = rng.uniform(10, 70, 3)
    return np.minimum(image, 255)


def draw_foliage(rng: np.random.Generator, side: int) -> np.ndarray:
    """Overlapping leaves in greens, with a few brown twigs."""
    image = fill(side, rng.uniform(10, 60) * np.float32([0.6, 1.0, 0.5]))
    for _ in range(int(rng.integers(30, 120))):
        tint = np.float32([rng.uniform(0.3, 0.8), 1.0, rng.uniform(0.2, 0.6)])
        colour = tuple(float(c) for c in rng.uniform(40, 200) * tint)
        axes = (int(rng.integers(2, side // 8)), int(rng.integers(1, side // 16 + 2)))
        cv2.ellipse(image, random_point(rng, side), axes, rng.uniform(0, 180), 0, 360, colour, -1)
    for _ in range(int(rng.integers(0, 5))):
        cv2.line(image, random_point(rng, side), random_point(rng, side), (90, 60, 30), 2)
    return image


def draw_wood(rng: np.random.Generator, side: int) -> np.ndarray:
    """A table top or floor: warped grain, bold or faint, planks, in skin-like colours."""
    base = SKIN_TONES[int(rng.integers(3, len(SKIN_TONES)))] * rng.uniform(0.6, 1.0)
    rows, cols = np.mgrid[0:side, 0:side].astype(np.float32) / side
    warp = 0.08 * smooth_noise(rng, side, 3)
    grain = np.sin((cols + warp) * rng.uniform(20, 90) + rows * rng.uniform(-5, 5))
    image = fill(side, base) * (1 + rng.uniform(0.05, 0.3) * grain)[..., None]
    streaks = cv2.GaussianBlur(rng.normal(0, 1, (side, 1)).astype(np.float32), (0, 0), 1)
    image *= (1 + 0.1 * np.repeat(streaks.T, side, axis=0))[..., None]
    image[:, ::int(side / rng.uniform(1.5, 5))] *= rng.uniform(0.4, 1.0)  # plank seams
    return np.ascontiguousarray(np.rot90(image, int(rng.integers(0, 4))))


def draw_objects(rng: np.random.Generator, side: int) -> np.ndarray:
    """Flat-coloured objects with hard edges and shadows: cups, tubes, boxes, labels."""
    image = [draw_gradient, draw_wood, draw_cloth][int(rng.integers(0, 3))](rng, side)
    for _ in range(int(rng.integers(1, 6))):
        colour, outline = object_colour(rng), random_outline(rng, side)
        cv2.fillPoly(image, [outline + side // 40 + 1], (0.0, 0.0, 0.0))  # its shadow
        cv2.fillPoly(image, [outline], colour)
    return image


def draw_tableware(rng: np.random.Generator, side: int) -> np.ndarray:
    """Cups and plates seen from above: glossy rims, drinks, on wood or cloth."""
    image = [draw_wood, draw_cloth][int(rng.integers(0, 2))](rng, side)
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.1, 0.04 * side))  # depth of field
    for _ in range(int(rng.integers(1, 4))):
        centre = random_point(rng, side)
        radius = int(side * rng.uniform(0.12, 0.45))
        squash = rng.uniform(0.5, 1.0)  # a circle seen at an angle
        tint = np.float32([1.0, rng.uniform(0.6, 1.0), rng.uniform(0.3, 1.0)])
        drink = tuple(float(c) for c in rng.uniform(20, 230) * tint)  # coffee, tea, milk
        for fraction, colour in ((1.0, object_colour(rng)), (rng.uniform(0.5, 0.85), drink)):
            axes = (int(radius * fraction) + 1, int(radius * fraction * squash) + 1)
            cv2.ellipse(image, centre, axes, 0, 0, 360, colour, -1)
        shine = (int(radius * 0.9) + 1, int(radius * 0.9 * squash) + 1)
        cv2.ellipse(image, centre, shine, 0, 200, 250, (250.0, 250.0, 250.0), 2, cv2.LINE_AA)
    return image


def object_colour(rng: np.random.Generator) -> tuple[float, ...]:
    """Saturated paint, white, black, or (a third of the time) a skin-like colour."""
    pick = rng.uniform()
    if pick < 0.33:
        return tuple(float(c) for c in skin_tone(rng))
    if pick < 0.5:
        return (float(rng.choice([15.0, 240.0])),) * 3
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(190, 256), rng.integers(40, 256)]]])
    return tuple(float(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def random_outline(rng: np.random.Generator, side: int) -> np.ndarray:
    """The corners of a box, an ellipse or a random pentagon, int32 points."""
    kind = int(rng.integers(0, 3))
    centre = np.array(random_point(rng, side))
    width, height = (int(rng.integers(side // 10, side // 2)) for _ in range(2))
    if kind == 0:
        corners = np.array([(-width, -height), (width, -height), (width, height), (-width, height)])
    elif kind == 1:
        corners = np.array(cv2.ellipse2Poly((0, 0), (width, height), 0, 0, 360, 10))
    else:
        corners = rng.integers(-side // 3, side // 3, (5, 2))
    return (centre + corners).astype(np.int32)
