"""deploy.preprocess against torchvision's standard evaluation transform, on real photos in every format.

torchvision cannot be installed beside torch 2.13 here, so its transform is written out below, step for step
from its source (pil_loader, F.resize with _compute_resized_output_size, F.center_crop with F_pil.pad,
F.to_tensor, F.normalize), in torch ops. The project's numpy implementation must match it bit for bit.
"""
import os

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from deploy.errors import UserError
from deploy.images import sample_images
from deploy.metadata import ModelInfo, read_model_info
from deploy.preprocess import (
    PreprocessSpec, center_crop, decode_image, preprocess_batch, preprocess_file, preprocess_image,
)

_PIL_MODES = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
              "lanczos": Image.LANCZOS}


# -- torchvision, written out -----------------------------------------------------------------------------

def tv_pil_loader(path):
    """torchvision.datasets.folder.pil_loader."""
    with open(path, "rb") as handle:
        img = Image.open(handle)
        return img.convert("RGB")


def tv_resize(img, size, interpolation):
    """transforms.Resize(int) on a PIL image: F.resize -> _compute_resized_output_size -> F_pil.resize."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if [h, w] == [new_h, new_w]:
        return img
    return img.resize(tuple([new_h, new_w][::-1]), interpolation)


def tv_center_crop(img, output_size):
    """F.center_crop on a PIL image, with F_pil.pad's constant zero fill (ImageOps.expand)."""
    image_width, image_height = img.size
    crop_height, crop_width = output_size, output_size
    if crop_width > image_width or crop_height > image_height:
        padding_ltrb = (
            (crop_width - image_width) // 2 if crop_width > image_width else 0,
            (crop_height - image_height) // 2 if crop_height > image_height else 0,
            (crop_width - image_width + 1) // 2 if crop_width > image_width else 0,
            (crop_height - image_height + 1) // 2 if crop_height > image_height else 0,
        )
        img = ImageOps.expand(img, border=padding_ltrb, fill=(0,) * len(img.getbands()))
        image_width, image_height = img.size
        if crop_width == image_width and crop_height == image_height:
            return img
    crop_top = int(round((image_height - crop_height) / 2.0))
    crop_left = int(round((image_width - crop_width) / 2.0))
    return img.crop((crop_left, crop_top, crop_left + crop_width, crop_top + crop_height))


def tv_to_tensor(pic):
    img = torch.from_numpy(np.array(pic, np.uint8, copy=True))
    img = img.view(pic.size[1], pic.size[0], len(pic.getbands()))
    img = img.permute((2, 0, 1)).contiguous()
    return img.to(dtype=torch.get_default_dtype()).div(255)


def tv_normalize(tensor, mean, std):
    tensor = tensor.clone()
    mean = torch.as_tensor(mean, dtype=tensor.dtype)
    std = torch.as_tensor(std, dtype=tensor.dtype)
    return tensor.sub_(mean.view(-1, 1, 1)).div_(std.view(-1, 1, 1))


def torchvision_eval(image, spec):
    """Compose([Resize(resize), CenterCrop(crop), ToTensor(), Normalize(mean, std)]) of an RGB PIL image."""
    img = tv_resize(image, spec.resize_size, _PIL_MODES[spec.interpolation])
    img = tv_center_crop(img, spec.input_size)
    return tv_normalize(tv_to_tensor(img), spec.mean, spec.std).numpy()


def assert_bit_identical(actual, expected):
    assert actual.dtype == np.float32 and actual.shape == expected.shape
    assert np.array_equal(actual.view(np.uint32), expected.view(np.uint32)), \
        "max abs diff {}".format(np.abs(actual - expected).max())


# -- real photos, many sizes and specs --------------------------------------------------------------------

SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "colorwheel", "camera")
DERIVED = {  # name -> (source, size)
    "short_side_256": ("chelsea", (384, 256)),    # Resize returns the image unchanged
    "odd_offsets_wide": ("chelsea", (301, 257)),  # (299 - 224) / 2 = 37.5: rounds half to even
    "odd_offsets_tall": ("chelsea", (257, 301)),
    "tall_thin": ("rocket", (120, 640)),
    "tiny": ("chelsea", (9, 7)),
}
PHOTO_NAMES = SKIMAGE_PHOTOS + tuple(DERIVED)


@pytest.fixture(scope="module")
def photos():
    from skimage import data
    result = {name: Image.fromarray(getattr(data, name)()).convert("RGB") for name in SKIMAGE_PHOTOS}
    result.update({name: result[source].resize(size) for name, (source, size) in DERIVED.items()})
    return result


