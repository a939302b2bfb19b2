"""A PASS means these bytes, and the proof obeys its own rules.

The digits bundle (FP32, FP16 and INT8 ECA-ResNet-18) copied to a temporary folder, then handled the way a careless
user might: a model swapped, renamed or re-saved with identical logits, labels swapped, sha256s zeroed, the manifest
deleted, an engine from elsewhere. Every case is a FAIL naming the file and both digests. Bars edited in the proof
(below the floors, duplicated, a floor above what a model reached) are refused before anything runs (exit 2).
"""
import json
import os
import shutil

import numpy as np
import pytest

from deploy import check
from deploy.fileio import sha256_file
from deploy.manifest import MANIFEST, REFERENCE_FILE
from deploy.reference import load_reference
from tests.blocking import run_blocked
from tests.deploy.device_check import BLOCKED, copy_bundle, run_check

FP32, FP16, INT8 = "eca_digits.onnx", "eca_digits.fp16.onnx", "eca_digits.int8.tensorrt.onnx"




def failed_report(device, tmp_path, *args):
    proc = run_check(device, tmp_path, *args)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    report = json.loads(proc.stdout)
    assert report["passed"] is False
    return report


def changed_files(report):
    return {entry["name"]: entry for entry in report["files"]["changed"]}


def artifact(report, name):
    return next(a for a in report["artifacts"] if a["name"] == name)


# -- what the bundle binds -----------------------------------------------------------------------------------------

def test_the_proof_and_manifest_record_every_bound_file(digits_bundle, tmp_path):
    root = digits_bundle[0]
    reference = load_reference(os.path.join(root, REFERENCE_FILE))
    with open(os.path.join(root, MANIFEST)) as handle:
        manifest = json.load(handle)
    assert manifest["files"] == reference.files
    names = set(reference.files)
    for model in (FP32, FP16, INT8):
        assert {model, model + ".json"} <= names
        assert reference.files[model] == reference.bar_named(model).sha256 == sha256_file(os.path.join(root, model))
    assert "labels.txt" in names and set(reference.probe_files) <= names
    copies = [name for name in names if name.startswith(("deepstream/", "triton/")) and name.endswith("labels.txt")]
    assert copies, sorted(names)  # the consumers' label copies are bound like the bundle's own labels
    assert not [name for name in names if name.startswith(("deploy/", "samples/")) or name in (
        "README.md", "build_engines.sh", MANIFEST, REFERENCE_FILE)]
    proc = run_check(copy_bundle(root, tmp_path), tmp_path)
    assert proc.returncode == 0, proc.stderr
    files = json.loads(proc.stdout)["files"]
    assert files == {"files": len(names), "status": "PASS", "changed": [], "reasons": []}


# -- swapped, renamed, re-saved, relabelled ------------------------------------------------------------------------

@pytest.mark.parametrize("source,target", [(INT8, FP16), (FP16, FP32), (FP32, INT8)])
def test_a_model_copied_over_another_fails_naming_both_digests(digits_bundle, tmp_path, source, target):
    device = copy_bundle(digits_bundle[0], tmp_path)
    recorded, found = sha256_file(os.path.join(device, target)), sha256_file(os.path.join(device, source))
    shutil.copy(os.path.join(device, source), os.path.join(device, target))
    report = failed_report(device, tmp_path)
    assert changed_files(report)[target] == {"name": target, "recorded": recorded, "found": found}
    reason = next(r for r in report["files"]["reasons"] if r.startswith(target))
    assert recorded in reason and found in reason and "rebuild it with `eca-deploy bundle`" in reason
    swapped = artifact(report, target)
    assert swapped["status"] == "FAIL"
    assert any(r.startswith("it is not the bundled model: sha256 " + found) for r in swapped["reasons"])


def test_a_model_renamed_over_another_fails_and_the_missing_one_too(digits_bundle, tmp_path):
    device = copy_bundle(digits_bundle[0], tmp_path)
    os.replace(os.path.join(device, FP16), os.path.join(device, FP32))  # the FP16 file under the FP32 name
    report = failed_report(device, tmp_path)
    assert set(changed_files(report)) == {FP32, FP16}
    assert changed_files(report)[FP16]["found"] == ""
    assert artifact(report, FP32)["status"] == "FAIL" and artifact(report, FP16)["status"] == "FAIL"
    assert any("is missing" in r and FP16 in r for r in report["files"]["reasons"])


@pytest.mark.parametrize("model", [FP32, INT8])
def test_a_resaved_model_with_identical_logits_fails_on_its_bytes(digits_bundle, tmp_path, model):
    import onnx
    device = copy_bundle(digits_bundle[0], tmp_path)
    path = os.path.join(device, model)
    proto = onnx.load(path)
    proto.doc_string = "re-saved"  # what any round trip through an editor or converter may change
    onnx.save(proto, path)
    report = failed_report(device, tmp_path)
    resaved = artifact(report, model)
    assert resaved["status"] == "FAIL"
    assert resaved["top1_agreement"] == resaved["bar"]["measured_top1_agreement"]  # the numbers alone would pass
    assert [r.split(":")[0] for r in resaved["reasons"]] == ["it is not the bundled model"]
    assert set(changed_files(report)) == {model}


