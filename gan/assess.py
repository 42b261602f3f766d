"""How good are a GAN run's lesions? The first study's test, a feature distance, and grids.

    python -m gan assess RUN_DIR --classifier CLASSIFIER_RUN --real-data DIR [--out DIR]

1. Class codes (study 1, section 3.4). ``--per-class`` images of every class code from the
   run's average generator go to a trained dermnet classifier; its accuracy against the
   codes, with a Clopper-Pearson interval and a one-sided binomial test against chance
   (1 / classes), per-class recall and the confusion matrix (rows: code, columns:
   prediction). The same is measured on ``--per-class`` real images per class from
   ``--real-data``, sent through the same path (squared by the run's rule, shrunk to the
   GAN's resolution, then resized to the classifier's input like any file): no generator
   can do better than real images at its resolution, so that is the ceiling to read the
   synthetic figure against.
2. Kernel distance (KID, Binkowski et al. 2018) between real and synthetic images, from the
   classifier's pooled features (Inception weights cannot be downloaded here, and a
   dermatology classifier's features are the more relevant ones anyway), with the synthetic
   images drawn in the real sample's class proportions (``match_classes``): the unbiased
   MMD^2 with the kernel k(x, y) = (x.y / d + 1)^3. Both sets are split into ``--blocks``
   disjoint blocks; the figure is the mean over blocks and its standard error the blocks'
   standard deviation / sqrt(blocks) (disjoint blocks are independent, unlike the
   overlapping subsets of the usual KID code, whose spread understates the error). The
   real-vs-real distance between two disjoint halves of the real images is the floor.
3. Grids (PNG): ``grids/<dx>.png`` per class, real images on the left, synthetic on the
   right, and ``grids/overview.png`` with one row per class code.

Writes ``assessment.json`` and ``report.md`` to ``--out`` (default RUN_DIR/assessment).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from dermnet.data.vocabulary import CLASSES
from gan.generate import GanRun, GenerationError, draw_synthetic_codes, plan_classes, render

GRID_COLUMNS = 8  # samples per side in each class grid


class AssessmentError(ValueError):
    """An input the assessment cannot use; the message names it."""


# --- the kernel distance ----------------------------------------------------------------------


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """KID's kernel (x.y / d + 1)^3 between the rows of x [m, d] and y [n, d] -> [m, n]."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased estimate of MMD^2 between samples x [m, d] and y [n, d], m, n >= 2:
    the diagonals k(x_i, x_i) are left out of the within-sample means."""
    m, n = len(x), len(y)
    if min(m, n) < 2:
        raise ValueError("the unbiased MMD needs at least 2 samples on each side")
    k_xx, k_yy = polynomial_kernel(x, x), polynomial_kernel(y, y)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * polynomial_kernel(x, y).mean())


def kernel_distance(real: np.ndarray, fake: np.ndarray, blocks: int = 10,
                    seed: int = 0) -> dict:
    """KID over ``blocks`` disjoint blocks of each (shuffled) set: mean and standard error."""
    features = [np.asarray(real, np.float64), np.asarray(fake, np.float64)]
    size = min(len(part) for part in features) // blocks
    if blocks < 2 or size < 2:
        raise AssessmentError(f"the kernel distance needs at least 2 blocks of 2 images; "
                              f"{len(real)} real and {len(fake)} synthetic images make "
                              f"{blocks} blocks of {size}")
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(len(part)) for part in features]
    values = np.array([mmd2_unbiased(features[0][orders[0][b * size:(b + 1) * size]],
                                     features[1][orders[1][b * size:(b + 1) * size]])
                       for b in range(blocks)])
    return {"kid": float(values.mean()),
            "standard_error": float(values.std(ddof=1) / np.sqrt(blocks)),
            "blocks": blocks, "block_size": size}


def match_classes(fake_classes: np.ndarray, real_classes: np.ndarray) -> np.ndarray:
    """Indices of synthetic images with the real sample's class counts (the first of each
    class): the kernel distance then compares images, not class mixes."""
    chosen = []
    for label, count in zip(*np.unique(real_classes, return_counts=True)):
        available = np.flatnonzero(fake_classes == label)
        if len(available) < count:
            raise AssessmentError(f"{count} real {CLASSES[label]} images but only "
                                  f"{len(available)} synthetic ones to match them")
        chosen.extend(available[:count].tolist())
    return np.sort(np.asarray(chosen, np.int64))


# --- class-code accuracy ----------------------------------------------------------------------


def score_codes(codes: np.ndarray, probabilities: np.ndarray, num_classes: int) -> dict:
    """Accuracy of argmax(probabilities) against ``codes``: interval, test against chance,
    per-class recall, confusion matrix [code, prediction]."""
    from dermnet.evaluation.stats import clopper_pearson

    predicted = probabilities.argmax(axis=1)
    correct = int((predicted == codes).sum())
    total = len(codes)
    low, high = clopper_pearson(correct, total)
    present = np.unique(codes)
    chance = 1.0 / len(present)
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (codes, predicted), 1)
    recall = {CLASSES[k]: float(matrix[k, k] / matrix[k].sum()) for k in present}
    test = scipy_stats.binomtest(correct, total, chance, alternative="greater")
    return {"images": total, "correct": correct, "accuracy": correct / total,
            "accuracy_ci95": [low, high], "chance": chance, "p_above_chance": test.pvalue,
            "balanced_accuracy": float(np.mean(list(recall.values()))),
            "recall": recall, "confusion": matrix.tolist()}


# --- images and features ----------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ImageSet:
    pixels: np.ndarray        # uint8 [N, R, R, 3] at the GAN's resolution
    classes: np.ndarray       # int [N]: the class code, or the real label
    clinical: pd.DataFrame    # age, sex, localization per image


def synthesise(run: GanRun, per_class: int, seed: int, batch_size: int = 64) -> ImageSet:
    plan = plan_classes(per_class * len(CLASSES), list(range(len(CLASSES))))
    batch = draw_synthetic_codes(run, plan, seed)
    pixels = np.concatenate([render(run, batch.codes, start, min(start + batch_size, len(plan)))
                             for start in range(0, len(plan), batch_size)])
    return ImageSet(pixels, plan, batch.clinical)


def load_real_images(data_dir: str | Path, run: GanRun, per_class: int, seed: int) -> ImageSet:
    """Up to ``per_class`` random images of each class, squared and shrunk as in training."""
    from dermnet.data.ham10000 import load_ham10000
    from gan.data import decode_images

    frame = load_ham10000(data_dir, check_images="header").frame
    rng = np.random.default_rng([seed, 0x7EA1])
    chosen = []
    for label in range(len(CLASSES)):
        rows = np.flatnonzero(frame["label"].to_numpy() == label)
        chosen.extend(rng.choice(rows, min(per_class, len(rows)), replace=False).tolist())
    if not chosen:
        raise AssessmentError(f"{data_dir}: no images")
    rows = frame.iloc[sorted(chosen)].reset_index(drop=True)
    pixels = decode_images(rows["path"].tolist(), run.resolution, run.config.data.square)
    return ImageSet(pixels, rows["label"].to_numpy(np.int64),
                    rows[["age", "sex", "localization"]])


class ClassifierProbe:
    """A dermnet classifier run: probabilities and pooled features for square uint8 images."""

    def __init__(self, classifier_run: str | Path, batch_size: int = 64):
        import keras

        from dermnet.inference.predict import load_predictor

        self.predictor = load_predictor(classifier_run)
        model = self.predictor.model
        try:
            pooled = model.get_layer("pooling").output
        except ValueError:
            raise AssessmentError(f"{classifier_run}: the classifier has no 'pooling' layer "
                                  "to take features from") from None
        self.features_model = keras.Model(model.get_layer("image").output, pooled)
        self.batch_size = batch_size

    def resize(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [N, R, R, 3] -> the classifier's input size, as the pipeline resizes files."""
        import tensorflow as tf

        from dermnet.data.pipeline import resize_image

        size = self.predictor.image_size
        dataset = tf.data.Dataset.from_tensor_slices(pixels).map(
            lambda image: resize_image(image, size)).batch(256)
        return np.concatenate([batch.numpy() for batch in dataset])

    def run(self, images: ImageSet) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities [N, classes], pooled features [N, F])."""
        pixels = self.resize(images.pixels)
        clinical = images.clinical if self.predictor.needs_clinical else None
        inputs = self.predictor.make_inputs(pixels, clinical)
        probabilities = self.predictor.predict_inputs(inputs)
        features = self.features_model.predict(pixels, batch_size=self.batch_size, verbose=0)
        return probabilities, np.asarray(features, np.float64)


# --- the assessment ---------------------------------------------------------------------------


def assess_run(run: GanRun, classifier_run: str | Path, real_data: str | Path,
               out_dir: str | Path, per_class: int = 100, blocks: int = 10, seed: int = 0,
               log=print) -> dict:
    """Run the three parts (module docstring); write the report; return the figures."""
    if per_class < GRID_COLUMNS or blocks < 2:
        raise AssessmentError("--per-class must be at least 8 and --blocks at least 2")
    probe = ClassifierProbe(classifier_run)
    log(f"generating {per_class} images per class code at {run.resolution}x{run.resolution}")
    fake = synthesise(run, per_class, seed)
    real = load_real_images(real_data, run, per_class, seed)
    log(f"classifying {len(fake.pixels)} synthetic and {len(real.pixels)} real images")
    fake_probabilities, fake_features = probe.run(fake)
    real_probabilities, real_features = probe.run(real)
    half = len(real_features) // 2
    order = np.random.default_rng([seed, 0x4A1F]).permutation(len(real_features))
    result = {
        "run": str(run.path.resolve()), "classifier": str(Path(classifier_run).resolve()),
        "real_data": str(Path(real_data).resolve()), "resolution": run.resolution,
        "classifier_input": list(probe.predictor.image_size), "seed": seed,
        "synthetic": score_codes(fake.classes, fake_probabilities, len(CLASSES)),
        "real": score_codes(real.classes, real_probabilities, len(CLASSES)),
        "kid": kernel_distance(real_features, fake_features[match_classes(fake.classes,
                                                                          real.classes)],
                               blocks, seed),
        "kid_real_halves": kernel_distance(real_features[order[:half]],
                                           real_features[order[half:]],
                                           max(2, blocks // 2), seed),
        "feature_size": int(real_features.shape[1]),
    }
    _write_report(Path(out_dir), result, fake, real)
    return result


def _write_report(out_dir: Path, result: dict, fake: ImageSet, real: ImageSet) -> None:
    from dermnet.evaluation.stats import to_json_ready
    from dermnet.runs.atomic import write_atomic

    (out_dir / "grids").mkdir(parents=True, exist_ok=True)
    for name, picture in make_grids(fake, real).items():
        write_atomic(out_dir / "grids" / f"{name}.png",
                     lambda target, picture=picture: _save_png(target, picture))
    payload = json.dumps(to_json_ready(result), indent=2) + "\n"
    write_atomic(out_dir / "assessment.json", lambda target: Path(target).write_text(payload))
    report = format_report(result)
    write_atomic(out_dir / "report.md", lambda target: Path(target).write_text(report))


def _save_png(path, picture: np.ndarray) -> None:
    import cv2

    ok, data = cv2.imencode(".png", picture[:, :, ::-1])
    if not ok:
        raise OSError(f"OpenCV cannot encode {path}")
    Path(path).write_bytes(data.tobytes())


def make_grids(fake: ImageSet, real: ImageSet) -> dict[str, np.ndarray]:
    """Per class: real samples (left) and synthetic ones (right), GRID_COLUMNS x 4 each;
    ``overview``: one row of synthetic samples per class code."""
    from gan.monitoring import render_class_grid

    def pick(images: ImageSet, label: int, count: int) -> np.ndarray:
        chosen = images.pixels[images.classes == label][:count]
        blank = np.zeros((count - len(chosen), *images.pixels.shape[1:]), np.uint8)
        return np.concatenate([chosen, blank]).astype(np.float32) / 127.5 - 1.0

    grids = {}
    rows = 4
    for label, name in enumerate(CLASSES):
        halves = [render_class_grid(pick(images, label, rows * GRID_COLUMNS // 2), rows)
                  for images in (real, fake)]
        gap = np.full((halves[0].shape[0], 8, 3), 255, np.uint8)
        grids[name] = np.concatenate([halves[0], gap, halves[1]], axis=1)
    overview = np.concatenate([pick(fake, label, GRID_COLUMNS) for label in range(len(CLASSES))])
    grids["overview"] = render_class_grid(overview, len(CLASSES))
    return grids


def format_report(result: dict) -> str:
    """The assessment as a short Markdown report."""
    lines = [f"# GAN assessment: {result['run']}", "",
             f"Classifier `{result['classifier']}` (input {result['classifier_input'][0]}x"
             f"{result['classifier_input'][1]}), GAN resolution {result['resolution']}x"
             f"{result['resolution']}, seed {result['seed']}.", "",
             "| images | n | accuracy (95% CI) | balanced accuracy | chance | p (> chance) |",
             "|---|---|---|---|---|---|"]
    for name in ("synthetic", "real"):
        score = result[name]
        low, high = score["accuracy_ci95"]
        lines.append(f"| {name} | {score['images']} | {score['accuracy']:.3f} ({low:.3f}-"
                     f"{high:.3f}) | {score['balanced_accuracy']:.3f} | {score['chance']:.3f} "
                     f"| {score['p_above_chance']:.2g} |")
    lines += ["", "Recall per class (synthetic: against the class code; real: against the "
              "label):", "", "| class | " + " | ".join(CLASSES) + " |",
              "|---|" + "---|" * len(CLASSES)]
    for name in ("synthetic", "real"):
        recall = result[name]["recall"]
        lines.append(f"| {name} | " + " | ".join(f"{recall.get(code, float('nan')):.2f}"
                                                for code in CLASSES) + " |")
    kid, floor = result["kid"], result["kid_real_halves"]
    lines += ["", f"Kernel distance on the classifier's {result['feature_size']} pooled "
              f"features: real vs synthetic {kid['kid']:.4f} +- {kid['standard_error']:.4f} "
              f"(standard error, {kid['blocks']} blocks of {kid['block_size']}); real vs real "
              f"(two halves) {floor['kid']:.4f} +- {floor['standard_error']:.4f}.", "",
              "Grids: `grids/<class>.png` (real left, synthetic right), `grids/overview.png`.",
              ""]
    return "\n".join(lines)


def check_assess_inputs(run_dir: Path, classifier: Path, real_data: Path | None) -> None:
    """Fail early, before any model loads, on a missing run, classifier or data folder."""
    if not (Path(run_dir) / "finished.json").is_file():
        raise GenerationError(f"{run_dir}: not a finished GAN run, no finished.json")
    for path, what in ((classifier, "--classifier"), (real_data, "--real-data")):
        if path is not None and not Path(path).exists():
            raise AssessmentError(f"{what} {path}: no such file or folder")
