"""What DeepStream's Gst-nvinfer feeds a classifier, emulated with numpy: its scaling of the whole frame.

nvinfer converts and scales the frame (or object crop) to the network's width and height, then computes
``net-scale-factor * (x - offsets[c])`` on 0-255 pixels (DeepStream plugin guide, Gst-nvinfer). It does not
centre-crop. Two geometries are configurable: the whole frame stretched (the default), or, with
``maintain-aspect-ratio=1`` and ``symmetric-padding=1``, scaled to fit with one scale and padded with black on both
sides. ``scaling-filter`` picks NvBufSurfTransform's interpolation (0 nearest, 1 bilinear).

The emulation samples as a GPU texture unit does: each output pixel centre maps back to the source (half-pixel
centres), nearest takes the pixel there, bilinear the 4 around it; no antialiasing on downscaling (VIC and CUDA
scalers differ in rounding, which this cannot know). The bundle runs every model on these inputs and writes the
agreement with the project's own preprocessing into the nvinfer config, so the figure a user reads is measured.
"""
from typing import Sequence, Tuple

import numpy as np

STRETCH, LETTERBOX = "stretch", "letterbox"
GEOMETRIES = (STRETCH, LETTERBOX)
# the [property] keys each geometry sets (stretching is nvinfer's default and needs none)
GEOMETRY_PROPERTIES = {STRETCH: (), LETTERBOX: (("maintain-aspect-ratio", 1), ("symmetric-padding", 1))}
GEOMETRY_WORDS = {STRETCH: "the whole frame stretched to the network size",
                  LETTERBOX: "scaled to fit with one scale and padded with black on both sides "
                             "(maintain-aspect-ratio=1, symmetric-padding=1)"}


def _sample_axis(source: int, target: int, scale: float, bilinear: bool):
    """(low index, high index, weight of high) per output position along one axis; ``scale`` source/target."""
    centres = (np.arange(target, dtype=np.float64) + 0.5) * scale - 0.5
    if not bilinear:
        index = np.clip(np.floor(centres + 0.5).astype(np.int64), 0, source - 1)
        return index, index, np.zeros(target)
    low = np.floor(centres)
    weight = centres - low
    low = low.astype(np.int64)
    return np.clip(low, 0, source - 1), np.clip(low + 1, 0, source - 1), weight


def scale_pixels(pixels: np.ndarray, width: int, height: int, bilinear: bool) -> np.ndarray:
    """(h, w, 3) uint8 -> (height, width, 3) float64 pixels, sampled at half-pixel centres."""
    h, w = pixels.shape[:2]
    y0, y1, wy = _sample_axis(h, height, h / float(height), bilinear)
    x0, x1, wx = _sample_axis(w, width, w / float(width), bilinear)
    image = pixels.astype(np.float64)
    top = image[y0][:, x0] * (1 - wx)[None, :, None] + image[y0][:, x1] * wx[None, :, None]
    bottom = image[y1][:, x0] * (1 - wx)[None, :, None] + image[y1][:, x1] * wx[None, :, None]
    # nvinfer scales into an 8-bit RGBA surface before normalizing: round back to pixel levels
    return np.clip(np.floor(top * (1 - wy)[:, None, None] + bottom * wy[:, None, None] + 0.5), 0, 255)


def frame_to_network(pixels: np.ndarray, width: int, height: int, geometry: str, bilinear: bool) -> np.ndarray:
    """The (height, width, 3) pixels nvinfer makes of an (h, w, 3) uint8 frame under ``geometry``."""
    if geometry == STRETCH:
        return scale_pixels(pixels, width, height, bilinear)
    h, w = pixels.shape[:2]
    ratio = min(width / float(w), height / float(h))
    inner_w, inner_h = max(1, int(round(w * ratio))), max(1, int(round(h * ratio)))
    canvas = np.zeros((height, width, 3), dtype=np.float64)
    left, top = (width - inner_w) // 2, (height - inner_h) // 2
    canvas[top:top + inner_h, left:left + inner_w] = scale_pixels(pixels, inner_w, inner_h, bilinear)
    return canvas


def nvinfer_input(pixels: np.ndarray, width: int, height: int, geometry: str, bilinear: bool,
                  net_scale_factor: float, offsets: Sequence[float]) -> np.ndarray:
    """(3, height, width) float32: what nvinfer feeds the network for one RGB uint8 frame."""
    scaled = frame_to_network(pixels, width, height, geometry, bilinear)
    normalized = net_scale_factor * (scaled - np.asarray(offsets, np.float64)[None, None, :])
    return np.ascontiguousarray(normalized.transpose(2, 0, 1), dtype=np.float32)


def choose(agreements: dict) -> Tuple[str, float]:
    """(geometry, agreement) that measured best; a tie keeps nvinfer's default, stretching."""
    best = max(GEOMETRIES, key=lambda g: (agreements.get(g, -1.0), g == STRETCH))
    return best, agreements[best]
