"""The one preprocessing of the project: decode, resize the shorter side, center crop, scale, normalize.

It is defined here once, written into the ONNX metadata at export, and read back by calibration,
benchmarks and Jetson inference. On PIL images it equals torchvision's standard evaluation transform
(Resize(resize_size) + CenterCrop(crop_size) + ToTensor + Normalize(mean, std)): it performs the same PIL
resize and the same float32 arithmetic, so the results agree to the last bit.
"""
import json
import math
import os
import warnings
from dataclasses import asdict, dataclass, field, replace
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from .errors import UserError
from .filekind import file_kind, is_regular_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The smallest std a channel may have: real [0, 1] pixels have stds near 0.2, and 1/255 (pixels 0-255 fed as is)
# is 0.0039; below 1e-4 one pixel level is 40 input units, and 1e-40 overflows float32 (infinite inputs, NaN logits).
MIN_STD = 1e-4

# Suffixes that decode_image accepts; matched case-insensitively by the data loaders.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")

_INTERPOLATIONS = {
    "nearest": Image.NEAREST,
    "bilinear": Image.BILINEAR,
    "bicubic": Image.BICUBIC,
    "lanczos": Image.LANCZOS,
}

METADATA_KEYS = ("input_size", "resize_size", "interpolation", "mean", "std")
GEOMETRY_KEY = "geometry"   # written only when not the default, so older models and readers are unchanged
CENTER_CROP, STRETCH = "center-crop", "stretch"
GEOMETRIES = (CENTER_CROP, STRETCH)
# Optional key: models exported before it existed normalize outside the graph.
IN_GRAPH_KEY = "normalize_in_graph"


