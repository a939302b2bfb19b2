"""jetson-inference's imagenet: the line for the models it can run (and the batch-1 model it loads), the reason
for the others."""
import dataclasses
import os
import shlex

import numpy as np

from bundling.ecosystem.jetson_inference import why_not
from bundling.ecosystem.model import describe_model
from deploy.preprocess import PreprocessSpec
from tests.bundling.ecosystem.bundle_files import build_lines, derive_batch1_copies


def _imagenet_lines(root):
    readme = open(os.path.join(root, "README.md")).read()
    return [shlex.split(line) for line in readme.splitlines() if line.strip().startswith("imagenet ")]


def _flags(words):
    return dict(word[2:].split("=", 1) for word in words if word.startswith("--"))


def _session(path):
    import onnxruntime as ort
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def test_imagenet_runs_a_batch1_copy_of_the_model(tiny_bundle, tmp_path):
    """The copy is not shipped (the bundle stores each model once): build_engines.sh derives it on the device,
    without the onnx package, and it is the bundled model with batch 1."""
    import shutil
    root = str(tmp_path / "device")
    shutil.copytree(tiny_bundle[0], root)
    (words,) = _imagenet_lines(root)  # the in-graph model gets a reason instead
    flags = _flags(words)
    assert flags["model"] == "jetson-inference/tiny_eca.batch1.onnx"
    assert not os.path.exists(os.path.join(root, flags["model"]))
    assert derive_batch1_copies(root) == [flags["model"]]
    copy, original = _session(os.path.join(root, flags["model"])), _session(os.path.join(root, "tiny_eca.onnx"))
    assert (flags["input_blob"], flags["output_blob"]) == (copy.get_inputs()[0].name, copy.get_outputs()[0].name)
    assert copy.get_inputs()[0].shape == [1, 3, 32, 32]  # imagenet builds without an optimization profile
    assert len(open(os.path.join(root, flags["labels"])).read().splitlines()) == 1000
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(copy.run(None, {"input": x})[0], original.run(None, {"input": x})[0])


def test_digits_bundle_runs_the_smallest_float_model(digits_bundle):
    """FP32 and FP16 are one network to imagenet (it builds FP16 from either): one line, for the smaller file;
    the Q/DQ model gets the reason."""
    root = digits_bundle[0]
    (words,) = _imagenet_lines(root)
    fp16 = next(model for model in build_lines(root) if ".fp16." in model)
    assert _flags(words)["model"] == "jetson-inference/{}.batch1.onnx".format(fp16[:-len(".onnx")])
    readme = open(os.path.join(root, "README.md")).read()
    assert "is a Q/DQ INT8 model, and imagenet builds its own engine in FP16" in readme
    assert "the line for {} serves both".format(fp16) in readme


def test_why_imagenet_cannot_run_a_model(tiny_bundle):
    root = tiny_bundle[0]
    lines = build_lines(root)
    plain = describe_model(root, " ".join(lines["tiny_eca.onnx"]))
    assert why_not(plain) == ""
    in_graph = describe_model(root, " ".join(lines["tiny_in_graph.onnx"]))
    assert "normalized twice" in why_not(in_graph) and "normalized twice" in open(
        os.path.join(root, "README.md")).read()
    other_mean = dataclasses.replace(plain, preprocess=PreprocessSpec(input_size=32, resize_size=37, mean=(0.5,) * 3,
                                                                      std=(0.5,) * 3))
    assert "hard-coded" in why_not(other_mean)
