"""Every file is capped before it is read, shapes are checked before arrays are expanded, and unknown members of a
proof are never loaded: a hostile file costs no memory before its refusal (issue 29, round 4). The large files here
are sparse (truncate, or a zip member whose zeros are a hole), so each case takes well under a second; peak memory
is that of a child process, measured with /usr/bin/time."""
import io
import os
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import onnx
import pytest

from tests.faults.conftest import assert_user_error, run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GB = 1000 ** 3
# What a refusal may cost: the interpreter, numpy and onnx(runtime) imported, nothing of the file.
REFUSAL_RSS = 400 << 20
TIME = "/usr/bin/time"


def peak_rss(code: str, cwd=None):
    """(exit code, output, peak RSS in bytes) of ``python -c code`` in a child process."""
    if not os.path.exists(TIME):
        pytest.skip("no /usr/bin/time to measure a child's peak memory")
    proc = subprocess.run([TIME, "-f", "maxrss=%M", sys.executable, "-c", code], cwd=cwd or ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=120)
    rss = int(proc.stderr.strip().splitlines()[-1].split("=")[1]) * 1024
    return proc.returncode, proc.stdout + proc.stderr, rss


def sparse_file(path, size: int, head: bytes = b"") -> str:
    with open(str(path), "wb") as handle:
        handle.write(head)
        handle.truncate(size)
    return str(path)


# -- a zip whose big members are holes ---------------------------------------------------------------------------

def _npy_header(shape, dtype) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                  "fortran_order": False, "shape": tuple(shape)})
    return buffer.getvalue()


HEADER_ONLY = "header only"
CRC_UP_TO = 200 * 10 ** 6  # members up to this size get their true CRC, so a reader that loads them succeeds


def _zeros_crc(head: bytes, size: int) -> int:
    crc, left, block = zlib.crc32(head), size - len(head), bytes(1 << 24)
    while left > 0:
        crc = zlib.crc32(block[:min(left, len(block))], crc)
        left -= len(block)
    return crc


def sparse_npz(path, members) -> str:
    """A stored (uncompressed) zip of ``members``: name -> bytes, or (shape, dtype) for an .npy member whose data
    is a hole of the declared size, or (shape, dtype, HEADER_ONLY) for one that holds its header alone."""
    entries, offset = [], 0
    with open(str(path), "wb") as handle:
        for name, member in members.items():
            filename = (name + ".npy").encode()
            if isinstance(member, bytes):
                head, size, crc = member, len(member), zlib.crc32(member)
            else:
                shape, dtype = member[:2]
                head = _npy_header(shape, dtype)
                # a third item, HEADER_ONLY: the member stops after its header, like a compressed bomb whose few
                # stored bytes declare gigabytes; the reader must refuse it from the header alone
                size = len(head) + (0 if member[2:] else int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize)
                crc = _zeros_crc(head, size) if size < CRC_UP_TO else 0
            handle.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0x21, crc, size, size,
                                     len(filename), 0) + filename)
            handle.write(head)
            handle.seek(size - len(head), os.SEEK_CUR)
            entries.append((filename, crc, size, offset))
            offset = handle.tell()
        directory = b"".join(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0x21, crc, size, size,
                                         len(filename), 0, 0, 0, 0, 0, start) + filename
                             for filename, crc, size, start in entries)
        handle.write(directory)
        handle.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(directory),
                                 offset, 0))
    return str(path)


@pytest.fixture()
def proof_members(tmp_path):
    """The members of a real, small reference.npz (8 images at 32 px), as npy bytes by name."""
    from bundling.proof import save_reference
    from deploy.preprocess import PreprocessSpec
    from deploy.reference import ReferenceData, bar_from_measured
    spec = PreprocessSpec.for_input_size(32)
    pixels = np.random.RandomState(0).randint(0, 256, size=(8, 32, 32, 3)).astype(np.uint8)
    from deploy.preprocess import input_from_pixels
    logits = np.eye(8, 10, dtype=np.float32)
    reference = ReferenceData(inputs=input_from_pixels(pixels, spec), logits=logits, spec=spec, arch="eca_resnet18",
                              bars=[bar_from_measured("m.onnx", "0" * 64, "fp32", 100.0, 1.0, 8, cpu_logits=logits)],
                              files={"m.onnx": "0" * 64})
    path = str(tmp_path / "good.npz")
    save_reference(path, reference)
    with zipfile.ZipFile(path) as archive:
        return {name[:-4]: archive.read(name) for name in archive.namelist()}


