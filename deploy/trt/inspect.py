"""Layer precisions read back from a built engine, so a build can prove it got the precision it promised.

The engine inspector's JSON (ProfilingVerbosity.DETAILED) lists layers with the "Format/Datatype" of their
tensors, e.g. "Thirty-two wide channel vectorized row major Int8 format" or "Row major linear FP16 format".
"""
import json
from typing import Dict, Optional

PRECISIONS = ("int8", "fp16", "fp32")
_WORDS = (("int8", ("int8",)), ("fp16", ("fp16", "half")), ("fp32", ("fp32", "float")))


def layer_precision(layer) -> str:
    """A layer's precision: that of its first input whose format is known (outputs as fallback)."""
    tensors = (layer.get("Inputs") or []) + (layer.get("Outputs") or []) if isinstance(layer, dict) else []
    for tensor in tensors:  # without DETAILED verbosity the inspector lists names only: "unknown"
        text = str(tensor.get("Format/Datatype", "")).lower() if isinstance(tensor, dict) else ""
        for precision, words in _WORDS:
            if any(word in text for word in words):
                return precision
    return "unknown"


def summarize_layer_precisions(engine_information: Optional[str]) -> Dict[str, int]:
    """Counts of layers per precision ({"int8": n, "fp16": n, "fp32": n, "unknown": n})."""
    counts = {name: 0 for name in PRECISIONS + ("unknown",)}
    try:
        layers = json.loads(engine_information or "{}").get("Layers", [])
    except (ValueError, AttributeError):
        layers = []
    for layer in layers:
        counts[layer_precision(layer)] += 1
    return counts


def known_layers(counts: Dict[str, int]) -> int:
    return sum(counts.get(name, 0) for name in PRECISIONS)