SPECS = {
    "imagenet": PreprocessSpec(),
    "digits": PreprocessSpec.for_input_size(32),
    "bicubic": PreprocessSpec(input_size=224, resize_size=256, interpolation="bicubic"),
    "nearest": PreprocessSpec(input_size=160, resize_size=182, interpolation="nearest"),
    "lanczos_no_margin": PreprocessSpec(input_size=224, resize_size=224, interpolation="lanczos",
                                        mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0)),
}


@pytest.mark.parametrize("spec_name", sorted(SPECS))
@pytest.mark.parametrize("photo", PHOTO_NAMES)
def test_equals_torchvision_eval_transform(photos, photo, spec_name):
    spec = SPECS[spec_name]
    assert_bit_identical(preprocess_image(photos[photo], spec), torchvision_eval(photos[photo], spec))


@pytest.mark.parametrize("path", sample_images(), ids=os.path.basename)
def test_shipped_samples_equal_torchvision(path):
    spec = PreprocessSpec()
    assert_bit_identical(preprocess_file(path, spec), torchvision_eval(tv_pil_loader(path), spec))


@pytest.mark.parametrize("size", [(100, 50), (50, 223), (224, 10), (300, 225), (227, 231), (229, 233)])
def test_center_crop_pads_like_torchvision(photos, size):
    image = photos["coffee"].resize(size)
    ours, theirs = center_crop(image, 224), tv_center_crop(image, 224)
    assert ours.size == theirs.size == (224, 224)
    assert np.array_equal(np.asarray(ours), np.asarray(theirs))


def test_batch_stacks_single_images(photos):
    images = [photos["chelsea"], photos["rocket"]]
    batch = preprocess_batch(images, PreprocessSpec())
    assert batch.shape == (2, 3, 224, 224) and batch.dtype == np.float32
    assert_bit_identical(batch[1], torchvision_eval(images[1], PreprocessSpec()))


# -- every file format becomes RGB the way PIL's convert('RGB') does --------------------------------------

def _with_alpha(image):
    alpha = Image.linear_gradient("L").resize(image.size)
    rgba = image.convert("RGBA")
    rgba.putalpha(alpha)
    return rgba


# name -> (file name, what to save, save options, mode the file must reopen as, extra check of the reopened file)
FORMATS = {
    "jpeg_baseline": ("chelsea.jpg", lambda p: p["chelsea"], {"quality": 90}, "RGB", None),
    "jpeg_progressive": ("astronaut.JPEG", lambda p: p["astronaut"], {"quality": 90, "progressive": True}, "RGB",
                         lambda im: im.info.get("progressive") or im.info.get("progression")),
    "jpeg_cmyk": ("coffee_cmyk.jpg", lambda p: p["coffee"].convert("CMYK"), {"quality": 95}, "CMYK", None),
    "jpeg_gray": ("camera.jpeg", lambda p: p["camera"].convert("L"), {"quality": 90}, "L", None),
    "png_rgb": ("rocket.png", lambda p: p["rocket"], {}, "RGB", None),
    "png_gray": ("camera.png", lambda p: p["camera"].convert("L"), {}, "L", None),
    "png_palette": ("chelsea_p.png", lambda p: p["chelsea"].quantize(64), {}, "P", None),
    "png_palette_transparency": ("chelsea_pt.png", lambda p: p["chelsea"].quantize(64), {"transparency": 0}, "P",
                                 lambda im: "transparency" in im.info),
    "png_rgba": ("astronaut_rgba.PNG", lambda p: _with_alpha(p["astronaut"]), {}, "RGBA", None),
    "png_gray_alpha": ("camera_la.png", lambda p: _with_alpha(p["camera"]).convert("LA"), {}, "LA", None),
    "bmp_rgb": ("coffee.bmp", lambda p: p["coffee"], {}, "RGB", None),
    "bmp_palette": ("colorwheel.bmp", lambda p: p["colorwheel"].quantize(16), {}, "P", None),
    "webp_lossy": ("rocket.webp", lambda p: p["rocket"], {"quality": 85}, "RGB", None),
    "webp_lossless_rgba": ("astronaut.WebP", lambda p: _with_alpha(p["astronaut"]), {"lossless": True}, "RGBA",
                           None),
    "tiff_rgb": ("chelsea.tiff", lambda p: p["chelsea"], {}, "RGB", None),
    "ppm": ("coffee.ppm", lambda p: p["coffee"], {}, "RGB", None),
}


@pytest.fixture(scope="module")
def format_files(tmp_path_factory, photos):
    folder = tmp_path_factory.mktemp("formats")
    paths = {}
    for name, (filename, make, options, _, _) in FORMATS.items():
        paths[name] = str(folder / filename)
        make(photos).save(paths[name], **options)
    return paths


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_format_decodes_like_pil_convert_rgb(format_files, name):
    path = format_files[name]
    _, _, _, mode, check = FORMATS[name]
    with Image.open(path) as original:
        assert original.mode == mode, "the test file is not the variant it claims to be"
        assert check is None or check(original)
        expected = np.asarray(original.convert("RGB"))
    decoded = decode_image(path)
    assert decoded.mode == "RGB"
    assert np.array_equal(np.asarray(decoded), expected)
    spec = PreprocessSpec()
    assert_bit_identical(preprocess_file(path, spec), torchvision_eval(tv_pil_loader(path), spec))


