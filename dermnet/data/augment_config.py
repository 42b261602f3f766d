"""What the training augmentation randomises (``dermnet.data.augment`` does it in TensorFlow).

Kept apart from the TensorFlow code so that a run's configuration (``dermnet.config``) and
every command's ``--help`` load without TensorFlow.
"""

import dataclasses
from dataclasses import dataclass

FILL_MODES = ("reflect", "nearest", "constant", "wrap")


@dataclass(frozen=True)
class AugmentConfig:
    """What `augment_batch` randomises. Every default is "off": the default is the identity."""

    rotation: float = 0.0  # max |angle|, degrees; uniform in [-rotation, rotation]
    zoom: tuple[float, float] = (1.0, 1.0)  # zoom factor range, log-uniform; > 1 zooms in
    shear: float = 0.0  # max |shear angle|, degrees
    translation: float = 0.0  # max |shift| as a fraction of width (x) and height (y)
    horizontal_flip: bool = False  # flip left-right with probability 0.5
    vertical_flip: bool = False  # flip up-down with probability 0.5
    fill_mode: str = "reflect"  # how pixels outside the source are filled: FILL_MODES
    fill_value: float = 0.0  # grey level for fill_mode="constant"
    brightness: float = 0.0  # max |delta| as a fraction of 255
    contrast: float = 0.0  # contrast factor in [1 - contrast, 1 + contrast]
    saturation: float = 0.0  # saturation factor in [1 - saturation, 1 + saturation]
    hue: float = 0.0  # max |hue rotation| as a fraction of a full turn (0.5 = 180 degrees)
    blur_probability: float = 0.0  # chance that an image is gaussian-blurred
    blur_sigma: tuple[float, float] = (0.5, 1.5)  # blur sigma range, pixels
    jpeg_probability: float = 0.0  # chance that an image is re-compressed as JPEG
    jpeg_quality: tuple[int, int] = (60, 95)  # JPEG quality range, inclusive

    def __post_init__(self):
        if self.fill_mode not in FILL_MODES:
            raise ValueError(f"fill_mode must be one of {FILL_MODES}, got {self.fill_mode!r}")
        if not 0.0 < self.zoom[0] <= self.zoom[1]:
            raise ValueError(f"zoom must be (low, high) with 0 < low <= high, got {self.zoom}")
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise ValueError(f"jpeg_quality must lie in [1, 100], got {self.jpeg_quality}")

    @classmethod
    def geometric(cls) -> "AugmentConfig":
        """Rotation, zoom, shear, translation and both flips: the 2020-era Keras recipe."""
        return cls(
            rotation=180.0,  # dermoscopic lesions have no canonical orientation
            zoom=(0.8, 1.25),  # symmetric in log-scale: +-25% magnification
            shear=10.0,
            translation=0.1,  # "grid location" in the paper
            horizontal_flip=True,
            vertical_flip=True,
        )

    @classmethod
    def paper(cls) -> "AugmentConfig":
        """The paper's recipe (section 2.3): rotation, zoom, shear, flips and camera-like
        distortions. The paper names the operations but gives no magnitudes; these are ours."""
        return dataclasses.replace(
            cls.geometric(),
            brightness=0.1,
            contrast=0.15,
            saturation=0.15,
            hue=0.02,  # about 7 degrees: skin hue carries diagnostic signal, keep it small
            blur_probability=0.2,  # out-of-focus phone shots
            jpeg_probability=0.3,  # phone-camera JPEG pipelines
        )

    @property
    def has_geometry(self) -> bool:
        return bool(
            self.rotation or self.shear or self.translation or self.zoom != (1.0, 1.0)
            or self.horizontal_flip or self.vertical_flip
        )

    @property
    def has_colour(self) -> bool:
        return bool(self.brightness or self.contrast or self.saturation or self.hue)

    @property
    def is_identity(self) -> bool:
        return not (self.has_geometry or self.has_colour or self.blur_probability
                    or self.jpeg_probability)
