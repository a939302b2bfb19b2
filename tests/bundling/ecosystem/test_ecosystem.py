"""End to end: `cli.py bundle` on the digits models writes every consumer's files, and the README says how to use
them."""
import os

from tests.bundling.ecosystem.bundle_files import build_lines


def test_digits_bundle_carries_every_consumer(digits_bundle):
    root, _, payload = digits_bundle
    files = set(payload["files"])
    for model in build_lines(root):
        stem = model[:-len(".onnx")]
        name = stem.replace(".", "_")
        for path in ("deepstream/{}.txt".format(stem), "deepstream/{}_labels.txt".format(stem),
                     "triton/{}_onnx/config.pbtxt".format(name), "triton/{}_onnx/labels.txt".format(name),
                     "triton/{}_onnx/1/model.onnx".format(name), "triton/{}_trt/config.pbtxt".format(name)):
            assert path in files and os.path.isfile(os.path.join(root, path)), path
    readme = open(os.path.join(root, "README.md")).read()
    section = readme[readme.index("## 4. DeepStream, Triton and jetson-inference"):]
    for text in ("nvinfer config-file-path=deepstream/eca_digits.txt", "tritonserver --model-repository=triton",
                 "perf_analyzer -m eca_digits_trt --concurrency-range 1:4", "outgrows", "no server of its own",
                 "imagenet --model=jetson-inference/", "--normalize-in-graph"):
        assert text in section, text
    script = open(os.path.join(root, "build_engines.sh")).read()
    assert script.index("python3 -m deploy.build") < script.index("# Triton:")
    assert "cp eca_digits.fp32.engine triton/eca_digits_trt/1/model.plan" in script