@pytest.mark.parametrize("name,source", [("jpeg_cmyk", "coffee"), ("jpeg_progressive", "astronaut"),
                                         ("png_palette", "chelsea"), ("webp_lossy", "rocket")])
def test_converted_colors_stay_close_to_the_photo(format_files, photos, name, source):
    """Catches inverted CMYK (Adobe JPEGs store it inverted) or a wrong palette lookup, not just PIL parity."""
    decoded = np.asarray(decode_image(format_files[name]), dtype=np.int16)
    assert np.abs(decoded - np.asarray(photos[source], dtype=np.int16)).mean() < 6


def test_alpha_is_dropped_not_composited(format_files, photos):
    decoded = np.asarray(decode_image(format_files["png_rgba"]))
    assert np.array_equal(decoded, np.asarray(photos["astronaut"]))


@pytest.mark.parametrize("content", [b"", b"not an image at all", "truncated"])
def test_unreadable_file_is_a_one_line_user_error(tmp_path, photos, content):
    path = tmp_path / "broken.jpg"
    if content == "truncated":
        photos["chelsea"].save(str(path), quality=90)
        path.write_bytes(path.read_bytes()[:4000])
    else:
        path.write_bytes(content)
    with pytest.raises(UserError) as info:
        decode_image(str(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot decode"):
        decode_image(str(tmp_path / "absent.png"))


# -- the spec travels in the model's metadata -------------------------------------------------------------

@pytest.mark.parametrize("spec_name", sorted(SPECS))
def test_metadata_round_trip(spec_name):
    spec = SPECS[spec_name]
    meta = spec.to_metadata()
    assert all(isinstance(value, str) for value in meta.values())
    assert meta["layout"] == "NCHW" and meta["color"] == "RGB" and int(meta["crop_size"]) == spec.input_size
    assert PreprocessSpec.from_metadata(meta) == spec


def test_metadata_round_trip_through_an_onnx_file(tmp_path):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from exporter.onnx_graph import set_metadata

    spec = PreprocessSpec(input_size=192, resize_size=219, interpolation="bicubic", mean=(0.5, 0.4, 0.3),
                          std=(0.2, 0.25, 0.3))
    graph = helper.make_graph(  # the smallest classifier-shaped graph: N x 3 x H x W images in, 3 logits out
        [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["logits"])], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 192, 192])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    info = ModelInfo(arch="eca_resnet18", num_classes=3, preprocess=spec)
    path = str(tmp_path / "tiny.onnx")
    onnx.save(set_metadata(model, info.to_metadata()), path)

    assert read_model_info(path).preprocess == spec
    ort_meta = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    assert PreprocessSpec.from_metadata(dict(ort_meta)) == spec


@pytest.mark.parametrize("change,message", [
    ({"mean": "[0.5, 0.5]"}, "one value per RGB channel"),
    ({"std": "[0.2, 0.0, 0.2]"}, "zero"),
    ({"resize_size": "not json"}, "malformed"),
    ({"interpolation": "area"}, "unknown interpolation"),
    ({"input_size": "300"}, "at least the input size"),
])
def test_bad_metadata_is_a_user_error(change, message):
    meta = PreprocessSpec().to_metadata()
    meta.update(change)
    with pytest.raises(UserError, match=message):
        PreprocessSpec.from_metadata(meta)


def test_metadata_without_preprocessing_is_a_user_error():
    with pytest.raises(UserError, match="lacks preprocessing keys"):
        PreprocessSpec.from_metadata({"arch": "eca_resnet18"})


# -- normalization inside the graph (export --normalize-in-graph) ------------------------------------------

IN_GRAPH = PreprocessSpec(input_size=160, resize_size=182, interpolation="bicubic", mean=(0.5, 0.4, 0.3),
                          std=(0.2, 0.25, 0.3), normalize_in_graph=True)


def test_in_graph_spec_gives_pixels_and_network_input_normalizes_them_like_torchvision(photos):
    from dataclasses import replace

    from deploy.preprocess import network_input
    for name in ("chelsea", "tall_thin", "tiny"):
        pixels = preprocess_image(photos[name], IN_GRAPH)
        assert pixels.dtype == np.float32 and pixels.shape == (3, 160, 160)
        assert np.array_equal(pixels, np.round(pixels)) and 0 <= pixels.min() and pixels.max() <= 255
        plain = replace(IN_GRAPH, normalize_in_graph=False)
        assert_bit_identical(network_input(pixels, IN_GRAPH), torchvision_eval(photos[name], plain))
        assert network_input(pixels, plain) is pixels  # a plain model's inputs are already normalized


