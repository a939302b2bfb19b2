"""Bundles: what goes in, the build script, and the bundle unpacked elsewhere running deploy.infer by itself."""
import json
import os
import sys
import tarfile

import numpy as np
import pytest

from bundling.bundle import bundle
from deploy.errors import UserError
from deploy.metadata import read_onnx_metadata
from tests.blocking import attempts_from_project, run_blocked


@pytest.fixture()
def artifacts(tiny_imagenet_onnx, tmp_path):
    from deploy.calib_cache import write_calibration_cache
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join("label{}".format(i) for i in range(1000)) + "\n")
    cache = write_calibration_cache(str(tmp_path / "tiny_eca.cache"), {"input": 0.02, "/conv1/Conv_output_0": 0.1},
                                    "10.3.0")
    return tiny_imagenet_onnx, str(labels), cache


def test_folder_bundle_contents(artifacts, tmp_path):
    model, labels, cache = artifacts
    result = bundle([model, labels, cache], tmp_path / "out" / "jetson", max_batch=4)
    root = result.output
    assert result.kind == "folder" and result.models == ["tiny_eca.onnx"] and result.caches == ["tiny_eca.cache"]
    assert any("tiny_eca.cache is stamped for TensorRT 10.3.0" in note for note in result.notes)
    for name in ("tiny_eca.onnx", "tiny_eca.onnx.json", "tiny_eca.cache", "labels.txt", "README.md",
                 "build_engines.sh", "deploy/infer.py", "deploy/build.py", "deploy/trt/build.py",
                 "deploy/data/imagenet_classes.tsv", "deploy/samples/chelsea.jpg"):
        assert name in result.files and os.path.isfile(os.path.join(root, name)), name
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in result.files)
    assert oct(os.stat(root).st_mode & 0o777) == oct(0o755)

    sidecar = json.load(open(os.path.join(root, "tiny_eca.onnx.json")))
    assert sidecar["metadata"] == read_onnx_metadata(model)
    assert sidecar["inputs"] == {"input": [None, 3, 32, 32]} and sidecar["precision"]["qdq"] is False

    script = open(os.path.join(root, "build_engines.sh")).read()
    command = "python3 -m deploy.build tiny_eca.onnx -o tiny_eca.fp32.engine --max-batch 4"
    assert result.build_commands == [command] and command in script
    lines = script.splitlines()
    jp6 = lines[lines.index("# JetPack 6, TensorRT 10.3: fp32 [STRONGLY_TYPED]") + 1]  # from the build plan
    assert "--stronglyTyped" in jp6 and "--int8" not in jp6 and "--maxShapes=input:4x3x32x32" in jp6
    assert "/usr/src/tensorrt/bin/trtexec --onnx=tiny_eca.onnx --saveEngine=tiny_eca.fp32.engine" in jp6
    assert "#   python3 -m deploy.build tiny_eca.onnx --implicit-int8 --calib-cache tiny_eca.cache" in lines
    assert "python3 -m deploy.infer tiny_eca.fp32.engine deploy/samples --labels labels.txt" in open(
        os.path.join(root, "README.md")).read()


def test_bundle_sidecar_serves_a_device_without_onnx(artifacts, tmp_path, monkeypatch):
    from deploy.onnx_info import inspect_onnx
    model, _, _ = artifacts
    root = bundle([model], tmp_path / "b").output
    bundled = os.path.join(root, "tiny_eca.onnx")
    expected = read_onnx_metadata(model)
    monkeypatch.setitem(sys.modules, "onnx", None)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert read_onnx_metadata(bundled) == expected
    assert inspect_onnx(bundled).inputs == {"input": (None, 3, 32, 32)}


