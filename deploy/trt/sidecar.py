"""The JSON sidecar beside each engine (``model.engine.json``) and the check made before an engine is loaded.

The engine is written plain (trtexec loads it). The sidecar holds the rest: the TensorRT version and GPU it was
built for, precision and flags, profiles, build options, the model's preprocessing metadata and the source's
sha256. Loading an engine elsewhere fails deep inside TensorRT ("Version tag does not match") or crashes, so
``check_engine_compatible`` says so first, unless it was built version- or hardware-compatible.
"""
import os
from typing import Dict, List, Optional

from ..errors import UserError
from ..metadata import sidecar_path
from .cuda import DeviceInfo
from .version import TrtVersion

SIDECAR_FORMAT = "eca-deploy/engine-sidecar/1"
_CROSS_MAJOR = {(8, 10), (10, 11)}  # version-compatible plans that load on the next major (support matrix 11.4)


def make_sidecar(plan, *, engine_size: int, trt_version: str, device: Optional[DeviceInfo], metadata: Dict[str, str],
                 onnx_sha256: str, layer_precisions: Dict[str, int], calibration: Optional[Dict[str, object]],
                 notes: List[str]) -> Dict[str, object]:
    """The sidecar of a built ``plan`` (deploy.trt.plan.BuildPlan): its precision and flags are the plan's."""
    options, planned = plan.options, plan.to_dict()
    return {"format": SIDECAR_FORMAT, "engine": os.path.basename(plan.engine), "engine_size": int(engine_size),
            "tensorrt_version": str(trt_version),
            "device": dict(device.to_dict() if device else {}, dla_core=options.dla_core),
            "precision": plan.precision, "trt_flags": plan.trt_flags, "strongly_typed": plan.strongly_typed,
            "version_compatible": options.version_compatible,
            "hardware_compatibility_level": "ampere_plus" if options.hardware_compatible else "none",
            "profiles": planned["profiles"], "build_options": options.to_dict(), "metadata": dict(metadata),
            "source_onnx": {"path": os.path.abspath(plan.onnx), "sha256": onnx_sha256},
            "layer_precisions": layer_precisions, "calibration": calibration, "trtexec": planned["trtexec"],
            "polygraphy": planned["polygraphy"], "notes": list(notes)}


def _check_version(sidecar: dict, running: TrtVersion, engine: str, rebuild: str) -> List[str]:
    if not sidecar.get("tensorrt_version"):
        return ["{} does not record the TensorRT version it was built with".format(sidecar_path(engine))]
    built = TrtVersion.parse(sidecar["tensorrt_version"])
    if built.same_release(running):
        return []
    if not sidecar.get("version_compatible"):
        raise UserError("{} was built with TensorRT {} but this is TensorRT {}; an engine only loads on the TensorRT "
                        "version that built it. {}".format(engine, built, running, rebuild))
    if not (built.release >= (8, 6, 0) and running.release >= built.release
            and (built.major == running.major or (built.major, running.major) in _CROSS_MAJOR)):
        raise UserError("{} was built version-compatible with TensorRT {}, which TensorRT {} cannot load (the same or "
                        "a later TensorRT of its major, and 8.6+ plans on 10, 10 plans on 11). {}".format(
                            engine, built, running, rebuild))
    return ["{} was built version-compatible with TensorRT {}; TensorRT {} runs it through its embedded lean runtime "
            "(it can be slower than an engine built here)".format(os.path.basename(engine), built, running)]


def _check_device(sidecar: dict, device: Optional[DeviceInfo], engine: str, rebuild: str) -> List[str]:
    recorded, name = sidecar.get("device") or {}, os.path.basename(engine)
    try:
        built_cc = tuple(int(part) for part in str(recorded["compute_capability"]).split(".")[:2])
    except (KeyError, ValueError):
        built_cc = None
    if device is None or built_cc is None:
        return ["cannot compare the GPU {} was built for with this one".format(name)]
    built_name, running_cc = recorded.get("name", "?"), (device.major, device.minor)
    if built_cc != running_cc:
        if sidecar.get("hardware_compatibility_level") == "ampere_plus" and min(built_cc, running_cc) >= (8, 0):
            return ["{} was built hardware-compatible (Ampere and newer) on {}; running on {}".format(
                name, built_name, device.name)]
        raise UserError("{} was built for {} (compute capability {}.{}) but this GPU is {} ({}); engines are tied to "
                        "the GPU architecture. {}".format(engine, built_name, built_cc[0], built_cc[1], device.name,
                                                          device.compute_capability, rebuild))
    if built_name != device.name:
        return ["{} was built on {} and runs on {} (same compute capability {}): TensorRT tuned it for the other "
                "GPU, so rebuild here for best speed".format(name, built_name, device.name, device.compute_capability)]
    return []


def check_engine_compatible(sidecar: dict, running_version: str, device: Optional[DeviceInfo],
                            engine_path: str) -> List[str]:
    """Notes about loading ``engine_path`` here; UserError when TensorRT could not load it (or would crash)."""
    source = (sidecar.get("source_onnx") or {}).get("path") or "MODEL.onnx"
    rebuild = "Rebuild it on this device: python3 -m deploy.build {} -o {}".format(
        os.path.basename(source), os.path.basename(engine_path))
    notes = _check_version(sidecar, TrtVersion.parse(running_version), engine_path, rebuild)
    notes += _check_device(sidecar, device, engine_path, rebuild)
    size = sidecar.get("engine_size")
    if size is not None and os.path.isfile(engine_path) and os.path.getsize(engine_path) != int(size):
        raise UserError("{} does not match its sidecar {} (size {} vs {} bytes): the engine was replaced without its "
                        "sidecar. {}".format(engine_path, sidecar_path(engine_path), os.path.getsize(engine_path),
                                             size, rebuild))
    return notes
