"""Gst-nvinfer configs: parsed as the key files they are, every number recomputed from the model's metadata, and
nvinfer's arithmetic run on a real photo."""
import json
import os
import re

import numpy as np
import pytest

from bundling.ecosystem.deepstream import normalization_error
from tests.bundling.ecosystem.bundle_files import build_lines, engine_of, max_batch_of, read_key_file

NETWORK_MODE = {"fp32": "0", "int8": "1", "fp16": "2"}


def _closed_form_error(mean, std):
    """nvinfer's input minus the exact one is linear in the pixel, so per channel it peaks at pixel 0 or 255:
    max(m, 1 - m) * |1/s - 1/mean(std)|."""
    mean_std = sum(std) / 3.0
    return max(max(m, 1.0 - m) * abs(1.0 / s - 1.0 / mean_std) for m, s in zip(mean, std))


def _properties(root, model):
    config = read_key_file(os.path.join(root, "deepstream", model[:-len(".onnx")] + ".txt"))
    assert config.sections() == ["property"]
    return dict(config["property"])


def test_digits_configs_are_recomputed_from_the_metadata(digits_bundle):
    root = digits_bundle[0]
    build = build_lines(root)
    assert len(build) == 3  # FP32, FP16, Q/DQ INT8
    labels = open(os.path.join(root, "labels.txt")).read().split()
    unique_ids = set()
    for model, words in build.items():
        sidecar = json.load(open(os.path.join(root, model + ".json")))
        meta = sidecar["metadata"]
        mean, std = json.loads(meta["mean"]), json.loads(meta["std"])
        (shape,) = sidecar["inputs"].values()
        precision = "int8" if sidecar["precision"]["qdq"] else "fp16" if sidecar["precision"]["fp16"] else "fp32"
        props = _properties(root, model)
        unique_ids.add(props["gie-unique-id"])

        assert (props["network-type"], props["process-mode"], props["model-color-format"]) == ("1", "1", "0")
        assert props["network-mode"] == NETWORK_MODE[precision]
        assert props["infer-dims"] == "{};{};{}".format(*shape[1:])
        assert int(props["batch-size"]) == max_batch_of(words)
        # paths are relative to the config: the engine is exactly the file build_engines.sh writes
        assert os.path.normpath(os.path.join("deepstream", props["model-engine-file"])) == engine_of(words)
        assert os.path.samefile(os.path.join(root, "deepstream", props["onnx-file"]), os.path.join(root, model))
        label_line = open(os.path.join(root, "deepstream", props["labelfile-path"])).read()
        assert label_line.count("\n") == 1 and label_line.strip().split(";") == labels
        import onnxruntime as ort
        session = ort.InferenceSession(os.path.join(root, model), providers=["CPUExecutionProvider"])
        assert props["output-blob-names"] == session.get_outputs()[0].name

        assert meta.get("normalize_in_graph", "false") == "false"
        assert float(props["net-scale-factor"]) == pytest.approx(1.0 / (255.0 * sum(std) / 3.0), rel=1e-12)
        assert [float(v) for v in props["offsets"].split(";")] == pytest.approx([255.0 * m for m in mean], rel=1e-12)
        comment = open(os.path.join(root, "deepstream", model[:-len(".onnx")] + ".txt")).read().replace("\n# ", " ")
        stated = float(re.search(r"largest input error ([0-9.]+)", comment).group(1))
        assert stated == pytest.approx(_closed_form_error(mean, std), abs=5e-5) and stated > 0
        assert "--normalize-in-graph" in comment and "whole frame" in comment
    assert len(unique_ids) == 3
    readme = open(os.path.join(root, "README.md")).read()
    assert "largest input error {:.4f}".format(_closed_form_error(mean, std)) in readme


def test_the_error_is_the_largest_over_the_pixel_range():
    imagenet = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    error = normalization_error(*imagenet, in_graph=False)
    assert error.max_abs == pytest.approx(_closed_form_error(*imagenet), rel=1e-12)
    assert (error.channel, error.pixel) == (0, 255) and error.levels == pytest.approx(error.max_abs * 255 * 0.229)
    assert normalization_error((0.5,) * 3, (0.5,) * 3, in_graph=False).exact  # one std: one scale is exact
    assert normalization_error(*imagenet, in_graph=True).exact


def _photo(size):
    """skimage's astronaut, scaled whole to the network size as nvinfer does (no crop), uint8 NCHW."""
    from PIL import Image
    from skimage import data
    image = Image.fromarray(data.astronaut()).resize((size, size), Image.BILINEAR)
    return np.asarray(image, dtype=np.float32).transpose(2, 0, 1)[None]


def _logits(path, x):
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})[0]


def test_nvinfer_arithmetic_on_a_photo(tiny_bundle):
    """Feed each model what nvinfer would compute from its config: the in-graph model gives the logits of the
    exactly normalized input within 1e-4; the other's input is off by at most the stated error."""
    root = tiny_bundle[0]
    pixels = _photo(32)
    mean, std = np.array([0.485, 0.456, 0.406])[:, None, None], np.array([0.229, 0.224, 0.225])[:, None, None]
    exact = ((pixels / 255.0 - mean) / std).astype(np.float32)
    reference = _logits(os.path.join(root, "tiny_eca.onnx"), exact)

    def nvinfer_input(model):
        props = _properties(root, model)
        offsets = np.array([float(v) for v in props["offsets"].split(";")])[:, None, None]
        return (np.float32(props["net-scale-factor"]) * (pixels - offsets)).astype(np.float32)

    in_graph = nvinfer_input("tiny_in_graph.onnx")
    assert np.array_equal(in_graph, pixels)  # scale 1, offsets 0
    np.testing.assert_allclose(_logits(os.path.join(root, "tiny_in_graph.onnx"), in_graph), reference, atol=1e-4)

    approximated = nvinfer_input("tiny_eca.onnx")
    bound = normalization_error((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), in_graph=False).max_abs
    assert 0 < np.abs(approximated - exact).max() <= bound + 1e-5
    assert not np.allclose(_logits(os.path.join(root, "tiny_eca.onnx"), approximated), reference, atol=1e-4)
    assert "exact (normalization inside the model" in open(os.path.join(root, "README.md")).read()
