"""The HAM10000 vocabularies: diagnosis classes, sexes, body sites and metadata columns.

Everything that names a HAM10000 category reads it from here, so the class order
(ISIC 2018 Task 3 order) and the clinical vocabularies are defined exactly once.
"""

# Diagnosis codes (`dx`) in ISIC 2018 Task 3 order; class index = position in this tuple.
CLASSES = ("mel", "nv", "bcc", "akiec", "bkl", "df", "vasc")

# Column names of ISIC-format prediction files, aligned with CLASSES.
ISIC_COLUMNS = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")

# Human-readable class names, for reports and plots.
CLASS_NAMES = {
    "mel": "melanoma",
    "nv": "melanocytic nevus",
    "bcc": "basal cell carcinoma",
    "akiec": "actinic keratosis / intraepithelial carcinoma",
    "bkl": "benign keratosis",
    "df": "dermatofibroma",
    "vasc": "vascular lesion",
}

# `sex` values of the release, `unknown` included (57 rows of the real metadata).
SEXES = ("male", "female", "unknown")

# `localization` values of the release (15, `unknown` included), most frequent first.
LOCALIZATIONS = (
    "back", "lower extremity", "trunk", "upper extremity", "abdomen", "face", "chest",
    "foot", "unknown", "neck", "scalp", "hand", "ear", "genital", "acral",
)

# `dx_type`: how the diagnosis was confirmed.
DX_TYPES = ("histo", "follow_up", "consensus", "confocal")

# `dx_type` of images made by dermnet's GAN (gan/): the diagnosis is the class code the image
# was generated with; nothing confirmed it. Accepted by the reader, never drawn by the phantom.
SYNTHETIC_DX_TYPE = "synthetic"

# Columns every metadata CSV must have; `dataset` (source collection) is optional.
REQUIRED_COLUMNS = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")
SOURCE_COLUMN = "dataset"  # the source collection (Dataverse release): rosendahl, vidir_...
OPTIONAL_COLUMNS = (SOURCE_COLUMN,)

# Ages in the release are multiples of 5 in [0, 85]; anything outside this range is an error.
AGE_RANGE = (0.0, 120.0)

METADATA_FILENAME = "HAM10000_metadata.csv"

# Image folders, in lookup order: Kaggle spelling, Dataverse spelling, flat layout.
IMAGE_FOLDERS = (
    "HAM10000_images_part_1", "HAM10000_images_part_2",
    "HAM10000_images_part1", "HAM10000_images_part2",
    "images",
)