@pytest.mark.parametrize("labels", ["labels.txt", "deepstream", "triton"])
def test_relabelled_classes_fail(digits_bundle, tmp_path, labels):
    device = copy_bundle(digits_bundle[0], tmp_path)
    names = sorted(load_reference(os.path.join(device, REFERENCE_FILE)).files)
    name = labels if labels == "labels.txt" else next(n for n in names if n.startswith(labels + "/")
                                                       and n.endswith("labels.txt"))
    path = os.path.join(device, *name.split("/"))
    with open(path) as handle:
        text = handle.read()
    separator = ";" if ";" in text else "\n"
    classes = text.rstrip("\n").split(separator)
    classes[3], classes[5] = classes[5], classes[3]  # deploy.infer would call every 3 a 5
    with open(path, "w") as handle:
        handle.write(separator.join(classes) + "\n")
    report = failed_report(device, tmp_path)
    assert set(changed_files(report)) == {name}
    assert all(a["status"] == "PASS" for a in report["artifacts"])  # the models are fine; the bundle is not


def test_zeroed_digests_and_a_deleted_manifest_free_nothing(digits_bundle, tmp_path):
    device = copy_bundle(digits_bundle[0], tmp_path)
    for model in (FP32, FP16, INT8):
        sidecar = os.path.join(device, model + ".json")
        with open(sidecar) as handle:
            payload = json.load(handle)
        payload["sha256"] = "0" * 64
        with open(sidecar, "w") as handle:
            json.dump(payload, handle)
    with open(os.path.join(device, MANIFEST)) as handle:
        manifest = json.load(handle)
    manifest["files"] = {name: "0" * 64 for name in manifest["files"]}
    with open(os.path.join(device, MANIFEST), "w") as handle:
        json.dump(manifest, handle)
    report = failed_report(device, tmp_path)
    assert {model + ".json" for model in (FP32, FP16, INT8)} <= set(changed_files(report))
    assert any("the manifest was edited" in r for r in report["files"]["reasons"])


@pytest.mark.parametrize("manifest", ["deleted", "no models"])
def test_a_model_the_proof_names_cannot_be_deleted(digits_bundle, tmp_path, manifest):
    device = copy_bundle(digits_bundle[0], tmp_path)
    os.remove(os.path.join(device, INT8))
    path = os.path.join(device, MANIFEST)
    if manifest == "deleted":
        os.remove(path)
    else:
        with open(path) as handle:
            payload = json.load(handle)
        payload["models"], payload["files"] = [], {}
        with open(path, "w") as handle:
            json.dump(payload, handle)
    report = failed_report(device, tmp_path)
    missing = artifact(report, INT8)
    assert missing["status"] == "FAIL" and missing["reasons"][0].startswith("the bundle's proof holds its bar")
    assert changed_files(report)[INT8]["found"] == ""


def test_a_replaced_probe_fails_even_the_preprocessing_check(digits_bundle, tmp_path):
    device = copy_bundle(digits_bundle[0], tmp_path)
    probes = load_reference(os.path.join(device, REFERENCE_FILE)).probe_files
    shutil.copy(os.path.join(device, probes[1]), os.path.join(device, probes[0]))
    report = failed_report(device, tmp_path, "--preprocessing-only")
    assert set(changed_files(report)) == {probes[0]} and report["files"]["files"] == len(probes)


def _engine(device, name, source_sha256):
    """A stand-in engine file with a sidecar naming ``source_sha256`` as the model it was built from."""
    with open(os.path.join(device, FP32 + ".json")) as handle:
        sidecar = json.load(handle)
    sidecar["source_onnx"] = {"path": "/elsewhere/model.onnx", "sha256": source_sha256}
    with open(os.path.join(device, name + ".json"), "w") as handle:
        json.dump(sidecar, handle)
    open(os.path.join(device, name), "wb").close()


def test_an_engine_must_name_a_bundled_model_as_its_source(digits_bundle, tmp_path):
    device = copy_bundle(digits_bundle[0], tmp_path)
    _engine(device, "elsewhere.engine", "ab" * 32)
    _engine(device, "eca_digits.engine", sha256_file(os.path.join(device, FP32)))
    proc = run_blocked(["-m", "deploy.check", "--json"], str(tmp_path), BLOCKED + ["tensorrt"], cwd=device)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    foreign, built_here = artifact(report, "elsewhere.engine"), artifact(report, "eca_digits.engine")
    assert foreign["status"] == "FAIL"  # known without TensorRT: no model of this bundle made it
    assert "its sidecar names sha256 " + "ab" * 32 + " as the model it was built from" in foreign["reasons"][0]
    assert built_here["status"] == "SKIP"  # its numbers wait for TensorRT


