"""The JSON sidecar beside each engine (``model.engine.json``) and the check made before an engine is loaded.

The engine itself is written plain, without any header of ours, so trtexec and other tools load it as it is.
Everything else lives in the sidecar: the TensorRT version and GPU it was built for, precision, profiles and
build options, the model's preprocessing metadata (the ONNX ``metadata_props``, under "metadata", which
``deploy.metadata.read_model_info`` reads) and the sha256 of the source ONNX.

An engine only loads on the TensorRT version that built it and is tuned for one GPU architecture; loading it
elsewhere fails deep inside TensorRT ("Serialization assertion ... Version tag does not match") or crashes.
``check_engine_compatible`` turns that into a clear error first, unless the engine was built version- or
hardware-compatible, in which case it says so.
"""
import os
from typing import Dict, List, Optional

from ..errors import UserError
from ..metadata import read_sidecar, sidecar_path
from .version import TrtVersion
from .cuda import DeviceInfo

SIDECAR_FORMAT = "eca-deploy/engine-sidecar/1"

# Cross-major loading of version-compatible plans that NVIDIA documents (TensorRT support matrix 11.4).
_CROSS_MAJOR = {(8, 10), (10, 11)}


def make_sidecar(plan, *, engine_size: int, trt_version: str, device: Optional[DeviceInfo], metadata: Dict[str, str],
                 onnx_sha256: str, layer_precisions: Dict[str, int], calibration: Optional[Dict[str, object]],
                 notes: List[str]) -> Dict[str, object]:
    """The sidecar of ``plan`` (a deploy.trt.plan.BuildPlan) once built: its precision and flags are the plan's."""
    options = plan.options
    planned = plan.to_dict()
    return {
        "format": SIDECAR_FORMAT,
        "engine": os.path.basename(plan.engine),
        "engine_size": int(engine_size),
        "tensorrt_version": str(trt_version),
        "device": dict(device.to_dict(), dla_core=options.dla_core) if device else {"dla_core": options.dla_core},
        "precision": plan.precision,
        "trt_flags": plan.trt_flags,
        "strongly_typed": bool(plan.strongly_typed),
        "version_compatible": bool(options.version_compatible),
        "hardware_compatibility_level": "ampere_plus" if options.hardware_compatible else "none",
        "profiles": planned["profiles"],
        "build_options": options.to_dict(),
        "metadata": dict(metadata),
        "source_onnx": {"path": os.path.abspath(plan.onnx), "sha256": onnx_sha256},
        "layer_precisions": layer_precisions,
        "calibration": calibration,
        "trtexec": planned["trtexec"],
        "polygraphy": planned["polygraphy"],
        "notes": list(notes),
    }


def _capability(text) -> Optional[tuple]:
    try:
        major, minor = str(text).split(".")[:2]
        return int(major), int(minor)
    except (ValueError, TypeError):
        return None


def _check_version(sidecar: dict, running: TrtVersion, engine: str, rebuild: str) -> List[str]:
    recorded = sidecar.get("tensorrt_version")
    if not recorded:
        return ["{} does not record the TensorRT version it was built with; cannot check it".format(
            sidecar_path(engine))]
    built = TrtVersion.parse(recorded)
    if built.same_release(running):
        return []
    if not sidecar.get("version_compatible"):
        raise UserError("{} was built with TensorRT {} but this is TensorRT {}; an engine only loads on the TensorRT "
                        "version that built it. {}".format(engine, built, running, rebuild))
    same_major = built.major == running.major
    allowed = (built.release >= (8, 6, 0) and running.release >= built.release
               and (same_major or (built.major, running.major) in _CROSS_MAJOR))
    if not allowed:
        raise UserError("{} was built version-compatible with TensorRT {}, which TensorRT {} cannot load (such an "
                        "engine runs on the same or a later TensorRT of its major version, and 8.6+ plans on 10, "
                        "10 plans on 11). {}".format(engine, built, running, rebuild))
    return ["{} was built version-compatible with TensorRT {}; loading it on TensorRT {} through its embedded lean "
            "runtime (it can be slower than an engine built here)".format(os.path.basename(engine), built, running)]


def _check_device(sidecar: dict, device: Optional[DeviceInfo], engine: str, rebuild: str) -> List[str]:
    recorded = sidecar.get("device") or {}
    built_cc = _capability(recorded.get("compute_capability"))
    if device is None or built_cc is None:
        return ["cannot compare the GPU {} was built for with this one".format(os.path.basename(engine))]
    running_cc = (device.major, device.minor)
    built_name = recorded.get("name", "?")
    if built_cc != running_cc:
        hardware_compatible = sidecar.get("hardware_compatibility_level") == "ampere_plus"
        if hardware_compatible and built_cc >= (8, 0) and running_cc >= (8, 0):
            return ["{} was built hardware-compatible (Ampere and newer) on {} (sm {}.{}); running on {} "
                    "(sm {})".format(os.path.basename(engine), built_name, built_cc[0], built_cc[1], device.name,
                                      device.compute_capability)]
        raise UserError("{} was built for {} (compute capability {}.{}) but this GPU is {} ({}); engines are tied to "
                        "the GPU architecture. {}".format(engine, built_name, built_cc[0], built_cc[1], device.name,
                                                          device.compute_capability, rebuild))
    if built_name != device.name:
        return ["{} was built on {} and runs on {} (same compute capability {}): TensorRT tuned it for the other "
                "GPU, so rebuild here for best speed".format(os.path.basename(engine), built_name, device.name,
                                                            device.compute_capability)]
    return []


def check_engine_compatible(sidecar: dict, running_version: str, device: Optional[DeviceInfo],
                            engine_path: str) -> List[str]:
    """Notes about loading ``engine_path`` here; UserError when TensorRT could not load it (or would crash)."""
    source = (sidecar.get("source_onnx") or {}).get("path") or "MODEL.onnx"
    rebuild = "Rebuild it on this device: python3 -m deploy.build {} -o {}".format(
        os.path.basename(source), os.path.basename(engine_path))
    running = TrtVersion.parse(running_version)
    notes = _check_version(sidecar, running, engine_path, rebuild)
    notes += _check_device(sidecar, device, engine_path, rebuild)
    size = sidecar.get("engine_size")
    if size is not None and os.path.isfile(engine_path) and os.path.getsize(engine_path) != int(size):
        raise UserError("{} does not match its sidecar {} (size {} vs {} bytes): the engine was replaced without its "
                        "sidecar. {}".format(engine_path, sidecar_path(engine_path), os.path.getsize(engine_path),
                                             size, rebuild))
    return notes