def test_tarball_unpacked_elsewhere_runs_by_itself(artifacts, tmp_path):
    model, labels, _ = artifacts
    output = tmp_path / "dist" / "jetson.tar.gz"
    result = bundle([model, labels], output)
    assert result.kind == "tar.gz" and os.path.isfile(str(output))
    assert [p for p in os.listdir(str(output.parent)) if p != "jetson.tar.gz"] == []  # no temporaries left
    unpack = tmp_path / "device"
    with tarfile.open(str(output)) as tar:
        tar.extractall(str(unpack))
    root = str(unpack / "jetson")
    # Only the bundle is importable (PYTHONPATH = the bundle; the repository is not on the path), and torch
    # cannot be imported: the bundled deploy/ must run alone.
    proc = run_blocked(["-m", "deploy.infer", "tiny_eca.onnx", "deploy/samples", "--json", "--top-k", "2",
                        "--labels", "labels.txt", "--batch", "3"], str(tmp_path), ["torch", "models", "exporter"],
                       cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert attempts_from_project(proc.stderr, root) == []
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(lines) == 10 and lines[-1]["summary"]["images"] == 9
    assert all(r["path"].startswith("deploy/samples/") and r["names"][0] == "label{}".format(r["topk"][0])
               for r in lines[:-1])
    check = run_blocked(["-c", "import deploy, sys; print(deploy.__file__)"], str(tmp_path), [], cwd=root)
    assert check.stdout.strip() == os.path.join(root, "deploy", "__init__.py")


def test_bundle_refusals(artifacts, tmp_path):
    model, labels, _ = artifacts
    engine = tmp_path / "tiny.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(UserError, match="engines only run on the TensorRT version and GPU"):
        bundle([model, str(engine)], tmp_path / "x")
    weird = tmp_path / "notes.docx"
    weird.write_bytes(b"")
    with pytest.raises(UserError, match="cannot bundle this kind of file"):
        bundle([model, str(weird)], tmp_path / "x")
    with pytest.raises(UserError, match="at least one ONNX model"):
        bundle([labels], tmp_path / "x")
    (tmp_path / "twin").mkdir()
    twin = tmp_path / "twin" / os.path.basename(model)
    twin.write_bytes(b"")
    with pytest.raises(UserError, match="same file name"):
        bundle([model, str(twin)], tmp_path / "x")

    first = bundle([model], tmp_path / "again").output
    with pytest.raises(UserError, match="--force"):
        bundle([model], tmp_path / "again")
    open(os.path.join(first, "stale.txt"), "w").close()
    bundle([model, labels], tmp_path / "again", force=True)
    assert sorted(p for p in os.listdir(first) if not os.path.isdir(os.path.join(first, p))) == [
        "README.md", "build_engines.sh", "eca-deploy-bundle.json", "labels.txt", "tiny_eca.onnx",
        "tiny_eca.onnx.json"]
    assert not [p for p in os.listdir(str(tmp_path)) if p.endswith((".part", ".old"))]


# -- the proof a bundle carries (reference data) and the samples that fit its model -------------------------------

def test_digits_bundle_carries_reference_and_held_out_samples(digits_bundle, digits_split):
    root, models, payload = digits_bundle
    files = payload["files"]
    assert payload["reference"] == "reference.npz" and "reference.npz" in files
    # a 10-class model gets digits from --data as class folders, never the ImageNet photos
    assert payload["samples"] == "samples" and not any(f.startswith("deploy/samples/") for f in files)
    shipped = [f for f in files if f.startswith("samples/")]
    assert len(shipped) == 20 and all(f.split("/")[1] in [str(d) for d in range(10)] for f in shipped)
    for name in shipped:  # each sample sits in the folder of its own class
        digit, file_name = name.split("/")[1:]
        assert os.path.isfile(os.path.join(digits_split[1], digit, file_name.split("_", 1)[1]))
    # held out: none of them is among the reference inputs
    from deploy.reference import load_reference
    inputs = load_reference(os.path.join(root, "reference.npz")).inputs
    from deploy.metadata import read_model_info
    from deploy.preprocess import preprocess_file
    spec = read_model_info(models[0]).preprocess
    for name in shipped[:5]:
        sample = preprocess_file(os.path.join(root, name), spec)
        assert not any(np.array_equal(sample, row) for row in inputs)
    assert open(os.path.join(root, "labels.txt")).read().split() == [str(d) for d in range(10)]
    assert [c["precision"] for c in payload["cpu_checks"]] == ["fp32", "fp16", "int8"]
    assert all(c["top1_agreement"] == c["bar"]["measured_top1_agreement"] >= c["bar"]["required_top1_agreement"]
               for c in payload["cpu_checks"])

    readme = open(os.path.join(root, "README.md")).read()
    build, check, run = (readme.index(h) for h in ("## 1. Build", "## 2. Check", "## 3. Run"))
    assert build < check < run and "python3 -m deploy.check" in readme[check:run]
    assert "python3 -m deploy.infer eca_digits.onnx samples --labels labels.txt" in readme
    assert "deploy/samples" not in readme


def test_the_readme_example_scores_the_shipped_samples(digits_bundle, tmp_path):
    root = digits_bundle[0]
    proc = run_blocked(["-m", "deploy.infer", "--json", "eca_digits.onnx", "samples", "--labels", "labels.txt"],
                       str(tmp_path), ["torch"], cwd=root)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    accuracy = lines[-1]["summary"]["accuracy"]
    assert accuracy["images"] == 20 and accuracy["top1"] >= 0.9 and accuracy["top5"] >= accuracy["top1"]
    assert all(r["label"] == int(r["path"].split("/")[1]) for r in lines[:-1])


def test_reference_needs_images_that_fit_the_model(digits_eca_onnx, digits_eca_checkpoint, tmp_path):
    from benchmark.bundle_reference import make_bundle_reference
    with pytest.raises(UserError, match="10 classes, so the ImageNet sample photos prove nothing"):
        make_bundle_reference([digits_eca_onnx], weights=digits_eca_checkpoint)
    with pytest.raises(UserError, match="give it with --weights"):
        make_bundle_reference([digits_eca_onnx], data_dir=str(tmp_path))
    other = _tiny_checkpoint(tmp_path, num_classes=10)
    with pytest.raises(UserError, match="is not the checkpoint the models were exported from"):
        make_bundle_reference([digits_eca_onnx], weights=other, data_dir=str(tmp_path))


def _tiny_checkpoint(tmp_path, num_classes):
    import models
    from tests.digits import save_state_dict
    model = models.create_model("eca_resnet18", num_classes=num_classes, stem_width=16)
    return save_state_dict(model, str(tmp_path / "tiny_{}.pth".format(num_classes)))


def test_imagenet_model_without_data_uses_the_photos(tmp_path):
    """A 1000-class model's reference inputs are the shipped photos (unlabeled), and the bundle keeps them."""
    from benchmark.bundle_reference import make_bundle_reference
    from deploy.images import sample_images
    from exporter import export_model
    weights = _tiny_checkpoint(tmp_path, num_classes=1000)
    model = str(tmp_path / "tiny.onnx")
    export_model("eca_resnet18", model, weights=weights, input_size=32, do_simplify=False, parity_batch_sizes=(1,))
    proof = make_bundle_reference([model], weights=weights)
    assert len(proof.data.inputs) == len(sample_images()) and proof.data.labels is None and proof.samples == []
    result = bundle([model], tmp_path / "b", proof=proof)
    assert result.samples == "deploy/samples" and result.reference == "reference.npz"
    assert "python3 -m deploy.infer tiny.fp32.engine deploy/samples" in open(os.path.join(result.output, "README.md")).read()


def test_bundle_without_proof_has_no_reference(tiny_imagenet_onnx, tmp_path):
    result = bundle([tiny_imagenet_onnx], tmp_path / "plain")
    assert result.reference is None and "reference.npz" not in result.files
    assert "made with --no-reference" in open(os.path.join(result.output, "README.md")).read()


def test_random_weights_that_cannot_be_rebuilt(tiny_imagenet_onnx):
    """The tiny model's narrow stem is not in its metadata: PyTorch cannot rebuild it, and the bundle says so."""
    from benchmark.bundle_reference import make_bundle_reference
    with pytest.raises(UserError, match="random weights .* does not give their logits"):
        make_bundle_reference([tiny_imagenet_onnx], num_images=2)


def test_the_device_reads_every_member_the_bundle_writes(digits_bundle):
    """The reader loads only the members it knows (a proof's unknown arrays are never loaded), so every member the
    writer adds must be known to it, or the device would call a fresh bundle damaged."""
    import numpy as np

    from deploy.manifest import REFERENCE_FILE
    from deploy.reference import REFERENCE_MEMBERS
    with np.load(os.path.join(digits_bundle[0], REFERENCE_FILE), allow_pickle=False) as data:
        assert set(data.files) <= REFERENCE_MEMBERS
