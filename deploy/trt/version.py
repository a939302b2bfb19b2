"""The one TensorRT version codec: parsing ("10.3.0.30"), the calibration-cache number, and what each version
can do. Other modules ask here instead of comparing major versions themselves.

Sources: TensorRT Python API references (8.5, 8.6, 10.x, 11.x), "Migrating from TensorRT 10.x to 11.x",
"Removed Python APIs and Replacements", the TensorRT 10.12.0 release notes (weak typing deprecated), and
NV_TENSORRT_VERSION in NvInferVersion.h (the cache number).
"""
import re
from typing import NamedTuple, Optional, Tuple, Union

from ..errors import UserError

MIN_VERSION = (8, 5)  # JetPack 5.1; the named I/O tensor API starts here
DEFAULT_TARGET = "10.3.0"  # what a dry run plans for without TensorRT: JetPack 6.1/6.2


class TrtVersion(NamedTuple):
    major: int
    minor: int
    patch: int = 0
    build: Optional[int] = None

    @classmethod
    def parse(cls, text: Union[str, "TrtVersion"]) -> "TrtVersion":
        if isinstance(text, TrtVersion):
            return text
        # a bounded number of digits per part: 10.3.99999999999999999999 is a typo, not a release
        match = re.match(r"^\s*(\d{1,2})\.(\d{1,2})(?:\.(\d{1,2})(?:\.(\d{1,6}))?)?\s*$", str(text)[:64])
        if not match:
            raise UserError("bad TensorRT version {!r}; give major.minor[.patch], e.g. 8.6 or 10.3.0 (minor and patch "
                            "below 100)".format(str(text)[:40]))
        major, minor, patch, build = match.groups()
        return cls(int(major), int(minor), int(patch or 0), None if build is None else int(build))

    @property
    def release(self) -> Tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    def __str__(self) -> str:
        return ".".join(str(part) for part in self.release + (() if self.build is None else (self.build,)))

    def same_release(self, other: "TrtVersion") -> bool:
        """Equal as far as both are known: "10.3.0" (pip) matches "10.3.0.30" (JetPack)."""
        return self.release == other.release and None in (self.build, other.build) or self == other

    # What the version has (documented ranges).
    supported = property(lambda self: self.release[:2] >= MIN_VERSION)
    has_weak_typing = property(lambda self: self.major < 11)  # BuilderFlag.FP16/INT8; 11.0 removed them
    has_strongly_typed_flag = property(lambda self: self.major == 10)  # 11.x is always strongly typed
    # 10.12 release notes: "Weak typing APIs deprecated ... TensorRT will be using strong-typing exclusively".
    weak_typing_deprecated = property(lambda self: self.major == 10 and self.minor >= 12)
    has_implicit_int8 = property(lambda self: self.major < 11)  # calibrators: deprecated 10.1, removed 11.0
    has_dla = property(lambda self: self.major < 11)  # a JetPack feature; TensorRT 11.4 has no JetPack
    has_tensor_profile_shape = property(lambda self: self.major >= 10)  # 8.x: get_profile_shape
    # DequantizeLinear of INT8 weight initializers (cli.py calibrate's TensorRT-target models), where the release's
    # own documents say so: 8.5's onnx-tensorrt operators.md (DequantizeLinear takes INT8), the 11.x Developer
    # Guide ("Quantized Weights"). For 8.6 and 10.x no such statement was found (docs/TENSORRT_VERSIONS.md).
    documents_int8_weights = property(lambda self: self.release[:2] == (8, 5) or self.major >= 11)
    # --version-compatible, --hardware-compatible, --opt-level: 8.6 and later (not JetPack 5).
    has_compatibility_options = property(lambda self: self.release[:2] >= (8, 6))

    @property
    def cache_number(self) -> int:
        """A calibration cache header's number: 8.6.1 -> 8601 (major*1000); 10.3.0 -> 100300 (10 uses *10000)."""
        return self.major * (10000 if self.major >= 10 else 1000) + self.minor * 100 + self.patch

    @classmethod
    def from_cache_number(cls, number: int) -> "TrtVersion":
        unit = 10000 if int(number) >= 100000 else 1000
        return cls(int(number) // unit, int(number) % unit // 100, int(number) % 100)


def parse_version_or_number(version: Union[str, int]) -> TrtVersion:
    """A version as users type it ("8.6", "10.3.0") or as a cache header holds it (8601, "100300")."""
    text = str(version).strip()
    if text.isdigit() and int(text) >= 1000:
        return TrtVersion.from_cache_number(int(text))
    parsed = TrtVersion.parse(text)
    if parsed.minor > 99 or parsed.patch > 99:
        raise UserError("bad TensorRT version {!r}: minor and patch must be below 100".format(version))
    return parsed