# -- the proof obeys its own rules ---------------------------------------------------------------------------------

def _rewrite(path, **changes):
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    for name, change in changes.items():
        arrays[name] = change(arrays[name].copy()) if callable(change) else change
    with open(path, "wb") as handle:
        np.savez_compressed(handle, **arrays)


def _set(index, value):
    def change(array):
        array[index] = value
        return array
    return change


def _duplicate_first(array):
    return np.concatenate([array, array[:1]])


EDITED = {
    "top-1 bar 0%": ({"bar_required_top1": _set(2, 0.0)}, "field bar_required_top1 of"),
    "cosine bar -1": ({"bar_required_cosine": _set(2, -1.0)}, "field bar_required_cosine of"),
    "top-1 bar 50%": ({"bar_required_top1": _set(2, 50.0)}, "field bar_required_top1 of"),
    "top-1 bar 1 point lower": ({"bar_required_top1": lambda a: a - 1.0}, "but its measured figures give"),
    "allowance doubled": ({"bar_allowance_images": lambda a: a * 2}, "field bar_allowance_images of"),
    "measured below the floor": ({"bar_measured_top1": _set(2, 50.0)}, "below the floor of a working"),
    # every digits model may agree on all 32 images: then the floor contradicts the bars instead of the figures
    "min_agreement above a model": ({"min_agreement": np.array(99.99)}, ("field min_agreement is 99.99%, above",
                                                                          "field bar_required_top1 of")),
    "min_agreement 200%": ({"min_agreement": np.array(200.0)}, "not a percentage"),
    "bar sha256 zeroed": ({"bar_sha256": lambda a: np.array(["0" * 64] * len(a))}, "but file_sha256 records"),
    "file sha256 emptied": ({"file_sha256": lambda a: np.array([""] * len(a))}, "must hold sha256 digests"),
}
DUPLICATED = ("bar_names", "bar_sha256", "bar_precisions", "bar_measured_top1", "bar_measured_cosine",
              "bar_required_top1", "bar_required_cosine", "bar_allowance_images", "bar_kernel_flips",
              "bar_other_order_cosine", "bar_cpu_classes", "bar_cpu_margins", "bar_image_noise")


@pytest.mark.parametrize("edit", sorted(EDITED) + ["duplicate bar at 0%"])
def test_an_edited_bar_is_refused(digits_bundle, tmp_path, edit):
    device = copy_bundle(digits_bundle[0], tmp_path)
    path = os.path.join(device, REFERENCE_FILE)
    if edit == "duplicate bar at 0%":
        changes, expected = {name: _duplicate_first for name in DUPLICATED}, "names {} twice".format(FP32)
        _rewrite(path, **changes)
        _rewrite(path, bar_required_top1=_set(-1, 0.0))
    else:
        changes, expected = EDITED[edit]
        _rewrite(path, **changes)
    proc = run_check(device, tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert any(text in lines[0] for text in ((expected,) if isinstance(expected, str) else expected)), lines
    assert "against the proof's own rules" in lines[0] or "is damaged" in lines[0]


def test_consistently_zeroed_digests_load_but_fail_every_file(digits_bundle, tmp_path):
    device = copy_bundle(digits_bundle[0], tmp_path)
    _rewrite(os.path.join(device, REFERENCE_FILE), bar_sha256=lambda a: np.array(["0" * 64] * len(a)),
             file_sha256=lambda a: np.array(["0" * 64] * len(a)))
    os.remove(os.path.join(device, MANIFEST))
    report = failed_report(device, tmp_path)
    assert len(report["files"]["changed"]) == report["files"]["files"]
    assert all(a["status"] == "FAIL" for a in report["artifacts"])


def test_text_from_the_proof_is_printed_escaped(digits_bundle, tmp_path, capsys):
    device = copy_bundle(digits_bundle[0], tmp_path)
    _rewrite(os.path.join(device, REFERENCE_FILE), arch=np.array("eca\x1b[2J\nPASS"),
             source=np.array("val\rall PASS"))
    assert check.main([device]) == 1
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out
    assert "eca\\x1b[2J\\nPASS" in out and "val\\rall PASS" in out


def test_only_plain_names_inside_the_bundle_are_bound():
    from deploy.reference import bundle_path_ok
    assert all(bundle_path_ok(name) for name in ("m.onnx", "proof/00_3.png", "triton/m_onnx/1/model.onnx", "é.txt"))
    assert not any(bundle_path_ok(name) for name in ("", "/etc/passwd", "../m.onnx", "a/../../b", "a\\b", "a//b",
                                                     "a/", "m\n.onnx", "\x1b[2Jm.onnx", "m\u2028.onnx"))
