"""Importing TensorRT and Polygraphy lazily, with one-line install hints (JetPack ships TensorRT: never pip it)."""
import importlib.util

from ..errors import MissingDependencyError, UserError
from .version import TrtVersion


def install_hint() -> str:
    from ..jetson import is_jetson
    if is_jetson():
        return ("on Jetson TensorRT ships with JetPack: do not pip install it; `sudo apt install python3-libnvinfer`, "
                "and create virtualenvs with --system-site-packages")
    return "pip install tensorrt (on Jetson it ships with JetPack instead: do not pip install it)"


def import_tensorrt(purpose: str = "build or run TensorRT engines"):
    """The ``tensorrt`` module and Polygraphy's TensorRT backend, or a one-line error naming what is missing."""
    try:
        import tensorrt as trt
    except ImportError:
        raise MissingDependencyError("TensorRT's Python package (tensorrt)", purpose, install_hint()) from None
    try:
        import polygraphy.backend.trt  # noqa: F401 (our builder and runner drive TensorRT through it)
        from polygraphy.logger import G_LOGGER
    except ImportError:
        raise MissingDependencyError("Polygraphy (polygraphy)", purpose, "pip install polygraphy==0.53.6") from None
    # Polygraphy prints INFO lines on stdout, which must stay clean for --json; its warnings still show.
    G_LOGGER.module_severity = G_LOGGER.WARNING
    version = TrtVersion.parse(trt.__version__)
    if not version.supported:
        raise UserError("TensorRT {} is too old: this tool needs 8.5 or newer (named I/O tensors)".format(version))
    return trt


def tensorrt_available() -> bool:
    """Whether ``import tensorrt`` can work here, without importing it (it is slow)."""
    try:
        return importlib.util.find_spec("tensorrt") is not None
    except (ImportError, ValueError):
        return False


def polygraphy_errors() -> tuple:
    """Polygraphy's exception type (its ``G_LOGGER.critical`` raises it), for ``except`` clauses."""
    from polygraphy.exception import PolygraphyException
    return (PolygraphyException,)
