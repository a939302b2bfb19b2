"""Attention modules, one per file: ECA, SE and CBAM."""
from .cbam import CBAM
from .eca import ECALayer, adaptive_kernel_size
from .se import SELayer

__all__ = ["CBAM", "ECALayer", "SELayer", "adaptive_kernel_size"]
