"""Grad-CAM (Selvaraju et al. 2017): which part of an image a class score comes from.

    heatmap = ReLU(sum_k alpha_k A_k),   alpha_k = spatial mean of d score / d A_k

A is the last 4-D (convolutional) feature map of the backbone nested in the classifier; the
score is the class's pre-softmax logit, as in the paper (a softmax probability near 0 or 1
has a vanishing gradient, and the heatmap would vanish with it). The heatmap is scaled to
[0, 1], upsampled to the original image and drawn over it in a colormap at 40% opacity.

TensorFlow-specific: the gradients come from ``tf.GradientTape``, because Keras 3 has no
backend-neutral way to differentiate with respect to a model's intermediate tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import keras
import numpy as np
import tensorflow as tf

from dermnet.inference.predict import decode_image_file
from dermnet.models.classifier import get_backbone_model
from dermnet.runs.atomic import write_atomic

OPACITY = 0.4  # share of the colormap in the overlay; the image keeps the rest


@dataclass(frozen=True)
class GradCam:
    """A classifier cut in three at its backbone, so the feature map can be differentiated.
    Build with ``make_gradcam``."""

    # Each part is None where it would be empty (Keras cannot build a model whose output is
    # its input): no preprocessing before the backbone, no layer between it and the output.
    pixels: keras.Model | None  # image -> the backbone's input (preprocessed pixels)
    backbone: keras.Model       # backbone input -> [feature map A, backbone output]
    head: keras.Model | None    # [backbone output, other inputs] -> input of the output layer
    output: keras.layers.Layer  # the classifier's output layer
    extra_inputs: tuple[str, ...]  # model inputs the head takes besides the image ("clinical")

    def compute(self, inputs: dict, class_indices) -> np.ndarray:
        """Heatmaps float32 [N, h, w] in [0, 1] at the feature map's resolution, for model
        inputs {"image": [N, H, W, 3], ...} and one class index per image. A heatmap is all
        zero where nothing in the image speaks for the class."""
        classes = tf.constant(np.asarray(class_indices, np.int32).reshape(-1, 1))
        with tf.GradientTape() as tape:
            pixels = _apply(self.pixels, [inputs["image"]])
            feature_map, features = self.backbone(pixels, training=False)
            hidden = _apply(self.head, [features, *(inputs[name] for name in self.extra_inputs)])
            scores = self._scores(hidden)  # [N, K]
            chosen = tf.gather(scores, classes, batch_dims=1)  # [N, 1]
        # Images are independent in inference mode, so the gradient of the sum holds each
        # image's own gradient.
        gradients = tape.gradient(chosen, feature_map)  # [N, h, w, C]
        weights = tf.reduce_mean(gradients, axis=(1, 2))  # alpha: [N, C]
        heatmaps = tf.nn.relu(tf.einsum("nhwc,nc->nhw", feature_map, weights)).numpy()
        peaks = heatmaps.max(axis=(1, 2), keepdims=True)
        return np.divide(heatmaps, peaks, out=np.zeros_like(heatmaps), where=peaks > 0)

    def _scores(self, hidden):
        """Class logits: a Dense output layer applied without its activation (softmax)."""
        layer = self.output
        if not isinstance(layer, keras.layers.Dense):
            return layer(hidden)
        logits = tf.matmul(tf.cast(hidden, layer.kernel.dtype), layer.kernel)
        return logits + layer.bias if layer.use_bias else logits


def make_gradcam(model: keras.Model) -> GradCam:
    """Grad-CAM for a classifier built like ``build_classifier``: one nested backbone whose
    output reaches the output layer (alongside the other inputs, such as "clinical")."""
    backbone = get_backbone_model(model)
    backbone_input, backbone_output = _outer_tensors(backbone)
    image = model.get_layer("image").output
    map_layer = find_feature_map_layer(backbone)
    map_tensor = _outer_tensors(map_layer)[1]
    is_last = map_tensor is backbone.outputs[0]
    extra = tuple(tensor.name for tensor in model.inputs if tensor.name != "image")
    output = model.layers[-1]
    return GradCam(
        pixels=_make_part([image], backbone_input, "gradcam_pixels"),
        backbone=keras.Model(backbone.inputs, [map_tensor, map_tensor if is_last
                                               else backbone.outputs[0]],
                             name="gradcam_backbone"),
        head=_make_part([backbone_output, *(model.get_layer(name).output for name in extra)],
                        output.input, "gradcam_head"),
        output=output,
        extra_inputs=extra,
    )


def _make_part(inputs: list, output, name: str) -> keras.Model | None:
    return None if output is inputs[0] else keras.Model(inputs, output, name=name)


def _apply(part: keras.Model | None, inputs: list):
    tensors = [tf.convert_to_tensor(value) for value in inputs]
    return tensors[0] if part is None else part(tensors, training=False)


def find_feature_map_layer(backbone: keras.Model) -> keras.layers.Layer:
    """The backbone's last layer with a 4-D output [batch, h, w, channels]."""
    for layer in reversed(backbone.layers):
        if not isinstance(layer, keras.layers.InputLayer) and \
                len(_outer_tensors(layer)[1].shape) == 4:
            return layer
    raise ValueError(f"{backbone.name}: no layer with a 4-D (convolutional) output")


