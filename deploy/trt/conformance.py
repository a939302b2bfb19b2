"""Would the target TensorRT's ONNX parser accept this model? Checked before any engine is planned, so no build
plan, dry run, ``build_engines.sh`` line or pipeline build holds a model the device would refuse.

What each release documents is data, ``deploy/data/trt_onnx_parsers.json`` (docs/TENSORRT_CONFORMANCE.md says
where every entry comes from): the operator list of onnx-tensorrt's ``docs/operators.md``, the opset range, and
the newest ONNX IR version (the ONNX release its parser is built against). The Q/DQ rule is the parser's own:
QuantizeLinear/DequantizeLinear are INT8 with zero point 0 ("TRT only supports symmetric quantization - zeroPt
must be all zeros"; a UINT8 zero point stops it with "Unsupported ONNX data type: UINT8"). A CPU-target model
(ONNX Runtime's uint8 activations with zero points, int32 biases) breaks that rule by design.

Torch-free and Python 3.8; the onnx package is imported lazily (a Jetson without it skips the check, saying so).
"""
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Dict, FrozenSet, Iterator, List, Optional, Tuple

from ..errors import UserError
from .version import TrtVersion

PARSERS_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data",
                            "trt_onnx_parsers.json")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
DEFAULT_DOMAINS = ("", "ai.onnx")
EXPORT_OPSET = 17  # eca-deploy export's default, inside every documented range
# The parser's own words, quoted in the refusal so a user can match them with a device log.
SYMMETRIC_ONLY = "TRT only supports symmetric quantization - zeroPt must be all zeros"
CPU_TARGET_FIX = ("use the tensorrt target: `eca-deploy calibrate --target tensorrt`, i.e. the *.int8.tensorrt.onnx "
                  "model (a *.int8.cpu.onnx model is for ONNX Runtime)")


@dataclass(frozen=True)
class ParserRelease:
    """What one TensorRT release's ONNX parser documents; it holds for that release up to the next entry."""

    first: TrtVersion
    opset_min: Optional[int]
    opset_max: int
    ir_max: int
    operators: FrozenSet[str]
    sources: Dict[str, str] = field(default_factory=dict)
    notes: str = ""


@lru_cache(maxsize=1)
def min_ir_version() -> int:
    """The oldest ONNX IR version any parser reads (IR 3 brought opset_import); the data file says why."""
    with open(PARSERS_FILE, "r", encoding="utf-8") as handle:
        return int(json.load(handle)["ir_min"])


@lru_cache(maxsize=1)
def parser_releases() -> Tuple[ParserRelease, ...]:
    with open(PARSERS_FILE, "r", encoding="utf-8") as handle:
        entries = json.load(handle)["releases"]
    return tuple(sorted((ParserRelease(TrtVersion.parse(e["from"]), e["opset_min"], e["opset_max"], e["ir_max"],
                                       frozenset(e["operators"]), dict(e["sources"]), e.get("notes", ""))
                         for e in entries), key=lambda release: release.first.release))


def parser_release(version) -> ParserRelease:
    """The documented parser of ``version``: the newest entry that is not newer than it."""
    version = TrtVersion.parse(version)
    known = [r for r in parser_releases() if r.first.release[:2] <= version.release[:2]]
    if not known:
        raise UserError("no ONNX parser data for TensorRT {}; the oldest documented is {}".format(
            version, parser_releases()[0].first))
    return known[-1]


# -- reading the graph --------------------------------------------------------------------------------------------

def _graphs(graph) -> Iterator[object]:
    """The graph and its subgraphs (If/Loop/Scan bodies), whose nodes the parser imports too."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from _graphs(attribute.g)
            for sub in attribute.graphs:
                yield from _graphs(sub)


def _constants(graph) -> Dict[str, object]:
    """TensorProto of every initializer and Constant output, by name."""
    found = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value" and attribute.HasField("t"):
                    found[node.output[0]] = attribute.t
    return found


@dataclass
class QdqCensus:
    """How a model's Q/DQ nodes stand against the parser's rule."""

    nodes: int = 0
    zero_point_types: Dict[str, int] = field(default_factory=dict)  # non-INT8 zero points by ONNX type name
    nonzero_zero_points: int = 0
    computed_zero_points: int = 0
    non_int8_inputs: Dict[str, int] = field(default_factory=dict)  # DequantizeLinear of e.g. int32 biases

    @property
    def conforms(self) -> bool:
        return not (self.zero_point_types or self.nonzero_zero_points or self.computed_zero_points
                    or self.non_int8_inputs)

    def describe(self) -> str:
        parts = ["{} {} zero points".format(n, name) for name, n in sorted(self.zero_point_types.items())]
        if self.nonzero_zero_points:
            parts.append("{} non-zero zero points".format(self.nonzero_zero_points))
        if self.computed_zero_points:
            parts.append("{} zero points that are not constants".format(self.computed_zero_points))
        parts += ["{} {} inputs to DequantizeLinear".format(n, name)
                  for name, n in sorted(self.non_int8_inputs.items())]
        return "{} Q/DQ nodes are not INT8 with zero point 0 ({})".format(self.nodes, ", ".join(parts))


def qdq_census(model, base_dir: str = "") -> QdqCensus:
    from onnx import TensorProto, numpy_helper

    census, offending = QdqCensus(), set()
    int8 = TensorProto.INT8
    for number, graph in enumerate(_graphs(model.graph)):
        constants = _constants(graph)
        for index, node in enumerate(graph.node):
            if node.op_type not in QDQ_OPS or node.domain not in DEFAULT_DOMAINS:
                continue
            key = (number, index)
            if node.op_type == "DequantizeLinear" and node.input[0] in constants:
                kind = constants[node.input[0]].data_type
                if kind != int8:
                    name = TensorProto.DataType.Name(kind)
                    census.non_int8_inputs[name] = census.non_int8_inputs.get(name, 0) + 1
                    offending.add(key)
            if len(node.input) < 3 or not node.input[2]:
                continue  # no zero point: nothing to check, the parser assumes 0
            tensor = constants.get(node.input[2])
            if tensor is None:
                census.computed_zero_points += 1
                offending.add(key)
                continue
            if tensor.data_type != int8:
                name = TensorProto.DataType.Name(tensor.data_type)
                census.zero_point_types[name] = census.zero_point_types.get(name, 0) + 1
                offending.add(key)
            if numpy_helper.to_array(tensor, base_dir).any():
                census.nonzero_zero_points += 1
                offending.add(key)
    census.nodes = len(offending)
    return census


def unlisted_operators(model, release: ParserRelease) -> List[str]:
    """Ops the release's parser does not list, as ``Op`` (default domain) or ``domain:Op``."""
    unlisted = set()
    for graph in _graphs(model.graph):
        for node in graph.node:
            if node.domain not in DEFAULT_DOMAINS:
                unlisted.add("{}:{}".format(node.domain, node.op_type))
            elif node.op_type not in release.operators:
                unlisted.add(node.op_type)
    return sorted(unlisted)


