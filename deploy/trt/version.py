"""The one TensorRT version codec: parse "10.3.0.30", encode/decode the calibration-cache number, and say what a
version can do. Every other module asks here instead of comparing major versions itself.

Sources: TensorRT's Python API references (8.5, 8.6, 10.x, 11.x), "Migrating from TensorRT 10.x to 11.x" and
"Removed Python APIs and Replacements"; NV_TENSORRT_VERSION in NvInferVersion.h for the cache number.
"""
import re
from typing import NamedTuple, Optional, Tuple, Union

from ..errors import UserError

# The oldest TensorRT this project builds for: JetPack 5.1 ships 8.5.2 (named I/O tensors start at 8.5).
MIN_VERSION = (8, 5)
# The dry run's target when TensorRT is not installed: JetPack 6.1/6.2 ship TensorRT 10.3.
DEFAULT_TARGET = "10.3.0"


class TrtVersion(NamedTuple):
    major: int
    minor: int
    patch: int = 0
    build: Optional[int] = None

    @classmethod
    def parse(cls, text: Union[str, "TrtVersion"]) -> "TrtVersion":
        if isinstance(text, TrtVersion):
            return text
        match = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?(?:\.(\d+))?\s*$", str(text))
        if not match:
            raise UserError("bad TensorRT version {!r}; give major.minor[.patch], e.g. 8.6 or 10.3.0".format(text))
        major, minor, patch, build = match.groups()
        return cls(int(major), int(minor), int(patch or 0), int(build) if build is not None else None)

    @property
    def release(self) -> Tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    def __str__(self) -> str:
        parts = list(self.release) + ([self.build] if self.build is not None else [])
        return ".".join(str(part) for part in parts)

    def same_release(self, other: "TrtVersion") -> bool:
        """Equal as far as both are known: "10.3.0" (pip) matches "10.3.0.30" (JetPack)."""
        if self.release != other.release:
            return False
        return self.build is None or other.build is None or self.build == other.build

    # -- what the version can do (documented ranges) -------------------------------------------------------
    @property
    def supported(self) -> bool:
        return self.release[:2] >= MIN_VERSION

    @property
    def has_weak_typing(self) -> bool:
        """BuilderFlag.FP16/INT8 exist (8.x, 10.x); 11.0 removed them, every network is strongly typed."""
        return self.major < 11

    @property
    def has_strongly_typed_flag(self) -> bool:
        """NetworkDefinitionCreationFlag.STRONGLY_TYPED / trtexec --stronglyTyped: 10.x only (11 is always strong)."""
        return self.major == 10

    @property
    def has_implicit_int8(self) -> bool:
        """INT8 calibrators and calibration caches: up to 10.x (deprecated in 10.1, removed in 11.0)."""
        return self.major < 11

    @property
    def has_dla(self) -> bool:
        """DLA is a JetPack (8.x, 10.x) feature; TensorRT 11.4 does not support JetPack."""
        return self.major < 11

    @property
    def has_tensor_profile_shape(self) -> bool:
        """ICudaEngine.get_tensor_profile_shape; 8.x has get_profile_shape instead (removed in 10.0)."""
        return self.major >= 10

    @property
    def has_compatibility_options(self) -> bool:
        """--version-compatible, --hardware-compatible and --opt-level start at 8.6 (not on JetPack 5)."""
        return self.release[:2] >= (8, 6)

    # -- the calibration cache header number ---------------------------------------------------------------
    @property
    def cache_number(self) -> int:
        """NV_TENSORRT_VERSION as a cache header writes it: 8.6.1 -> 8601 (major*1000), 10.3.0 -> 100300
        (TensorRT 10 changed the macro to major*10000)."""
        unit = 10000 if self.major >= 10 else 1000
        return self.major * unit + self.minor * 100 + self.patch

    @classmethod
    def from_cache_number(cls, number: int) -> "TrtVersion":
        """The inverse of ``cache_number``: 8601 -> 8.6.1, 100300 -> 10.3.0."""
        number = int(number)
        unit = 10000 if number >= 100000 else 1000
        return cls(number // unit, number % unit // 100, number % 100)


def parse_version_or_number(version: Union[str, int]) -> TrtVersion:
    """A version as users type it ("8.6", "10.3.0") or as a cache header holds it (8601, "100300")."""
    text = str(version).strip()
    if text.isdigit() and int(text) >= 1000:
        return TrtVersion.from_cache_number(int(text))
    parsed = TrtVersion.parse(text)
    if parsed.minor > 99 or parsed.patch > 99:
        raise UserError("bad TensorRT version {!r}: minor and patch must be below 100".format(version))
    return parsed