def _outer_tensors(layer: keras.layers.Layer):
    """(input, output) of ``layer`` in the graph that calls it. ``layer.output`` of a nested
    model is its own inner output, not the tensor its caller sees, so read the call node."""
    nodes = layer._inbound_nodes
    if len(nodes) != 1:
        raise ValueError(f"Grad-CAM needs {layer.name} called exactly once, not {len(nodes)}"
                         " times")
    return nodes[0].input_tensors[0], nodes[0].output_tensors[0]


# --- drawing -------------------------------------------------------------------------------


def upsample_heatmap(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A heatmap [h, w] bilinearly resized to ``size`` (H, W), float32 in [0, 1]. The model
    saw the whole image squeezed to its input size, so the map stretches back over all of it."""
    height, width = size
    resized = cv2.resize(np.asarray(heatmap, np.float32), (width, height),
                         interpolation=cv2.INTER_LINEAR)
    return np.clip(resized, 0.0, 1.0)


def make_overlay(image: np.ndarray, heatmap: np.ndarray, opacity: float = OPACITY) -> np.ndarray:
    """RGB uint8 [H, W, 3]: ``image`` with the heatmap in the JET colormap over it."""
    resized = upsample_heatmap(heatmap, image.shape[:2])
    colours = cv2.applyColorMap(np.round(resized * 255).astype(np.uint8), cv2.COLORMAP_JET)
    colours = cv2.cvtColor(colours, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(colours, opacity, np.ascontiguousarray(image), 1.0 - opacity, 0.0)


def save_gradcam(gradcam: GradCam, image_path: Path, inputs: dict, class_index: int,
                 target: Path, caption: str = "") -> bool:
    """Write the Grad-CAM figure of one image (``inputs`` hold just that image) as a PNG:
    the overlay at the image's size (at most MAX_SIDE pixels on its long side), ``caption``
    above it and a colour bar beside it. Returns whether the map was empty (nothing in the
    image raises the class's score), which the figure then states instead of a flat tint."""
    heatmap = gradcam.compute(inputs, [class_index])[0]
    figure = render_gradcam_figure(decode_image_file(Path(image_path)), heatmap, caption)
    save_png(target, figure)
    return not heatmap.any()


MAX_SIDE = 640      # long side of the overlay in the figure: a phone photo stays a small file
CAPTION_HEIGHT = 26
BAR_WIDTH, BAR_GAP, LABEL_WIDTH = 14, 8, 46
MIN_FIGURE_WIDTH = 420  # room for the caption under a small image
WHITE, BLACK, RED = (255, 255, 255), (0, 0, 0), (190, 0, 0)


def render_gradcam_figure(image: np.ndarray, heatmap: np.ndarray, caption: str = ""
                          ) -> np.ndarray:
    """RGB uint8 figure: caption strip, the overlay (top-left at (CAPTION_HEIGHT, 0)) and a
    JET colour bar from "low" (0) to "high" (1, the map's peak). An all-zero heatmap is
    drawn as the plain image with the caption saying the map is empty."""
    image = fit_within(np.ascontiguousarray(image), MAX_SIDE)
    empty = not np.asarray(heatmap).any()
    panel = image if empty else make_overlay(image, heatmap)
    height, width = panel.shape[:2]
    bar_left = width + BAR_GAP
    canvas = np.full((CAPTION_HEIGHT + height,
                      max(bar_left + BAR_WIDTH + LABEL_WIDTH, MIN_FIGURE_WIDTH), 3),
                     255, np.uint8)
    canvas[CAPTION_HEIGHT:, :width] = panel
    ramp = np.linspace(255, 0, height).round().astype(np.uint8)[:, None]  # high at the top
    bar = cv2.cvtColor(cv2.applyColorMap(np.repeat(ramp, BAR_WIDTH, axis=1),
                                         cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    canvas[CAPTION_HEIGHT:, bar_left:bar_left + BAR_WIDTH] = bar
    label_left = bar_left + BAR_WIDTH + 4
    _text(canvas, "high", (label_left, CAPTION_HEIGHT + 12), BLACK)
    _text(canvas, "low", (label_left, CAPTION_HEIGHT + height - 4), BLACK)
    text = caption + ("; EMPTY map: no region raises this class's score" if empty else "")
    _text(canvas, text, (4, CAPTION_HEIGHT - 9), RED if empty else BLACK)
    return canvas


def fit_within(image: np.ndarray, side: int) -> np.ndarray:
    """``image`` shrunk (area interpolation) so that its long side is at most ``side``."""
    height, width = image.shape[:2]
    scale = side / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _text(canvas: np.ndarray, text: str, origin: tuple[int, int], colour) -> None:
    cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.42, colour, 1, cv2.LINE_AA)


def save_png(path: Path, image: np.ndarray) -> None:
    """Write RGB uint8 [H, W, 3] as a PNG atomically: a temporary file renamed into place,
    so a reader never sees half an image."""
    def write(partial: Path) -> None:
        encoded, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                                     [cv2.IMWRITE_PNG_COMPRESSION, 9])
        if not encoded:
            raise OSError(f"{path}: OpenCV cannot encode the image")
        Path(partial).write_bytes(data.tobytes())  # a failed write raises, with its errno

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, write)