# -- the verdict ----------------------------------------------------------------------------------------------------

def conformance_problems(model, version, base_dir: str = "") -> List[str]:
    """Why ``version``'s parser would refuse the ModelProto, most telling first (the fix is in the first); [] if
    it would not."""
    from ..validate import model_opset

    version = TrtVersion.parse(version)
    release = parser_release(version)
    problems = []
    census = qdq_census(model, base_dir)
    if not census.conforms:
        problems.append("{} (TensorRT: \"{}\"; UINT8 is not a Q/DQ type): this is a CPU-target model; {}".format(
            census.describe(), SYMMETRIC_ONLY, CPU_TARGET_FIX))
    opset = model_opset(model)
    if opset is None or opset > release.opset_max or (release.opset_min is not None and opset < release.opset_min):
        suggested = min(EXPORT_OPSET, release.opset_max)
        problems.append("opset {} is outside what TensorRT {}'s ONNX parser documents ({}); re-export with "
                        "`eca-deploy export --opset {}`".format(opset, version, _opset_range(release), suggested))
    if model.ir_version < min_ir_version():
        problems.append("ONNX IR version {} is older than any TensorRT parser reads (IR {} to {}); it is unset or "
                        "the file predates ONNX 1.0: export the model again".format(
                            model.ir_version, min_ir_version(), release.ir_max))
    if model.ir_version > release.ir_max:
        problems.append("ONNX IR version {} is newer than TensorRT {}'s parser reads (IR {} and older); save it "
                        "with ir_version {}".format(model.ir_version, version, release.ir_max, release.ir_max))
    unlisted = unlisted_operators(model, release)
    if unlisted:
        problems.append("{} {} not in TensorRT {}'s ONNX operator list (onnx-tensorrt docs/operators.md); "
                        "export the model without {}".format(", ".join(unlisted), "is" if len(unlisted) == 1
                                                              else "are", version, "it" if len(unlisted) == 1
                                                              else "them"))
    return problems


def _opset_range(release: ParserRelease) -> str:
    if release.opset_min is None:
        return "up to opset {}".format(release.opset_max)
    return "opsets {} to {}".format(release.opset_min, release.opset_max)


def check_conformance(onnx_path: str, version) -> Optional[str]:
    """UserError (one line) when ``version``'s parser would refuse the model; a note when it cannot be checked
    here (no onnx package), else None."""
    from ..metadata import load_onnx_proto

    _, model = load_onnx_proto(onnx_path)
    if model is None:
        return ("the onnx package is not installed, so the model was not checked against TensorRT {}'s ONNX parser "
                "(eca-deploy bundle checked it where it was made)".format(TrtVersion.parse(version)))
    problems = conformance_problems(model, version, os.path.dirname(os.path.abspath(onnx_path)))
    if problems:
        raise UserError("{}: TensorRT {} would refuse it: {}".format(
            os.path.basename(onnx_path), TrtVersion.parse(version), "; also ".join(problems)))
    return None


def int8_weights_note_for(onnx_path: str, version) -> Optional[str]:
    """int8_weights_note of the model file (None where the onnx package is missing: nothing to read it with)."""
    from ..metadata import load_onnx_proto

    _, model = load_onnx_proto(onnx_path)
    return None if model is None else int8_weights_note(model, version)


def int8_weights_note(model, version) -> Optional[str]:
    """A note when the model's weights are INT8 initializers feeding DequantizeLinear and ``version``'s own
    documentation was not found to say so (TrtVersion.documents_int8_weights); None otherwise."""
    version = TrtVersion.parse(version)
    int8 = {init.name for init in model.graph.initializer if init.data_type == 3}  # TensorProto.INT8
    weights = sum(1 for node in model.graph.node if node.op_type == "DequantizeLinear" and node.input[0] in int8)
    if not weights or version.documents_int8_weights:
        return None
    return ("{} weights are INT8 initializers feeding DequantizeLinear: documented by TensorRT 8.5's parser table "
            "and the 11.x Developer Guide, not found in TensorRT {}'s own documents; docs/TENSORRT_VERSIONS.md "
            "(INT8 weights) says what to do if its parser refuses them".format(weights, version))
