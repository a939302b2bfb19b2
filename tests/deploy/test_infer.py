"""deploy.infer on the CPU: the ONNX Runtime path end to end on the shipped photos, labels, batching, sources."""
import json
import os
import sys

import numpy as np
import pytest

from deploy import infer
from deploy.images import SAMPLES_DIR, sample_images
from deploy.jetson import is_jetson, parse_nvpmodel
from deploy.metadata import read_model_info
from deploy.preprocess import preprocess_file
from deploy.runners import OnnxRuntimeRunner
from deploy.runners.base import BaseRunner, TensorMeta


def run_json(capsys, *argv):
    assert infer.main(list(argv) + ["--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return lines[:-1], lines[-1]["summary"]


def test_onnx_model_on_the_samples(tiny_imagenet_onnx, capsys):
    results, summary = run_json(capsys, tiny_imagenet_onnx, SAMPLES_DIR, "--top-k", "3", "--batch", "4")
    paths = sample_images()
    assert [r["path"] for r in results] == paths and len(paths) == 9

    # The same preprocessing and model, run directly, give the same top-3 and probabilities.
    spec = read_model_info(tiny_imagenet_onnx).preprocess
    with OnnxRuntimeRunner(tiny_imagenet_onnx) as runner:
        logits = runner.infer({"input": np.stack([preprocess_file(p, spec) for p in paths])})["logits"]
    probabilities = infer.softmax(logits)
    classes = infer.load_labels(1000)
    for row, result in enumerate(results):
        expected = np.argsort(-probabilities[row], kind="stable")[:3]
        assert result["topk"] == [int(i) for i in expected]
        assert result["names"] == [classes[i] for i in expected]
        np.testing.assert_allclose(result["probs"], probabilities[row][expected], atol=1e-5)

    assert summary["images"] == 9 and summary["batch_size"] == 4
    assert summary["runner"]["providers"] == ["CPUExecutionProvider"]
    latency = summary["latency"]
    assert latency["runs"] == 3 and latency["batch_size"] == 4 and 0 < latency["p50_ms"] <= latency["p99_ms"] and latency["images_per_s"] > 0
    assert summary["compute"] is None  # ONNX Runtime has no separate device clock
    assert ("jetson" in summary) == is_jetson()


def test_text_output_and_imagenet_names(tiny_imagenet_onnx, capsys):
    assert infer.main([tiny_imagenet_onnx, sample_images()[2], "--top-k", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("chelsea.jpg") and out[1].lstrip().startswith("1.") and out[2].lstrip().startswith("2.")
    assert out[-1].startswith("1 images, 1 timed batches of 1: latency mean")


def test_labels_file(tiny_imagenet_onnx, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join("class_{}".format(i) for i in range(1000)) + "\n\n")
    results, _ = run_json(capsys, tiny_imagenet_onnx, sample_images()[0], "--labels", str(labels))
    assert results[0]["names"] == ["class_{}".format(i) for i in results[0]["topk"]]
    labels.write_text("cat\ndog\n")
    assert infer.main([tiny_imagenet_onnx, sample_images()[0], "--labels", str(labels)]) == 2
    assert "labels file {} has 2 names but the model has 1000 classes".format(labels) in capsys.readouterr().err


def test_label_sources():
    names = infer.load_labels(1000)
    assert (len(names), names[0], names[281]) == (1000, "tench", "tabby")
    assert infer.load_labels(10) is None


class FakeStaticRunner(BaseRunner):
    """A model with a static batch of 4 whose logits encode the mean of each image."""

    backend = "fake"

    def activate_impl(self):
        self.batches = []

    def deactivate_impl(self):
        pass

    def get_input_metadata(self):
        return {"input": TensorMeta((4, 3, 32, 32), np.dtype(np.float32))}

    def get_output_metadata(self):
        return {"logits": TensorMeta((4, 10), np.dtype(np.float32))}

    def infer_impl(self, feed_dict):
        batch = feed_dict["input"]
        self.batches.append(batch.shape[0])
        logits = np.zeros((batch.shape[0], 10), np.float32)
        logits[np.arange(batch.shape[0]), (np.abs(batch.mean(axis=(1, 2, 3))) * 1000).astype(int) % 10] = 10
        return {"logits": logits}


def test_static_batch_pads_the_last_batch(tiny_imagenet_onnx):
    spec = read_model_info(tiny_imagenet_onnx).preprocess
    frames = list(infer.image_frames([SAMPLES_DIR]))
    with FakeStaticRunner() as runner:
        name, batch, static = infer.choose_batch(runner, None)
        timed = []
        results = list(infer.classify(runner, iter(frames), spec, name, batch, static, 1, None, timed))
        assert (batch, static) == (4, True)
        assert runner.batches == [4, 4, 4, 4]  # one warm-up + three batches, the last padded from 1 image to 4
        assert len(timed[0].wall()) == 3 and len(runner.inference_times) == 4
    singles = []
    for _, image in frames:
        value = np.abs(infer.preprocess_image(image, spec).mean()) * 1000
        singles.append(int(value) % 10)
    assert [r["topk"][0] for r in results] == singles and [r["names"] for r in results][0] == [str(singles[0])]


def test_bgr_frames_become_rgb():
    frame = np.zeros((2, 3, 3), np.uint8)
    frame[..., 0] = 255  # blue in OpenCV's BGR order
    image = infer.bgr_to_pil(frame)
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (0, 0, 255)
    assert infer.bgr_to_pil(np.full((2, 2), 7, np.uint8)).getpixel((1, 1)) == (7, 7, 7)


def test_video_without_opencv_is_one_line(tiny_imagenet_onnx, tmp_path, monkeypatch, capsys):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00" * 16)
    monkeypatch.setitem(sys.modules, "cv2", None)
    assert infer.main([tiny_imagenet_onnx, "--video", str(video)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: OpenCV (cv2) is required to read --video")
    assert infer.main([tiny_imagenet_onnx, "--gst", "videotestsrc ! appsink", "--max-frames", "3"]) == 2
    assert "read --gst" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    ([], "give image files/folders, or exactly one of"),
    ([SAMPLES_DIR, "--camera", "0"], "give image files/folders, or exactly one of"),
    ([SAMPLES_DIR, "--top-k", "0"], "--top-k must be at least 1"),
])
def test_bad_sources_and_options(tiny_imagenet_onnx, capsys, argv, message):
    assert infer.main([tiny_imagenet_onnx] + argv) == 2
    assert message in capsys.readouterr().err


def test_max_frames_and_missing_model(tiny_imagenet_onnx, tmp_path, capsys):
    results, summary = run_json(capsys, tiny_imagenet_onnx, SAMPLES_DIR, "--max-frames", "2")
    assert len(results) == 2 and summary["images"] == 2
    assert infer.main([str(tmp_path / "nope.onnx"), SAMPLES_DIR]) == 2
    assert "no such model file" in capsys.readouterr().err


def test_engine_without_tensorrt_is_one_line(tiny_imagenet_onnx, tmp_path, monkeypatch, capsys):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    metadata = read_model_info(tiny_imagenet_onnx).to_metadata()
    (tmp_path / "m.engine.json").write_text(json.dumps({"metadata": metadata}))
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert infer.main([str(engine), SAMPLES_DIR]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "TensorRT's Python package (tensorrt) is required to run TensorRT engines" in err[0]
    assert infer.main([tiny_imagenet_onnx, SAMPLES_DIR, "--trt"]) == 2
    assert "required to build the engine for --trt" in capsys.readouterr().err


def test_jetson_detection_and_power_mode(tmp_path):
    model = tmp_path / "model"
    model.write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    missing = str(tmp_path / "no_release")
    assert is_jetson(release_path=missing, model_path=str(model))
    model.write_bytes(b"Raspberry Pi 4 Model B\x00")
    assert not is_jetson(release_path=missing, model_path=str(model))
    assert not is_jetson(release_path=missing, model_path=str(tmp_path / "absent"))
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R35 (release), REVISION: 4.1")
    assert is_jetson(release_path=str(release), model_path=str(model))
    assert parse_nvpmodel("NV Power Mode: MAXN\n0\n") == {"name": "MAXN", "id": 0}
    assert parse_nvpmodel("NVPM WARN: ...\nNV Power Mode: 15W\n2") == {"name": "15W", "id": 2}
    assert parse_nvpmodel("command not found") is None


# -- as users type it: options anywhere, accuracy on class folders, honest providers ------------------------------

def test_options_before_or_after_the_inputs(tiny_imagenet_onnx, capsys):
    args = infer.make_parser().parse_intermixed_args([tiny_imagenet_onnx, "--trt", "images/", "--top-k", "3"])
    assert args.inputs == ["images/"] and args.trt and args.top_k == 3
    for argv in (["--json", tiny_imagenet_onnx, SAMPLES_DIR, "--top-k", "2"],
                 [tiny_imagenet_onnx, "--top-k", "2", "--json", SAMPLES_DIR],
                 ["--top-k", "2", tiny_imagenet_onnx, SAMPLES_DIR, "--json"]):
        assert infer.main(argv) == 0
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert len(lines) == 10 and all(len(r["topk"]) == 2 for r in lines[:-1])


def _digit_tree(root, val_dir, per_class=3, names=None):
    """``root/<class>/`` with the first ``per_class`` held-out digits of each class; folders named by ``names``."""
    import shutil
    for digit in range(10):
        folder = os.path.join(str(root), names[digit] if names else str(digit))
        os.makedirs(folder)
        for name in sorted(os.listdir(os.path.join(val_dir, str(digit))))[:per_class]:
            shutil.copy(os.path.join(val_dir, str(digit), name), folder)
    return str(root)


def test_accuracy_on_an_imagefolder_tree(digits_eca_onnx, digits_split, tmp_path, capsys):
    tree = _digit_tree(tmp_path / "val", digits_split[1])
    results, summary = run_json(capsys, digits_eca_onnx, "--top-k", "1", tree)
    assert len(results) == 30 and all(r["label"] == int(r["path"].split(os.sep)[-2]) for r in results)
    assert all(len(r["topk"]) == 1 for r in results)  # --top-k is what is printed; top-5 is still scored
    accuracy = summary["accuracy"]
    assert accuracy["images"] == 30
    assert accuracy["top1"] == pytest.approx(np.mean([r["topk"][0] == r["label"] for r in results]))
    assert 0.9 <= accuracy["top1"] <= accuracy["top5"] <= 1.0

    assert infer.main([digits_eca_onnx, tree, "--top-k", "1"]) == 0
    out = capsys.readouterr().out
    assert "accuracy on 30 labeled images: top-1 {:.2%}, top-5 {:.2%}".format(accuracy["top1"],
                                                                                 accuracy["top5"]) in out


def test_class_folders_matched_by_name(digits_eca_onnx, digits_split, tmp_path, capsys):
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    tree = _digit_tree(tmp_path / "named", digits_split[1], per_class=1, names=names)
    for folder in names[5:]:  # a subset of the classes: only the names can place them
        import shutil
        shutil.rmtree(os.path.join(tree, folder))
    labels = tmp_path / "names.txt"
    labels.write_text("\n".join(names) + "\n")
    results, summary = run_json(capsys, digits_eca_onnx, tree, "--labels", str(labels))
    assert [r["label"] for r in results] == [4, 1, 3, 2, 0]  # folders four, one, three, two, zero
    assert summary["accuracy"]["images"] == 5

    assert infer.main([digits_eca_onnx, tree, "--json"]) == 0
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert lines[-1]["summary"]["accuracy"] is None and "label" not in lines[0]
    assert "match neither the model's 10 class names nor its class indices" in captured.err


def test_missing_provider_warns_and_strict_fails(tiny_imagenet_onnx, capsys):
    image = sample_images()[0]
    assert infer.main([tiny_imagenet_onnx, "--providers", "cuda,cpu", image]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == ["warning: ONNX Runtime cannot run CUDAExecutionProvider here; running on CPUExecutionProvider "
                   "(--strict-providers makes this an error)"]
    assert infer.main([tiny_imagenet_onnx, "--providers", "cuda", "--strict-providers", image]) == 2
    assert "error: ONNX Runtime could not start CUDAExecutionProvider" in capsys.readouterr().err
    assert infer.main([tiny_imagenet_onnx, "--providers", "cdua", image]) == 2
    assert "error: unknown ONNX Runtime provider cdua" in capsys.readouterr().err
    assert infer.main([tiny_imagenet_onnx, "--providers", "cpu", "--strict-providers", image]) == 0
    assert capsys.readouterr().err == ""
