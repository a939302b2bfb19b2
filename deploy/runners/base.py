"""The runner interface: ``activate() / infer(feed_dict) / deactivate()``, usable as a context manager.

``infer`` checks state and input names, then calls ``infer_impl``, which backends override. Every call's
wall time is recorded in ``inference_times`` (seconds), so benchmarks and deploy.infer read the same clock.
"""
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import UserError


@dataclass(frozen=True)
class TensorMeta:
    """Shape (None or a string for dynamic axes) and numpy dtype of a named tensor."""

    shape: Tuple
    dtype: np.dtype


class BaseRunner:
    backend = "base"

    def __init__(self, name: Optional[str] = None):
        self.name = name or self.backend
        self.is_active = False
        self.inference_times: List[float] = []

    # -- lifecycle -------------------------------------------------------------------------------------
    def activate(self) -> "BaseRunner":
        if not self.is_active:
            self.activate_impl()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self.deactivate_impl()
            self.is_active = False

    def __enter__(self) -> "BaseRunner":
        return self.activate()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.deactivate()

    # -- inference -------------------------------------------------------------------------------------
    def infer(self, feed_dict: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if not self.is_active:
            raise RuntimeError("{} is not active; use it in a `with` block or call activate()".format(self.name))
        expected = self.get_input_metadata()
        missing = sorted(set(expected) - set(feed_dict))
        unknown = sorted(set(feed_dict) - set(expected))
        if missing or unknown:
            raise UserError("{}: inputs do not match the model (missing {}, unknown {})".format(
                self.name, missing or "none", unknown or "none"))
        start = time.perf_counter()
        outputs = self.infer_impl(feed_dict)
        self.inference_times.append(time.perf_counter() - start)
        return outputs

    @property
    def last_inference_time(self) -> Optional[float]:
        return self.inference_times[-1] if self.inference_times else None

    def describe(self) -> Dict[str, object]:
        """What really runs, for reports (backend, providers, device, precision, ...)."""
        return {"name": self.name, "backend": self.backend}

    # -- to override -----------------------------------------------------------------------------------
    def activate_impl(self) -> None:
        raise NotImplementedError

    def deactivate_impl(self) -> None:
        raise NotImplementedError

    def get_input_metadata(self) -> Dict[str, TensorMeta]:
        raise NotImplementedError

    def get_output_metadata(self) -> Dict[str, TensorMeta]:
        raise NotImplementedError

    def infer_impl(self, feed_dict: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        raise NotImplementedError