@dataclass(frozen=True)
class PreprocessSpec:
    """What a model expects of an image. ``input_size`` is the crop fed to the network.

    ``normalize_in_graph``: the model applies ``(x / 255 - mean) / std`` itself (``export --normalize-in-graph``),
    so it takes the RGB crop as float32 pixels in [0, 255]; mean and std then say what its graph computes.
    """

    input_size: int = 224
    resize_size: int = 256
    interpolation: str = "bilinear"
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    color: str = field(default="RGB")
    normalize_in_graph: bool = False
    # "center-crop": shorter side to resize_size, then an input_size crop (torchvision's eval transform);
    # "stretch": the whole image scaled to input_size x input_size, which is what DeepStream's nvinfer and
    # jetson-inference do to a frame (export --geometry stretch), so their inputs are the ones checked.
    geometry: str = CENTER_CROP

    def __post_init__(self):
        if self.geometry not in GEOMETRIES:
            raise UserError("unknown geometry {!r}; choose one of {}".format(self.geometry, ", ".join(GEOMETRIES)))
        if not isinstance(self.normalize_in_graph, bool):
            raise UserError("normalize_in_graph must be true or false, got {!r}".format(self.normalize_in_graph))
        if self.interpolation not in _INTERPOLATIONS:
            raise UserError("unknown interpolation {!r}; choose one of {}".format(
                self.interpolation, ", ".join(sorted(_INTERPOLATIONS))))
        if self.input_size <= 0 or self.resize_size < self.input_size:
            raise UserError("resize size {} must be at least the input size {} (> 0)".format(
                self.resize_size, self.input_size))
        from .validate import MAX_INPUT_SIZE  # the metadata reader's bound too: one bound for both
        if self.resize_size > MAX_INPUT_SIZE:
            raise UserError("resize size {} is above the limit of {}; give a smaller --resize or --input-size".format(
                self.resize_size, MAX_INPUT_SIZE))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != 3 or len(self.std) != 3:
            raise UserError("mean and std need one value per RGB channel, got {} and {}".format(
                list(self.mean), list(self.std)))
        for name, values in (("mean", self.mean), ("std", self.std)):
            if not all(np.isfinite(np.float32(value)) for value in values):
                raise UserError("{} {} must be finite numbers".format(name, list(values)))
        # torchvision's Normalize refuses a zero std (in float32): it would divide by zero; a negative one would
        # turn the image into its negative.
        if not all(np.float32(value) > 0 for value in self.std):
            raise UserError("std {} must be above 0 in every channel (a zero entry divides by zero)".format(
                list(self.std)))
        if not all(value >= MIN_STD for value in self.std):  # 1e-40 passes "> 0" and overflows the inputs
            raise UserError("std {} must be at least {:g} in every channel (a tinier one blows pixel values up "
                            "past what float32 holds)".format(list(self.std), MIN_STD))

    @classmethod
    def for_input_size(cls, input_size: int, crop_pct: float = 0.875, **kwargs) -> "PreprocessSpec":
        """The zoo's own rule: resize to round(input_size / crop_pct) (256 for 224, 37 for 32). It is not timm's,
        which floors (36 for 32): a timm model's preprocessing comes from its config (``from_timm_config``)."""
        return cls(input_size=input_size, resize_size=int(round(input_size / crop_pct)), **kwargs)

    @property
    def crop_size(self) -> int:
        return self.input_size

    def describe(self) -> str:
        """One line for people: what export recorded and every later stage will apply."""
        normalization = "mean {}, std {}".format(_format_channels(self.mean), _format_channels(self.std))
        if self.normalize_in_graph:
            normalization = "RGB pixels 0-255 in; normalization in the graph ({})".format(normalization)
        if self.geometry == STRETCH:
            return "whole image stretched to {0}x{0} ({1}), {2}".format(self.input_size, self.interpolation,
                                                                       normalization)
        return "resize {} ({}), center crop {}, {}".format(
            self.resize_size, self.interpolation, self.crop_size, normalization)

    def to_dict(self) -> Dict[str, object]:
        record = {"resize_size": self.resize_size, "crop_size": self.crop_size, "interpolation": self.interpolation,
                  "mean": list(self.mean), "std": list(self.std), IN_GRAPH_KEY: self.normalize_in_graph}
        if self.geometry != CENTER_CROP:
            record[GEOMETRY_KEY] = self.geometry
        return record

    def to_metadata(self) -> Dict[str, str]:
        """String key/values for ONNX ``metadata_props`` and engine sidecars."""
        meta = {key: json.dumps(value) for key, value in asdict(self).items()
                if key not in ("color", "interpolation", GEOMETRY_KEY)}
        if self.geometry != CENTER_CROP:
            meta[GEOMETRY_KEY] = self.geometry
        meta.update(crop_size=json.dumps(self.crop_size), interpolation=self.interpolation, color=self.color,
                    layout="NCHW")
        return meta

    @classmethod
    def from_metadata(cls, meta: Dict[str, str]) -> "PreprocessSpec":
        missing = [key for key in METADATA_KEYS if key not in meta]
        if missing:
            raise UserError("model metadata lacks preprocessing keys: {}; was it exported by this tool?".format(
                ", ".join(missing)))
        sizes = {key: _size_field(meta, key) for key in ("input_size", "resize_size")}
        mean, std = _triple_field(meta, "mean"), _triple_field(meta, "std")
        return cls(interpolation=meta["interpolation"].strip('"'), mean=mean, std=std,
                   normalize_in_graph=_bool_field(meta, IN_GRAPH_KEY),
                   geometry=str(meta.get(GEOMETRY_KEY, CENTER_CROP)).strip('"'), **sizes)


# -- the preprocessing options of `export` (declared here, beside the config they set) ------------------

@dataclass(frozen=True)
class PreprocessOption:
    """One command-line option that sets a PreprocessSpec field; commands build their flags from these."""

    flag: str
    dest: str
    metavar: str
    help: str
    choices: Optional[Tuple[str, ...]] = None
    is_flag: bool = False


PREPROCESS_OPTIONS = (
    PreprocessOption("--resize", "resize", "N", "Resize the shorter side to N before the crop "
                     "(default: crop / 0.875, 256 for 224)."),
    PreprocessOption("--crop", "crop", "N", "Center crop N x N: the network's input size (same as --input-size)."),
    PreprocessOption("--mean", "mean", "R,G,B", "Per-channel mean of [0, 1] pixels (default: the model's, "
                     "ImageNet's 0.485,0.456,0.406)."),
    PreprocessOption("--std", "std", "R,G,B", "Per-channel std of [0, 1] pixels (default: the model's, "
                     "ImageNet's 0.229,0.224,0.225)."),
    PreprocessOption("--interpolation", "interpolation", "NAME", "Resize filter (default: the model's, bilinear).",
                     tuple(sorted(_INTERPOLATIONS))),
    PreprocessOption("--timm-config", "timm_config", "FILE", "A timm pretrained_cfg as JSON (json.dump(model."
                     "pretrained_cfg)): input_size, interpolation, crop_pct, crop_mode, mean and std, with timm's "
                     "arithmetic (resize floor(size / crop_pct)); the flags above override it."),
    PreprocessOption("--timm-test-size", "timm_test_size", "", "With --timm-config: its test_input_size and "
                     "test_crop_pct instead of input_size and crop_pct.", is_flag=True),
    PreprocessOption("--normalize-in-graph", "normalize_in_graph", "", "Put (x/255 - mean)/std into the model as "
                     "explicit nodes before the first convolution: it then takes RGB pixels 0-255 (float32, NCHW), "
                     "which DeepStream feeds exactly (net-scale-factor=1, zero offsets).", is_flag=True),
    PreprocessOption("--geometry", "geometry", "NAME", "center-crop (default): resize the shorter side, then "
                     "crop; stretch: scale the whole image to the input size, as DeepStream's nvinfer and "
                     "jetson-inference do to every frame, so the proof holds for their inputs.", GEOMETRIES),
)


