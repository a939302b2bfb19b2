"""What a model was exported from (source_kind) and its arch are data: validated on load, never code."""
import pytest

from deploy.errors import UserError
from deploy.metadata import ModelInfo, reference_origin
from deploy.preprocess import PreprocessSpec


def _meta(**fields):
    meta = ModelInfo(arch="ecaresnet50d", num_classes=10, preprocess=PreprocessSpec(input_size=32, resize_size=36),
                     extra={"source_kind": "torch.export"}).to_metadata()
    meta.update(fields)
    return meta


def test_source_kind_and_arch_read_back():
    info = ModelInfo.from_metadata(_meta())
    assert info.source_kind == "torch.export" and info.from_program
    assert ModelInfo.from_metadata(_meta(source_kind="zoo")).source_kind == "zoo"
    legacy = _meta()
    del legacy["source_kind"]
    assert ModelInfo.from_metadata(legacy).source_kind == "zoo"  # exported before the key existed
    assert reference_origin("onnx") == "the FP32 ONNX" and reference_origin("torchscript") == "PyTorch"


@pytest.mark.parametrize("arch", ["../../etc/passwd", "x; rm -rf ~", "$(id)", "a" * 65, "name with space", "-x"])
def test_arch_must_be_a_plain_name(arch):
    with pytest.raises(UserError, match="is not a model name"):
        ModelInfo.from_metadata(_meta(arch=arch), source="m.onnx")


def test_unknown_source_kind_is_refused():
    with pytest.raises(UserError, match="source_kind must be one of"):
        ModelInfo.from_metadata(_meta(source_kind="pickle"), source="m.onnx")
