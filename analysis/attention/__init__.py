"""Per-class channel weights of ECA and SE blocks, and their parity in deployed models.

``api.analyze_attention`` is the entry point of ``eca-deploy attention``; importing this package imports torch.
"""
from .api import AttentionReport, analyze_attention
from .hooks import AttentionBlock, AttentionRecorder, find_attention_blocks, record_attention
from .stats import ClassMeanAccumulator, ClassMeans, ParityAccumulator, class_spread

__all__ = [
    "AttentionBlock", "AttentionRecorder", "AttentionReport", "ClassMeanAccumulator", "ClassMeans",
    "ParityAccumulator", "analyze_attention", "class_spread", "find_attention_blocks", "record_attention",
]
