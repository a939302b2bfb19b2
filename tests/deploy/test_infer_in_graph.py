"""deploy.infer on a model exported with --normalize-in-graph: it reads the metadata, feeds pixels, and
classifies real digits exactly as the plain model does."""
import json

from deploy import infer


def _top1(capsys, model, folder):
    assert infer.main([model, folder, "--max-frames", "60", "--batch", "8", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()][:-1]
    return {row["path"]: row["topk"][0] for row in lines}


def test_same_top1_as_the_plain_model(digits_eca_in_graph_onnx, digits_eca_onnx, digits_split, capsys):
    in_graph = _top1(capsys, digits_eca_in_graph_onnx, digits_split[1])
    plain = _top1(capsys, digits_eca_onnx, digits_split[1])
    assert len(in_graph) == 60 and in_graph == plain
