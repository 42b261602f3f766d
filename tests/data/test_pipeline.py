"""Tests of dermnet.data.pipeline: decoding, batch structure, order, determinism, caching,
class weights. Images are tiny (45x60) JPEG/PNG files written by OpenCV."""

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.utils.class_weight import compute_class_weight

from dermnet.data.augment_config import AugmentConfig
from dermnet.data.pipeline import (
    PipelineConfig,
    build_dataset,
    build_epoch_dataset,
    compute_class_weights,
    compute_sample_weights,
    decode_image,
    decode_jpeg,
    load_image,
    resize_image,
)

SIZE = (22, 30)  # (H, W): 45x60 sources decode at ratio 2 (23x30), then shrink by one row


def make_image(index, height=45, width=60):
    """A smooth BGR picture with a blob, distinct per index (noise JPEGs are unrealistic)."""
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([columns * 4, rows * 5, np.full_like(rows, 40.0 * (index % 6))], axis=-1)
    centre = (int(10 + 7 * index) % width, int(8 + 5 * index) % height)
    cv2.circle(image, centre, 9, (30.0, 200.0, 90.0), -1)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_images(folder, count, suffix=".jpg"):
    paths = []
    for index in range(count):
        path = folder / f"image_{index:02d}{suffix}"
        cv2.imwrite(str(path), make_image(index), [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(str(path))
    return paths


def read_rgb(path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("images"), 10)


def collect(dataset):
    """All batches of one epoch as numpy: (list of input dicts, list of labels)."""
    batches = [(
        {key: value.numpy() for key, value in inputs.items()}, labels.numpy()
    ) for inputs, labels in dataset]
    return [inputs for inputs, _ in batches], [labels for _, labels in batches]


def test_decode_at_native_size_equals_opencv_exactly(images):
    decoded = load_image(images[0], (45, 60)).numpy()
    np.testing.assert_array_equal(decoded, read_rgb(images[0]))


def test_decode_picks_the_smallest_dct_scale_that_covers_the_target(images):
    contents = tf.io.read_file(images[0])
    assert decode_jpeg(contents, (22, 30)).shape == (23, 30, 3)  # ratio 2
    assert decode_jpeg(contents, (10, 15)).shape == (12, 15, 3)  # ratio 4
    assert decode_jpeg(contents, (23, 31)).shape == (45, 60, 3)  # 1/2 too narrow: ratio 1
    assert decode_jpeg(contents, (90, 120)).shape == (45, 60, 3)  # enlarged later: ratio 1


@pytest.mark.parametrize("size, tolerance", [
    (SIZE, 2.0), ((30, 40), 2.0), ((90, 120), 2.0),
    # At 1/4 scale libjpeg samples a coarser grid than a full decode + area average; on these
    # tiny, sharp-edged images that costs more than on real ones (600x450 phantom JPEGs: mean
    # 0.3 levels at 224x300, ratio 2; 0.7 at ratio 4; 1.1 at ratio 8).
    ((11, 15), 4.0),
])
def test_decode_resizes_exactly_and_close_to_opencv(images, size, tolerance):
    # Tolerance: mean absolute difference in grey levels against full-size decode +
    # cv2.resize (INTER_AREA when shrinking, INTER_LINEAR when enlarging).
    decoded = load_image(images[1], size).numpy()
    height, width = size
    method = cv2.INTER_AREA if height <= 45 else cv2.INTER_LINEAR
    reference = cv2.resize(read_rgb(images[1]), (width, height), interpolation=method)
    assert decoded.shape == (*size, 3) and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - reference).mean() < tolerance


def test_png_is_recognised_by_content_not_name(tmp_path):
    image = make_image(3)
    path = tmp_path / "really_a_png.jpg"
    assert cv2.imencode(".png", image)[1].tofile(str(path)) is None
    decoded = decode_image(path.read_bytes(), (45, 60)).numpy()
    np.testing.assert_array_equal(decoded, cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    assert load_image(str(path), SIZE).shape == (*SIZE, 3)


def test_batches_without_clinical(images):
    config = PipelineConfig(image_size=SIZE, batch_size=4)
    dataset = build_dataset(images, np.arange(10) % 7, config=config, training=True)
    inputs, labels = collect(dataset)
    assert [len(batch) for batch in labels] == [4, 4, 2]
    assert set(inputs[0]) == {"image"}
    assert inputs[0]["image"].shape == (4, *SIZE, 3) and inputs[0]["image"].dtype == np.uint8
    assert labels[0].dtype == np.int32


def test_batches_with_clinical_and_one_hot(images):
    clinical = np.arange(30, dtype=np.float64).reshape(10, 3)
    config = PipelineConfig(image_size=SIZE, batch_size=4, one_hot=True, drop_remainder=True)
    dataset = build_dataset(images, np.arange(10) % 7, clinical, config=config, training=True)
    inputs, labels = collect(dataset)
    assert len(labels) == 2 and set(inputs[0]) == {"image", "clinical"}
    assert inputs[0]["clinical"].shape == (4, 3) and inputs[0]["clinical"].dtype == np.float32
    assert labels[0].shape == (4, 7) and labels[0].dtype == np.float32
    # Each clinical row still travels with its own label after the shuffle.
    for rows, one_hot in zip((batch["clinical"] for batch in inputs), labels):
        np.testing.assert_array_equal(np.argmax(one_hot, 1), (rows[:, 0] // 3).astype(int) % 7)


def test_evaluation_keeps_row_order_and_never_augments(images):
    config = PipelineConfig(image_size=SIZE, batch_size=3, augment=AugmentConfig.paper())
    labels = np.array([6, 5, 4, 3, 2, 1, 0, 1, 2, 3])
    inputs, batches = collect(build_dataset(images, labels, config=config, training=False))
    np.testing.assert_array_equal(np.concatenate(batches), labels)
    expected = np.stack([load_image(path, SIZE).numpy() for path in images])
    np.testing.assert_array_equal(np.concatenate([batch["image"] for batch in inputs]), expected)


@pytest.mark.slow
def test_deterministic_training_pipeline_repeats_exactly(images):
    config = PipelineConfig(image_size=SIZE, batch_size=4, deterministic=True, seed=7,
                            augment=AugmentConfig.geometric())

    def two_epochs():
        dataset = build_dataset(images, np.arange(10) % 7, config=config, training=True)
        return [collect(dataset) for _ in range(2)]

    first, second = two_epochs(), two_epochs()
    for (inputs_a, labels_a), (inputs_b, labels_b) in zip(first, second):
        for batch_a, batch_b in zip(inputs_a, inputs_b):
            np.testing.assert_array_equal(batch_a["image"], batch_b["image"])
        np.testing.assert_array_equal(np.concatenate(labels_a), np.concatenate(labels_b))
    # The rows are shuffled, and a new epoch draws a new shuffle and new augmentations.
    assert not np.array_equal(np.concatenate(first[0][1]), np.arange(10) % 7)
    assert not np.array_equal(first[0][0][0]["image"], first[1][0][0]["image"])


def epoch_config():
    return PipelineConfig(image_size=SIZE, batch_size=4, augment=AugmentConfig.geometric())


def test_epoch_dataset_resumed_at_epoch_two_repeats_epoch_two_exactly(images):
    def epochs(first_epoch):
        dataset = build_epoch_dataset(images, np.arange(10) % 7, config=epoch_config(),
                                      first_epoch=first_epoch, last_epoch=3)
        batches = collect(dataset)
        return [(batches[0][start:start + 3], batches[1][start:start + 3])
                for start in range(0, len(batches[1]), 3)]  # ceil(10 / 4) = 3 batches each

    uninterrupted, resumed = epochs(0), epochs(2)
    assert len(uninterrupted) == 3 and len(resumed) == 1
    (inputs, labels), (resumed_inputs, resumed_labels) = uninterrupted[2], resumed[0]
    assert [len(batch) for batch in labels] == [4, 4, 2]
    for batch, resumed_batch in zip(inputs, resumed_inputs):
        np.testing.assert_array_equal(batch["image"], resumed_batch["image"])
    np.testing.assert_array_equal(np.concatenate(labels), np.concatenate(resumed_labels))
    # Each epoch has its own shuffle.
    assert not np.array_equal(np.concatenate(uninterrupted[1][1]), np.concatenate(labels))


def test_epoch_dataset_decodes_once_and_reads_the_cache_afterwards(tmp_path):
    paths = write_images(tmp_path, 10)
    dataset = build_epoch_dataset(paths, np.zeros(10, int), config=epoch_config(),
                                  first_epoch=0, last_epoch=3)
    iterator = iter(dataset)
    [next(iterator) for _ in range(3)]  # epoch 0 fills the cache
    for path in paths:  # the sources go black: later epochs must come from the cache
        cv2.imwrite(path, np.zeros((45, 60, 3), np.uint8))
    later = list(iterator)
    assert len(later) == 6
    assert all(inputs["image"].numpy().max() > 0 for inputs, _ in later)


def test_file_cache_is_written_then_read_instead_of_the_images(tmp_path):
    paths = write_images(tmp_path, 4)
    config = PipelineConfig(image_size=SIZE, batch_size=4, cache=str(tmp_path / "cache/train"))
    dataset = build_dataset(paths, np.zeros(4, int), config=config, training=False)
    first, _ = collect(dataset)
    assert list((tmp_path / "cache").glob("train-22x30-*.index"))
    for path in paths:  # the sources go black: only the cache still knows them
        cv2.imwrite(path, np.zeros((45, 60, 3), np.uint8))
    again, _ = collect(dataset)
    rebuilt, _ = collect(build_dataset(paths, np.zeros(4, int), config=config, training=False))
    np.testing.assert_array_equal(again[0]["image"], first[0]["image"])
    np.testing.assert_array_equal(rebuilt[0]["image"], first[0]["image"])
    assert first[0]["image"].max() > 0


def test_inputs_are_checked(images):
    config = PipelineConfig(image_size=SIZE)
    with pytest.raises(ValueError, match="labels must be 10 integers"):
        build_dataset(images, np.zeros(9, int), config=config, training=True)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 7\)"):
        build_dataset(images, np.full(10, 7), config=config, training=True)
    with pytest.raises(ValueError, match="clinical must be"):
        build_dataset(images, np.zeros(10, int), np.zeros((9, 2)), config=config, training=True)


def test_class_weights_by_hand_and_against_sklearn():
    labels = np.array([0, 0, 0, 1, 3, 3])  # class 2 absent
    weights = compute_class_weights(labels, num_classes=4)
    # n = 6 samples over k = 3 present classes: 6 / (3 * count).
    assert weights == pytest.approx({0: 2 / 3, 1: 2.0, 2: 0.0, 3: 1.0})
    reference = compute_class_weight("balanced", classes=np.array([0, 1, 3]), y=labels)
    np.testing.assert_allclose([weights[0], weights[1], weights[3]], reference)
    np.testing.assert_allclose(compute_sample_weights(labels, weights),
                               [2 / 3, 2 / 3, 2 / 3, 2.0, 1.0, 1.0], rtol=1e-6)


def test_keras_trains_on_the_batches_with_class_weights(images):
    # The batch structure feeds a functional model by input name; class_weight takes the dict
    # with an absent class (weight 0.0) in it.
    image = keras.Input((*SIZE, 3), name="image", dtype="uint8")
    clinical = keras.Input((3,), name="clinical")
    pooled = keras.layers.GlobalAveragePooling2D()(keras.ops.cast(image, "float32") / 255.0)
    outputs = keras.layers.Dense(7, activation="softmax")(
        keras.layers.Concatenate()([pooled, clinical]))
    model = keras.Model({"image": image, "clinical": clinical}, outputs)
    model.compile("adam", "sparse_categorical_crossentropy")
    labels = np.arange(10) % 6  # class 6 absent
    config = PipelineConfig(image_size=SIZE, batch_size=5, augment=AugmentConfig.geometric())
    dataset = build_dataset(images, labels, np.ones((10, 3)), config=config, training=True)
    history = model.fit(dataset, epochs=1, verbose=0, shuffle=False,  # the dataset shuffles
                        class_weight=compute_class_weights(labels))
    assert np.isfinite(history.history["loss"][0])


def encode_png(image: np.ndarray) -> bytes:
    return tf.io.encode_png(image).numpy()


def test_crop_mode_takes_the_centred_window_of_the_input_aspect():
    """A 60x60 (HxW) image for a 30x40 input: the 4:3 window is rows 7..51, all columns
    (height round(60 * 3 / 4) = 45, top (60 - 45) // 2 = 7), then resized."""
    image = np.random.default_rng(0).integers(0, 256, (60, 60, 3)).astype(np.uint8)
    cropped = decode_image(encode_png(image), (30, 40), "crop").numpy()
    expected = resize_image(tf.constant(image[7:52]), (30, 40)).numpy()
    np.testing.assert_array_equal(cropped, expected)
    tall = np.random.default_rng(1).integers(0, 256, (90, 40, 3)).astype(np.uint8)
    # 40 wide: the window is round(40 * 3 / 4) = 30 rows, from (90 - 30) // 2 = 30.
    np.testing.assert_array_equal(decode_image(encode_png(tall), (30, 40), "crop").numpy(),
                                  tall[30:60])


def test_crop_mode_leaves_an_image_of_the_input_aspect_alone():
    image = np.random.default_rng(2).integers(0, 256, (60, 80, 3)).astype(np.uint8)
    np.testing.assert_array_equal(decode_image(encode_png(image), (30, 40), "crop").numpy(),
                                  decode_image(encode_png(image), (30, 40)).numpy())


def test_unknown_resize_mode_is_refused():
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="resize must be 'stretch' or 'crop'"):
        decode_image(encode_png(image), (4, 4), "pad")