LOAD = "from deploy.reference import load_reference\nfrom deploy.errors import UserError\ntry:\n" \
       "    print('loaded', load_reference({!r}).num_images)\nexcept UserError as exc:\n    print('error:', exc)\n"


def test_unknown_members_are_never_loaded(proof_members, tmp_path):
    """Members the reader does not know are skipped by name, whatever they hold: a 4.7 MB file with three
    compressed 1.5 GB arrays reached 2.8 GB. Here three stored 0.6 GB members (the file stays under the size cap)."""
    members = dict(proof_members, junk1=((600 * 10 ** 6,), np.uint8), junk2=((150 * 10 ** 6,), np.float32),
                   junk3=((600 * 10 ** 6,), np.uint8))
    path = sparse_npz(tmp_path / "reference.npz", members)
    assert os.path.getsize(path) > 1.8 * GB  # holes
    code, output, rss = peak_rss(LOAD.format(path))
    assert code == 0 and "loaded 8" in output, output
    assert rss < REFUSAL_RSS, rss


@pytest.mark.parametrize("name, shape, dtype, fragment", [
    ("pixels", (1, 24000, 24000, 3), np.uint8, "pixels (1, 24000, 24000, 3)"),
    ("inputs", (1000, 3, 4096, 4096), np.float32, "inputs (1000, 3, 4096, 4096)"),
    ("logits", (100000, 100000), np.float32, "logits (100000, 100000)"),
    ("preprocess", (10,), "<U100000000", "preprocess (10,)"),
])
def test_shapes_are_checked_from_the_header_before_loading(proof_members, tmp_path, name, shape, dtype, fragment):
    members = dict(proof_members)
    members.pop("pixels", None)
    members[name] = (shape, dtype, HEADER_ONLY)
    path = sparse_npz(tmp_path / "reference.npz", members)
    code, output, rss = peak_rss(LOAD.format(path))
    assert code == 0 and "error:" in output and fragment in output and "GB in memory" in output, output
    assert rss < REFUSAL_RSS, rss


def test_crops_of_another_size_are_refused_before_expansion(proof_members, tmp_path):
    """(8, 2048, 2048, 3) crops fit the bound, but the metadata says 32 px: refused on the crops' shape."""
    members = dict(proof_members, pixels=((8, 2048, 2048, 3), np.uint8))
    code, output, rss = peak_rss(LOAD.format(sparse_npz(tmp_path / "reference.npz", members)))
    assert "field preprocess says input size 32, the images are 2048x2048" in output, output
    assert rss < REFUSAL_RSS + 120 * 10 ** 6, rss  # the crops themselves (0.1 GB) are read, nothing more


@pytest.mark.parametrize("make, fragment", [
    (lambda p: sparse_file(p, 3 * GB), "larger than any reference file"),
    (lambda p: sparse_file(p, GB, np.lib.format.MAGIC_PREFIX + b"\x01\x00"), "not an .npz archive"),
])
def test_proof_files_capped_by_size_and_kind(tmp_path, make, fragment):
    path = make(tmp_path / "reference.npz")
    code, output, rss = peak_rss(LOAD.format(path))
    assert fragment in output and rss < REFUSAL_RSS, (output, rss)


