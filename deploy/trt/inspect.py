"""Layer precisions read back from a built engine, so a build can prove it got the precision it asked for.

The engine inspector's JSON (``IEngineInspector.get_engine_information``, TensorRT 8.2+, detailed with
ProfilingVerbosity.DETAILED) lists layers with the "Format/Datatype" of their tensors, for example
"Thirty-two wide channel vectorized row major Int8 format" or "Row major linear FP16 format".
"""
import json
from typing import Dict, Optional

PRECISIONS = ("int8", "fp16", "fp32")


def tensor_precision(format_text: str) -> str:
    text = format_text.lower()
    if "int8" in text:
        return "int8"
    if "fp16" in text or "half" in text:
        return "fp16"
    if "fp32" in text or "float" in text:
        return "fp32"
    return "unknown"


def layer_precision(layer) -> str:
    """A layer's compute precision: that of its first input whose format is known (outputs as fallback)."""
    if not isinstance(layer, dict):
        return "unknown"  # without DETAILED verbosity the inspector gives layer names only
    for key in ("Inputs", "Outputs"):
        for tensor in layer.get(key) or []:
            if isinstance(tensor, dict):
                found = tensor_precision(str(tensor.get("Format/Datatype", "")))
                if found != "unknown":
                    return found
    return "unknown"


def summarize_layer_precisions(engine_information: Optional[str]) -> Dict[str, int]:
    """Counts of layers per precision ({"int8": n, "fp16": n, "fp32": n, "unknown": n})."""
    counts = {name: 0 for name in PRECISIONS + ("unknown",)}
    if not engine_information:
        return counts
    try:
        data = json.loads(engine_information)
    except ValueError:
        return counts
    layers = data.get("Layers", []) if isinstance(data, dict) else []
    for layer in layers:
        counts[layer_precision(layer)] += 1
    return counts


def known_layers(counts: Dict[str, int]) -> int:
    return sum(counts.get(name, 0) for name in PRECISIONS)
