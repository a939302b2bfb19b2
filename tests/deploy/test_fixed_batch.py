"""deploy.fixed_batch: the batch-1 copy jetson-inference loads, derived on the device without onnx."""
import subprocess
import sys

import onnx
import pytest

from deploy.errors import UserError
from deploy.fixed_batch import fix_batch, write_fixed_batch


def test_the_copy_is_the_onnx_package_s_own_with_batch_one(digits_eca_onnx, tmp_path):
    from bundling.ecosystem.jetson_inference import write_batch1_copy
    ours, theirs = str(tmp_path / "ours.onnx"), str(tmp_path / "theirs.onnx")
    write_fixed_batch(digits_eca_onnx, ours)
    write_batch1_copy(digits_eca_onnx, theirs)  # onnx's own editing, which bundles used to ship
    assert open(ours, "rb").read() == open(theirs, "rb").read()
    model = onnx.load(ours)
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][0] == 1
    assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_value == 1


def test_it_runs_without_the_onnx_package(digits_eca_onnx, tmp_path):
    out = str(tmp_path / "b1.onnx")
    code = ("import sys; sys.modules['onnx'] = None; sys.modules['google.protobuf'] = None; "
            "from deploy.fixed_batch import main; "
            "sys.exit(main([{!r}, {!r}, '--json']))".format(digits_eca_onnx, out))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert '"bytes"' in proc.stdout


def test_not_a_model_is_one_line(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff\xff\xff")
    with pytest.raises(UserError, match="not a readable ONNX model"):
        write_fixed_batch(str(bad), str(tmp_path / "out.onnx"))
    with pytest.raises(ValueError, match="0 graphs"):
        fix_batch(b"")
