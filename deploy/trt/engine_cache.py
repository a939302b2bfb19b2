"""Engines built on first use, cached under names that make stale engines impossible to pick.

As jetson-inference does, the name carries the model's sha256 (short), the TensorRT version, the device (GPU and
compute capability, or DLA core) and the precision: ``model.onnx.3f2a9c0d1b7e.trt10.3.0.orin-sm87.fp16.engine``.
Build options the name lacks (batch range, workspace, ...) are compared with the cached engine's sidecar.
"""
import os
import re
from typing import Dict, Optional, Tuple

from ..errors import UserError
from ..fileio import sha256_file
from ..metadata import read_sidecar
from .build import build_engine
from .compat import import_tensorrt
from .cuda import DeviceInfo, device_info
from .plan import BuildOptions, plan_build

CACHE_ENV = "ECA_DEPLOY_ENGINE_CACHE"


def device_tag(device: Optional[DeviceInfo], dla_core: Optional[int] = None) -> str:
    if dla_core is not None:
        return "dla{}".format(int(dla_core))
    if device is None:
        return "gpu"
    slug = re.sub(r"[^a-z0-9]+", "-", device.name.lower()).strip("-") or "gpu"
    return "{}-sm{}{}".format(slug, device.major, device.minor)


def engine_cache_name(onnx_path: str, onnx_sha256: str, trt_version: str, device: str, precision: str) -> str:
    return "{}.{}.trt{}.{}.{}.engine".format(os.path.basename(onnx_path), onnx_sha256[:12], trt_version, device,
                                            precision)


def default_cache_dir(onnx_path: str) -> str:
    """Beside the model where that folder is writable, else $ECA_DEPLOY_ENGINE_CACHE or ~/.cache/eca-deploy/engines."""
    if os.environ.get(CACHE_ENV):
        return os.environ[CACHE_ENV]
    directory = os.path.dirname(os.path.abspath(onnx_path))
    if os.access(directory, os.W_OK):
        return directory
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "eca-deploy", "engines")


def cached_engine_usable(engine_path: str, onnx_sha256: str, options: BuildOptions) -> Tuple[bool, str]:
    """Whether a cached engine was built from this very model with these options (and why not)."""
    if not os.path.isfile(engine_path):
        return False, "not built yet"
    try:
        sidecar = read_sidecar(engine_path)
    except UserError as exc:
        return False, str(exc)
    if sidecar is None:
        return False, "it has no sidecar"
    if (sidecar.get("source_onnx") or {}).get("sha256") != onnx_sha256:
        return False, "it was built from another version of the model"
    recorded: Dict[str, object] = sidecar.get("build_options") or {}
    wanted = options.to_dict()
    changed = sorted(key for key in wanted if recorded.get(key) != wanted[key])
    if changed:
        return False, "its build options differ ({})".format(", ".join(changed))
    return True, "cached"


def ensure_engine(onnx_path, options: Optional[BuildOptions] = None, cache_dir: Optional[str] = None,
                  rebuild: bool = False, log=None) -> Tuple[str, bool]:
    """The cached engine for ``onnx_path`` on this device, built now if needed. Returns (path, built_now)."""
    options = (options or BuildOptions()).validate()
    onnx_path = os.fspath(onnx_path)
    if not os.path.isfile(onnx_path):
        raise UserError("no such model file: {}".format(onnx_path))
    trt = import_tensorrt("build the engine for --trt")
    device = device_info()
    plan = plan_build(onnx_path, "cache.engine", trt.__version__, options)  # for the precision the name carries
    sha = sha256_file(onnx_path)
    directory = cache_dir or default_cache_dir(onnx_path)
    name = engine_cache_name(onnx_path, sha, trt.__version__, device_tag(device, options.dla_core), plan.precision)
    engine_path = os.path.join(directory, name)
    usable, reason = cached_engine_usable(engine_path, sha, options)
    if usable and not rebuild:
        return engine_path, False
    if log is not None:
        log("no usable cached engine {} ({}); building it once".format(engine_path, reason))
    build_engine(onnx_path, engine_path, options, log=log)
    return engine_path, True
