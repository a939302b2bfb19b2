"""Attention modules against their baselines, deployed: one of the models end to end (export, CPU INT8, three timed backends), and its table."""
import pytest

from benchmark import attention_baselines as baselines


@pytest.fixture(autouse=True)
def _private_image_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ECA_DEPLOY_CACHE", str(tmp_path / "cache"))


def test_baselines_row_for_eca_resnet18(tmp_path):
    lines = []
    result = baselines.measure_baselines(tmp_path, archs=["eca_resnet18"], threads=2, warmup=0, iterations=1,
                                     num_images=4, progress=False, log=lines.append)
    (row,) = result.rows
    assert (row.method, row.cnn, row.weights) == ("ECA-Net", "R-18", "random")
    assert round(row.params_m, 3) == 11.148 and round(row.gflops, 3) == 1.700  # the seed's figures
    assert row.fp32_top1_agreement == 100.0 and row.int8_cosine > 0.95  # random weights: near-tied logits
    assert row.torch_ms > 0 and row.ort_fp32_ms > 0 and row.ort_int8_ms > 0
    assert lines == ["table A: eca_resnet18 done in {:.0f} s".format(row.seconds)]
    markdown = baselines.to_markdown(result)
    assert markdown.startswith("## Table A, deployed")
    assert "| ECA-Net | R-18 | 11.148M | 1.700 | 70.78 | random | 100.00 |" in markdown
    assert any("random weights" in note for note in result.notes)


def test_unknown_model_and_missing_weights_folder(tmp_path):
    from deploy.errors import UserError

    with pytest.raises(UserError, match="not one of the baseline models: resnet50"):
        baselines.measure_baselines(tmp_path, archs=["resnet50"])
    with pytest.raises(UserError, match="weights folder not found"):
        baselines.measure_baselines(tmp_path, weights_dir=str(tmp_path / "none"))