def test_in_graph_metadata_round_trip_and_old_models_read_as_false():
    meta = IN_GRAPH.to_metadata()
    assert meta["normalize_in_graph"] == "true" and PreprocessSpec.from_metadata(meta) == IN_GRAPH
    old = PreprocessSpec().to_metadata()
    del old["normalize_in_graph"]  # written before the key existed
    assert PreprocessSpec.from_metadata(old).normalize_in_graph is False
    assert "normalization in the graph" in IN_GRAPH.describe()
    assert "normalization in the graph" not in PreprocessSpec().describe()


@pytest.mark.parametrize("value", ['"true"', "1", "yes"])
def test_in_graph_metadata_must_be_a_json_boolean(value):
    meta = dict(PreprocessSpec().to_metadata(), normalize_in_graph=value)
    with pytest.raises(UserError, match="normalize_in_graph"):
        PreprocessSpec.from_metadata(meta)


def test_the_export_option_sets_the_field():
    from deploy.preprocess import apply_options
    assert apply_options(PreprocessSpec(), normalize_in_graph=True).normalize_in_graph
    assert not apply_options(PreprocessSpec(), normalize_in_graph=False).normalize_in_graph


# -- timm's pretrained_cfg -------------------------------------------------------------------------------------

def _timm_config(tmp_path, **fields):
    import json
    cfg = {"input_size": [3, 224, 224], "interpolation": "bicubic", "crop_pct": 0.875, "crop_mode": "center",
           "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "test_input_size": [3, 288, 288],
           "test_crop_pct": 0.95, "hf_hub_id": "timm/ecaresnet50d.miil_in1k"}
    cfg.update(fields)
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def test_timm_config_uses_timms_floor(tmp_path):
    from deploy.preprocess import from_timm_config, resolve_spec, timm_resize_size
    assert timm_resize_size(32, 0.875) == 36 and round(32 / 0.875) == 37  # the case: floor, not round
    assert timm_resize_size(224, 0.875) == 256 and timm_resize_size(288, 0.95) == 303
    spec = from_timm_config(_timm_config(tmp_path))
    assert (spec.input_size, spec.resize_size, spec.interpolation) == (224, 256, "bicubic")
    test = from_timm_config(_timm_config(tmp_path), test_size=True)
    assert (test.input_size, test.resize_size) == (288, 303)
    small = resolve_spec(PreprocessSpec(), timm_config=_timm_config(tmp_path), crop=32)
    assert (small.input_size, small.resize_size) == (32, 36)
    # explicit flags override the config
    assert resolve_spec(PreprocessSpec(), timm_config=_timm_config(tmp_path), resize=300).resize_size == 300
    # timm writes null for what a model does not set; that is as good as absent
    assert from_timm_config(_timm_config(tmp_path, test_input_size=None, url=None)).input_size == 224


@pytest.mark.parametrize("fields,message", [
    ({"crop_mode": "squash"}, "crop_mode 'squash' is not supported"),
    ({"interpolation": "random"}, "interpolation 'random' is not an eval filter"),
    ({"input_size": [3, 224, 192]}, "not a square RGB size"),
    ({"crop_pct": 1.5}, "must be in (0, 1]"),
    ({"mean": "imagenet"}, "field mean must be a list"),
])
def test_timm_config_refusals(tmp_path, fields, message):
    from deploy.preprocess import from_timm_config
    with pytest.raises(UserError) as caught:
        from_timm_config(_timm_config(tmp_path, **fields))
    assert message in str(caught.value)


def test_timm_test_size_needs_a_config():
    from deploy.preprocess import resolve_spec
    with pytest.raises(UserError, match="--timm-test-size needs --timm-config"):
        resolve_spec(PreprocessSpec(), timm_test_size=True)


def test_bicubic_is_pillows_filter_on_every_path():
    """The one preprocessing resizes bicubic with Pillow's BICUBIC, the filter timm's and torchvision's PIL path
    use; the device runs this same function."""
    from PIL import Image
    from deploy.preprocess import resize_and_crop
    image = Image.fromarray((np.arange(48 * 40 * 3) % 251).astype(np.uint8).reshape(48, 40, 3))
    spec = PreprocessSpec(input_size=32, resize_size=36, interpolation="bicubic")
    expected = image.resize((36, int(36 * 48 / 40)), Image.BICUBIC).crop((2, 6, 34, 38))  # 36 x 43, centred
    assert np.array_equal(np.asarray(resize_and_crop(image, spec)), np.asarray(expected))