def _format_channels(values: Sequence[float]) -> str:
    return ",".join("{:g}".format(v) for v in values)


def parse_channels(text: str, flag: str) -> Tuple[float, float, float]:
    """``"0.5,0.5,0.5"`` -> three floats on the [0, 1] pixel scale; a 0-255 value is refused with a hint."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise UserError("{} takes three comma-separated numbers like 0.485,0.456,0.406, got {!r}".format(
            flag, text)) from None
    if len(values) != 3:
        raise UserError("{} takes one value per RGB channel (three), got {}".format(flag, len(values)))
    if not all(np.isfinite(values)):  # before the scale hint below, which inf would trip
        raise UserError("{} {} must be finite numbers".format(flag, text))
    if any(v > 1.0 for v in values):
        raise UserError("{} {} is on the 0-255 scale; this tool scales pixels to [0, 1] first, so divide by 255 "
                        "({})".format(flag, text, _format_channels(round(v / 255.0, 4) for v in values)))
    return values  # type: ignore[return-value]


def resolve_input_size(input_size: Optional[int], crop: Optional[int], default: int = 224) -> int:
    """``--crop`` and ``--input-size`` name the same number; both given and different is an error."""
    if input_size is not None and crop is not None and input_size != crop:
        raise UserError("--crop {} and --input-size {} disagree; the crop is the input size, give one".format(
            crop, input_size))
    return int(crop or input_size or default)


def resolve_spec(spec: PreprocessSpec, timm_config=None, timm_test_size: bool = False, crop: Optional[int] = None,
                 **options) -> PreprocessSpec:
    """The spec a command's flags ask for: ``spec`` (the model's own), else the timm config's when one is given,
    then every explicit flag on top (``crop`` is the input size; with a timm config the resize follows it by
    timm's rule unless --resize is given)."""
    if timm_config is not None:
        spec = from_timm_config(timm_config, timm_test_size, crop)
    elif timm_test_size:
        raise UserError("--timm-test-size needs --timm-config")
    return apply_options(spec, **options)


def apply_options(spec: PreprocessSpec, resize: Optional[int] = None, mean: Optional[str] = None,
                  std: Optional[str] = None, interpolation: Optional[str] = None, normalize_in_graph: bool = False,
                  geometry: Optional[str] = None, **_ignored) -> PreprocessSpec:
    """``spec`` with the fields the user set on the command line replaced (the crop is the input size)."""
    changes = {}
    if resize is not None:
        changes["resize_size"] = int(resize)
    if mean is not None:
        changes["mean"] = parse_channels(mean, "--mean")
    if std is not None:
        changes["std"] = parse_channels(std, "--std")
    if interpolation is not None:
        changes["interpolation"] = interpolation
    if normalize_in_graph:
        changes["normalize_in_graph"] = True
    if geometry is not None:
        changes["geometry"] = geometry
    return replace(spec, **changes) if changes else spec


# -- timm's pretrained_cfg ------------------------------------------------------------------------------

# What is read of a pretrained_cfg; timm writes more (hf_hub_id, first_conv, ...), which is ignored.
TIMM_CONFIG_SCHEMA = {"input_size?": [int], "test_input_size?": [int], "interpolation?": str, "crop_pct?": float,
                      "test_crop_pct?": float, "crop_mode?": str, "mean?": [float], "std?": [float],
                      "num_classes?": int}
# timm's names for Pillow's filters (timm.data.transforms.str_to_pil_interp); "random" is a training choice.
_TIMM_INTERPOLATIONS = {"nearest": "nearest", "bilinear": "bilinear", "bicubic": "bicubic", "lanczos": "lanczos"}


def timm_resize_size(input_size: int, crop_pct: float) -> int:
    """timm's eval resize (timm.data.transforms_factory.transforms_imagenet_eval): floor(size / crop_pct)."""
    return int(math.floor(input_size / crop_pct))


def from_timm_config(path, test_size: bool = False, input_size: Optional[int] = None) -> PreprocessSpec:
    """The preprocessing a timm ``pretrained_cfg`` (saved as JSON) describes, as timm's eval transform applies it:
    resize the shorter side to floor(size / crop_pct) with its filter, center crop, normalize. ``input_size``
    replaces the config's size (the resize follows by the same rule)."""
    from .schema import check_schema, load_checked_json
    cfg = load_checked_json(path, dict, "timm config")
    cfg = {key: value for key, value in cfg.items() if value is not None}  # timm writes null for unset fields
    check_schema(cfg, TIMM_CONFIG_SCHEMA, os.fspath(path))
    size_key, pct_key = ("test_input_size", "test_crop_pct") if test_size else ("input_size", "crop_pct")
    if size_key not in cfg:
        raise UserError("timm config {} has no {}{}".format(path, size_key, "; drop --timm-test-size" if test_size
                                                            else ""))
    shape = cfg[size_key]
    if len(shape) != 3 or shape[0] != 3 or shape[1] != shape[2]:
        raise UserError("timm config {}: {} {} is not a square RGB size [3, S, S]; this tool center-crops "
                        "squares".format(path, size_key, shape))
    crop_pct = float(cfg.get(pct_key, cfg.get("crop_pct", 0.875)))
    if not 0 < crop_pct <= 1:
        raise UserError("timm config {}: {} {} must be in (0, 1]".format(path, pct_key, crop_pct))
    mode = cfg.get("crop_mode", "center")
    if mode != "center":
        raise UserError("timm config {}: crop_mode {!r} is not supported; the one preprocessing here is timm's "
                        "'center' (resize the shorter side, center crop)".format(path, mode[:20]))
    interpolation = _TIMM_INTERPOLATIONS.get(cfg.get("interpolation", "bilinear"))
    if interpolation is None:
        raise UserError("timm config {}: interpolation {!r} is not an eval filter; choose one of {}".format(
            path, cfg["interpolation"][:20], ", ".join(sorted(_TIMM_INTERPOLATIONS))))
    size = int(input_size or shape[1])
    return PreprocessSpec(input_size=size, resize_size=timm_resize_size(size, crop_pct), interpolation=interpolation,
                          mean=tuple(cfg.get("mean", IMAGENET_MEAN)), std=tuple(cfg.get("std", IMAGENET_STD)))


def _field_value(meta: Dict[str, str], key: str):
    try:
        return json.loads(meta[key])
    # json.JSONDecodeError is a ValueError; "[" * 100000 is a RecursionError (Python's parser recurses per level)
    except (TypeError, ValueError, RecursionError):
        raise UserError("metadata field {} is malformed (not JSON): {!r}".format(key, str(meta[key])[:40])) from None


def _size_field(meta: Dict[str, str], key: str) -> int:
    from .validate import MAX_INPUT_SIZE
    value = _field_value(meta, key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_INPUT_SIZE:
        raise UserError("metadata field {} must be an integer from 1 to {}, got {!r}".format(
            key, MAX_INPUT_SIZE, meta[key][:40]))
    return value


def _bool_field(meta: Dict[str, str], key: str) -> bool:
    """An optional JSON boolean; absent reads as False."""
    if key not in meta:
        return False
    value = _field_value(meta, key)
    if not isinstance(value, bool):
        raise UserError("metadata field {} must be true or false, got {!r}".format(key, str(meta[key])[:40]))
    return value


def _triple_field(meta: Dict[str, str], key: str) -> Tuple[float, ...]:
    """A list of finite numbers; __post_init__ then checks that there is one per channel."""
    value = _field_value(meta, key)
    if (not isinstance(value, list)
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in value)):
        raise UserError("metadata field {} must be a list of finite numbers (R, G, B), got {!r}".format(
            key, meta[key][:60]))
    return tuple(float(v) for v in value)


# Bounds on the work one image may cost, so no file (a 100000x1 PNG, a 100-megapixel photo) can exhaust memory.
# Images within DECODE_BUDGET_PIXELS decode exactly as torchvision's transform sees them. Larger ones are
# decoded smaller (JPEG's DCT scaling via draft) or box-reduced by an integer factor before the resize; both
# keep the shorter side at least REDUCING_GAP times the resize size, the margin Pillow documents as giving a
# result indistinguishable from resizing the full image (Image.resize's reducing_gap). What still exceeds
# MAX_DECODE_PIXELS, or is more elongated than MAX_ASPECT_RATIO (its resized shorter side would make the long
# side enormous), is refused with a UserError, which the loaders turn into a skipped and counted image.
DECODE_BUDGET_PIXELS = 16000000
MAX_DECODE_PIXELS = 25000000
MAX_ASPECT_RATIO = 20.0
# The largest image file read at all: 25 megapixels of uncompressed 16-bit RGBA (a TIFF) is 200 MB.
MAX_IMAGE_FILE_BYTES = 256 << 20
REDUCING_GAP = 3.0


# Pillow warns above 89 megapixels and refuses above 179 from the header alone; the bounds above are tighter and
# skip such images with one counted line, so its warning would only be a second, noisier message.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class ImageTooLargeError(UserError):
    """An image beyond the decode bounds; loaders skip and count it like an unreadable one."""


def check_image_geometry(width: int, height: int, path="image") -> None:
    """Refuse an image whose size or aspect ratio is beyond the decode bounds, before it is decoded."""
    if width < 1 or height < 1:
        raise ImageTooLargeError("{} has no pixels ({}x{})".format(path, width, height))
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageTooLargeError("{} is {}x{}, more elongated than the {:g}:1 limit".format(
            path, width, height, MAX_ASPECT_RATIO))


def _reduction(width: int, height: int, resize_size: Optional[int]) -> int:
    """The integer factor an image may shrink by before the resize: 1 within the budget (the exact path)."""
    if resize_size is None or width * height <= DECODE_BUDGET_PIXELS:
        return 1
    return max(1, int(min(width, height) // (REDUCING_GAP * resize_size)))


def decode_image(path, resize_size: Optional[int] = None) -> Image.Image:
    """Open any supported file as an RGB PIL image, the way ``Image.open(path).convert('RGB')`` does.

    ``resize_size`` (the shorter side the preprocessing resizes to) lets images above DECODE_BUDGET_PIXELS be
    decoded or reduced smaller first; see the bounds above. Decoding is forced here, so a truncated or corrupt
    file fails now with UserError, not later.
    """
    if isinstance(path, (str, bytes, os.PathLike)) and not is_regular_file(path):  # open() on a FIFO blocks
        raise UserError("cannot decode image {}: it is {}, not a regular file".format(os.fspath(path),
                                                                                    file_kind(path)))
    if isinstance(path, (str, bytes, os.PathLike)) and os.path.getsize(path) > MAX_IMAGE_FILE_BYTES:
        raise ImageTooLargeError("{} is {:.0f} MB, above the {} MiB an image file may have".format(
            os.fspath(path), os.path.getsize(path) / 1e6, MAX_IMAGE_FILE_BYTES >> 20))
    try:
        with Image.open(path) as image:
            check_image_geometry(image.width, image.height, path)
            factor = _reduction(image.width, image.height, resize_size)
            if factor > 1 and image.format in ("JPEG", "MPO"):  # DCT scaling: never decodes full-size pixels
                image.draft("RGB", (image.width // factor, image.height // factor))
                factor = _reduction(image.width, image.height, resize_size)  # what draft left to do
            if image.width * image.height > MAX_DECODE_PIXELS:
                raise ImageTooLargeError("{} is {}x{}, above the {:g}-megapixel decode limit".format(
                    path, image.width, image.height, MAX_DECODE_PIXELS / 1e6))
            image.load()
            if factor > 1:
                reducible = image if image.mode in ("RGB", "RGBA", "L", "LA", "I", "F") else image.convert("RGB")
                return reducible.reduce(factor).convert("RGB")
            return image.convert("RGB")
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001
        # Broad on purpose: besides OSError/SyntaxError, PIL's format plugins raise struct.error, EOFError,
        # IndexError, KeyError, ValueError, DecompressionBombError, MemoryError ... on malformed files.
        raise UserError("cannot decode image {}: {}".format(path, str(exc) or type(exc).__name__)) from None


def resize_shorter_side(image: Image.Image, size: int, interpolation: str = "bilinear") -> Image.Image:
    """torchvision.transforms.functional.resize(img, size) for an int size on a PIL image."""
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    if short == size:
        return image
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if width <= height else (new_long, size)
    return image.resize((new_w, new_h), _INTERPOLATIONS[interpolation])


def stretch(image: Image.Image, width: int, height: int, interpolation: str = "bilinear") -> Image.Image:
    """The whole image scaled to ``width`` x ``height``, its aspect ratio not kept (nvinfer's default scaling)."""
    if image.size == (width, height):
        return image
    return image.resize((width, height), _INTERPOLATIONS[interpolation])


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """torchvision's CenterCrop on a PIL image, including its zero padding of images smaller than the crop."""
    width, height = image.size
    if width < size or height < size:
        padded = Image.new(image.mode, (max(width, size), max(height, size)))
        padded.paste(image, (max(size - width, 0) // 2, max(size - height, 0) // 2))
        image, (width, height) = padded, padded.size
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def to_pixels_chw(image) -> np.ndarray:
    """An RGB PIL image or (H, W, 3) uint8 array as (3, H, W) float32 pixels in [0, 255]."""
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).astype(np.float32).transpose(2, 0, 1))


def normalize_pixels(pixels: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``(x / 255 - mean) / std`` per channel of float32 (3, H, W) or (N, 3, H, W) pixels in [0, 255].

    The one normalization rule: ToTensor + Normalize in float32, operation for operation, and the same three
    operations exporter.input_normalization writes into a graph, so both give the same bits.
    """
    scaled = np.asarray(pixels, dtype=np.float32) / np.float32(255.0)
    mean32 = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    std32 = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    return (scaled - mean32) / std32


def to_normalized_chw(image, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """ToTensor + Normalize in float32, operation for operation, of an RGB PIL image or (H, W, 3) uint8 array."""
    return normalize_pixels(to_pixels_chw(image), mean, std)


def to_model_input(image, spec: PreprocessSpec) -> np.ndarray:
    """An RGB crop (PIL image or (S, S, 3) uint8) to the (3, S, S) float32 array the model of ``spec`` takes."""
    if spec.normalize_in_graph:
        return to_pixels_chw(image)
    return to_normalized_chw(image, spec.mean, spec.std)


def network_input(inputs: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """What the network without in-graph normalization (the PyTorch original) takes for ``inputs`` prepared for
    the model of ``spec``: they are normalized here when the exported model normalizes in its graph."""
    if not spec.normalize_in_graph:
        return inputs
    return normalize_pixels(inputs, spec.mean, spec.std)


def resize_and_crop(image: Image.Image, spec: PreprocessSpec) -> Image.Image:
    """The geometric half of the transform: an RGB S x S PIL image, before ToTensor/Normalize."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    if spec.geometry == STRETCH:
        return stretch(image, spec.input_size, spec.input_size, spec.interpolation)
    resized = resize_shorter_side(image, spec.resize_size, spec.interpolation)
    return center_crop(resized, spec.input_size)


def preprocess_image(image: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """One RGB PIL image to a (3, S, S) float32 array."""
    return to_model_input(resize_and_crop(image, spec), spec)


def preprocess_file(path, spec: PreprocessSpec) -> np.ndarray:
    return preprocess_image(decode_image(path, spec.resize_size), spec)


def preprocess_batch(images: Sequence[Image.Image], spec: PreprocessSpec) -> np.ndarray:
    """A list of PIL images to an (N, 3, S, S) float32 batch."""
    return np.stack([preprocess_image(image, spec) for image in images]).astype(np.float32, copy=False)


def input_from_pixels(pixels: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """(N, S, S, 3) uint8 crops to the (N, 3, S, S) float32 model inputs of ``spec``: to_model_input per crop."""
    return np.stack([to_model_input(crop, spec) for crop in pixels]).astype(np.float32, copy=False)


def pixels_from_input(inputs: np.ndarray, spec: PreprocessSpec) -> Optional[np.ndarray]:
    """The uint8 crops ``inputs`` were made from, or None when they are no such crops. Callers check the round
    trip with input_from_pixels; reference.npz stores crops only where it is exact (4x smaller than float32)."""
    values = np.asarray(inputs, dtype=np.float64)
    if not spec.normalize_in_graph:
        mean = np.asarray(spec.mean, dtype=np.float64).reshape(1, 3, 1, 1)
        std = np.asarray(spec.std, dtype=np.float64).reshape(1, 3, 1, 1)
        values = (values * std + mean) * 255.0
    levels = np.rint(values)
    if values.ndim != 4 or values.shape[1] != 3 or np.any(levels < 0) or np.any(levels > 255):
        return None
    return np.ascontiguousarray(levels.astype(np.uint8).transpose(0, 2, 3, 1))