def test_the_writer_refuses_a_proof_the_device_would(tmp_path, monkeypatch):
    import deploy.reference as reference
    from bundling.proof import save_reference
    from deploy.errors import UserError
    from deploy.preprocess import PreprocessSpec
    monkeypatch.setattr(reference, "MAX_REFERENCE_BYTES", 10000)
    data = reference.ReferenceData(inputs=np.zeros((4, 3, 32, 32), np.float32), logits=np.zeros((4, 10), np.float32),
                                   spec=PreprocessSpec.for_input_size(32))
    with pytest.raises(UserError, match="use fewer --reference-images"):
        save_reference(str(tmp_path / "reference.npz"), data)
    assert not os.listdir(str(tmp_path))


# -- JSON, ONNX, caches --------------------------------------------------------------------------------------------

JSON_READERS = {
    "manifest": ("eca-deploy-bundle.json", "from deploy.manifest import read_manifest as r; r({folder!r})"),
    "engine sidecar": ("m.engine.json", "from deploy.metadata import read_sidecar as r; r({folder!r} + '/m.engine')"),
    "model sidecar": ("m.onnx.json", "from deploy.metadata import read_sidecar as r; r({folder!r} + '/m.onnx')"),
}


@pytest.mark.parametrize("kind", sorted(JSON_READERS))
def test_json_files_are_capped_before_reading(tmp_path, kind):
    """2.5 GB sparse JSON reached 2.4-2.6 GB: refused from its size."""
    name, call = JSON_READERS[kind]
    sparse_file(tmp_path / name, 2500 * 10 ** 6, b'{"producer": "')
    code = "from deploy.errors import UserError\ntry:\n    {}\nexcept UserError as exc:\n    print('error:', exc)\n"
    status, output, rss = peak_rss(code.format(call.format(folder=str(tmp_path))))
    assert "error:" in output and name in output and "is 2500.0 MB" in output, output
    assert rss < REFUSAL_RSS, rss


def test_a_huge_pipeline_state_is_noted_and_rebuilt(tmp_path):
    from pipeline.run import STATE_FILE
    sparse_file(tmp_path / STATE_FILE, 2500 * 10 ** 6, b'{"format": ')
    code = "from pipeline.run import StepRunner\nStepRunner({!r}, echo=print)\n".format(str(tmp_path))
    status, output, rss = peak_rss(code)
    assert status == 0 and "starting a new state file" in output, output
    assert rss < REFUSAL_RSS, rss


@pytest.mark.parametrize("size, head, fragment", [
    (1500 * 10 ** 6, b"", "above the 1 GiB an ONNX file may hold inline"),
    (900 * 10 ** 6, b"", "no protobuf field"),
    (900 * 10 ** 6, b"\x08\x08\x3a\xff\xff\xff\xff\x0f", "runs past the end"),
])
def test_onnx_files_are_capped_before_reading(model_copy, images, tmp_path, size, head, fragment):
    """A 1.5 GB sparse ONNX reached 1.4 GB in build --dry-run and deploy.infer."""
    path = sparse_file(tmp_path / "big.onnx", size, head)
    for command in ("from deploy.infer import main; raise SystemExit(main([{!r}, {!r}]))".format(path, images),
                    "import sys; sys.argv = ['cli.py', 'build', {!r}, '--dry-run']; from cli import main; "
                    "raise SystemExit(main())".format(path)):
        status, output, rss = peak_rss(command)
        assert status == 2 and fragment in output and "Traceback" not in output, output
        assert rss < REFUSAL_RSS, rss


def test_a_real_model_passes_the_walk(model_copy):
    from deploy.validate import check_onnx_file
    check_onnx_file(model_copy)
    model = onnx.load(model_copy)
    onnx.save(model, model_copy, save_as_external_data=True, location="w.bin", size_threshold=0)
    check_onnx_file(model_copy)


def test_calibration_cache_is_capped(tmp_path):
    from deploy.calib_cache import read_calibration_cache
    from deploy.errors import UserError
    path = sparse_file(tmp_path / "m.calib.cache", 100 * 10 ** 6, b"TRT-100300-EntropyCalibration2\n")
    with pytest.raises(UserError, match="larger than 16 MiB"):
        read_calibration_cache(path)


# -- options with sizes, and models whose batch cannot fit -----------------------------------------------------------

