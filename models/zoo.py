"""The paper's zoo and its baselines: ResNet, SE-, CBAM- and ECA-ResNet, MobileNetV2 and ECA-MobileNetV2."""
from typing import Sequence, Tuple, Union

from .layers import CBAM, ECALayer, SELayer, adaptive_kernel_size
from .mobilenetv2 import MobileNetV2
from .registry import register_model
from .resnet import BasicBlock, Bottleneck, ResNet

_DEPTHS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}

# k per stage of the released checkpoints; their names say which (eca_resnet50_k3557, ...).
RELEASED_ECA_KERNELS = {
    18: (3, 5, 7, 7),
    34: (3, 3, 5, 7),
    50: (3, 5, 5, 7),
    101: (3, 3, 5, 7),
    152: (3, 3, 5, 7),
}

KSize = Union[str, int, Sequence[int]]


def _stage_kernels(k_size: KSize) -> Tuple[int, ...]:
    """Four kernels, one per stage, or () for the adaptive rule (resolved per block)."""
    if isinstance(k_size, str):
        if k_size != "adaptive":
            raise ValueError("k_size must be 'adaptive', an odd int or four odd ints, got {!r}".format(k_size))
        return ()
    if isinstance(k_size, int):
        return (k_size,) * 4
    kernels = tuple(int(k) for k in k_size)
    if len(kernels) != 4:
        raise ValueError("k_size needs one kernel per stage (4), got {}".format(kernels))
    return kernels


def _resnet(depth, num_classes, attention_name=None, attention_factory=None, stem_width=64):
    # stem_width < 64 gives the narrow variants that keep the test suite fast.
    block, layers = _DEPTHS[depth]
    return ResNet(block, layers, num_classes, attention_name, attention_factory, stem_width)


def _eca_resnet(depth: int, num_classes: int, k_size: KSize = None, num_convs: int = 1, stem_width: int = 64):
    kernels = _stage_kernels(RELEASED_ECA_KERNELS[depth] if k_size is None else k_size)

    def factory(channels, stage):
        k = kernels[stage] if kernels else adaptive_kernel_size(channels)
        return ECALayer(channels, k, num_convs)

    return _resnet(depth, num_classes, "eca", factory, stem_width)


def _se_resnet(depth: int, num_classes: int, reduction: int = 16, stem_width: int = 64):
    return _resnet(depth, num_classes, "se", lambda channels, stage: SELayer(channels, reduction), stem_width)


def _cbam_resnet(depth: int, num_classes: int, reduction: int = 16, stem_width: int = 64):
    return _resnet(depth, num_classes, "cbam", lambda channels, stage: CBAM(channels, reduction), stem_width)


@register_model("resnet")
def resnet18(num_classes=1000, stem_width=64):
    return _resnet(18, num_classes, stem_width=stem_width)


@register_model("resnet")
def resnet34(num_classes=1000, stem_width=64):
    return _resnet(34, num_classes, stem_width=stem_width)


@register_model("resnet")
def resnet50(num_classes=1000, stem_width=64):
    return _resnet(50, num_classes, stem_width=stem_width)


@register_model("resnet")
def resnet101(num_classes=1000, stem_width=64):
    return _resnet(101, num_classes, stem_width=stem_width)


@register_model("resnet")
def resnet152(num_classes=1000, stem_width=64):
    return _resnet(152, num_classes, stem_width=stem_width)


@register_model("resnet", "se")
def se_resnet18(num_classes=1000, reduction=16, stem_width=64):
    return _se_resnet(18, num_classes, reduction, stem_width)


@register_model("resnet", "se")
def se_resnet34(num_classes=1000, reduction=16, stem_width=64):
    return _se_resnet(34, num_classes, reduction, stem_width)


@register_model("resnet", "se")
def se_resnet50(num_classes=1000, reduction=16, stem_width=64):
    return _se_resnet(50, num_classes, reduction, stem_width)


@register_model("resnet", "cbam")
def cbam_resnet18(num_classes=1000, reduction=16, stem_width=64):
    return _cbam_resnet(18, num_classes, reduction, stem_width)


@register_model("resnet", "cbam")
def cbam_resnet34(num_classes=1000, reduction=16, stem_width=64):
    return _cbam_resnet(34, num_classes, reduction, stem_width)


@register_model("resnet", "cbam")
def cbam_resnet50(num_classes=1000, reduction=16, stem_width=64):
    return _cbam_resnet(50, num_classes, reduction, stem_width)


@register_model("resnet", "eca")
def eca_resnet18(num_classes=1000, k_size=None, num_convs=1, stem_width=64):
    return _eca_resnet(18, num_classes, k_size, num_convs, stem_width)


@register_model("resnet", "eca")
def eca_resnet34(num_classes=1000, k_size=None, num_convs=1, stem_width=64):
    return _eca_resnet(34, num_classes, k_size, num_convs, stem_width)


@register_model("resnet", "eca")
def eca_resnet50(num_classes=1000, k_size=None, num_convs=1, stem_width=64):
    return _eca_resnet(50, num_classes, k_size, num_convs, stem_width)


@register_model("resnet", "eca")
def eca_resnet101(num_classes=1000, k_size=None, num_convs=1, stem_width=64):
    return _eca_resnet(101, num_classes, k_size, num_convs, stem_width)


@register_model("resnet", "eca")
def eca_resnet152(num_classes=1000, k_size=None, num_convs=1, stem_width=64):
    return _eca_resnet(152, num_classes, k_size, num_convs, stem_width)


@register_model("mobilenet_v2")
def mobilenet_v2(num_classes=1000, width_mult=1.0):
    return MobileNetV2(num_classes, width_mult)


def _released_mobilenet_kernel(channels: int) -> int:
    # The released eca_mobilenetv2_k13 checkpoint: k=1 below 96 output channels, 3 from 96 on.
    return 1 if channels < 96 else 3


@register_model("mobilenet_v2", "eca")
def eca_mobilenet_v2(num_classes=1000, width_mult=1.0, k_size=None, num_convs=1):
    if k_size is None:
        choose = _released_mobilenet_kernel
    elif k_size == "adaptive":
        choose = adaptive_kernel_size
    elif isinstance(k_size, int):
        choose = lambda channels: k_size  # noqa: E731
    else:
        raise ValueError("k_size for eca_mobilenet_v2 is None (released k13), 'adaptive' or an odd int")
    return MobileNetV2(num_classes, width_mult, lambda c: ECALayer(c, choose(c), num_convs), dropout=0.25)