@pytest.mark.parametrize("k_size, fragment", [
    ("1000001", "--k-size 1000001 is above the limit of 63"),
    ("999999999", "--k-size 999999999 is above the limit of 63"),
    ("4", "--k-size 4 is even"),
    ("3,5", "one kernel or one per stage (4)"),
    ("3,5,5,x", "'adaptive', one odd int"),
    ("0", "--k-size must be at least 1"),
])
def test_export_k_size_is_bounded(tmp_path, k_size, fragment):
    assert_user_error(run_cli(["export", "eca_resnet18", "--k-size", k_size, "-o", tmp_path / "m.onnx"]), fragment)
    assert not os.listdir(str(tmp_path))


def test_export_k_size_with_weights_is_refused(tiny_checkpoint, tmp_path):
    assert_user_error(run_cli(["export", "eca_resnet18", "--weights", tiny_checkpoint, "--k-size", "5",
                               "-o", tmp_path / "m.onnx"]), "--k-size applies to a model with random weights")


def _static_batch(path, batch):
    model = onnx.load(path)
    for value in list(model.graph.input) + list(model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = batch
    onnx.save(model, path)


@pytest.mark.parametrize("batch", [200000, 5000])
def test_a_fixed_batch_above_the_limit_is_refused_before_padding(model_copy, images, batch, capsys):
    from deploy.infer import main as infer_main
    _static_batch(model_copy, batch)
    assert infer_main([model_copy, images]) == 2
    captured = capsys.readouterr()
    assert "its batch is fixed at {} images, above the limit of 4096".format(batch) in captured.err
    result = run_cli(["benchmark-engine", model_copy, "--data", images, "--num-images", "4", "--iterations", "1"])
    assert_user_error(result, "fixed at {}".format(batch))


def test_a_small_fixed_batch_still_runs(model_copy, images, capsys):
    from deploy.infer import main as infer_main
    _static_batch(model_copy, 3)
    assert infer_main([model_copy, images]) == 0, capsys.readouterr().err
    shutil.rmtree(os.path.dirname(model_copy))


@pytest.mark.parametrize("name, shape, dtype", [("pixels", (0, 32, 32, 3), np.uint8),
                                                ("inputs", (0, 3, 32, 32), np.float32)])
def test_a_proof_with_zero_images_is_one_line(proof_members, tmp_path, name, shape, dtype):
    from deploy.errors import UserError
    from deploy.reference import load_reference
    members = dict(proof_members)
    members.pop("pixels")
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(shape, dtype=dtype))
    members[name] = buffer.getvalue()
    with pytest.raises(UserError, match="field {} holds no images".format(name)):
        load_reference(sparse_npz(tmp_path / "reference.npz", members))


def test_an_image_file_above_the_cap_is_skipped_unread(model_copy, images):
    """A 2.5 GB sparse file named .png is skipped and counted from its size, like any unreadable image."""
    sparse_file(os.path.join(images, "huge.png"), 2500 * 10 ** 6, b"\x89PNG\r\n\x1a\n")
    code = "from deploy.infer import main; raise SystemExit(main([{!r}, {!r}]))".format(model_copy, images)
    status, output, rss = peak_rss(code)
    assert status == 0 and "huge.png" in output and "above the 256 MiB" in output, output
    assert rss < REFUSAL_RSS, rss


def test_bundle_cpu_check_refuses_a_batch_fixed_at_200000(tiny_checkpoint, images, tmp_path):
    """It reached 2.6 GB padding the reference images to 200000, then a traceback."""
    from exporter import export_model
    model = str(tmp_path / "m.onnx")
    export_model("eca_resnet18", model, weights=tiny_checkpoint, input_size=32, do_simplify=False,
                 parity_batch_sizes=(2,))
    _static_batch(model, 200000)
    result = run_cli(["bundle", model, "--weights", tiny_checkpoint, "--data", images, "-o", tmp_path / "out"])
    assert result.exit_code in (1, 2), (result.exit_code, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "fixed at 200000 images, above the limit of 4096" in errors[0], result.stderr
    assert not (tmp_path / "out").exists()
