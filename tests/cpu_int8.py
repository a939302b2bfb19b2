"""Whether this CPU's ONNX Runtime INT8 kernels saturate: what the CPU-target (u8 activation, s8 weight) bounds
of the tests depend on.

ONNX Runtime's documentation (Quantization, "When and why do I need to try U8U8?") says that on x86-64 with AVX2
or AVX-512 but without VNNI, its u8s8 kernels use VPMADDUBSW, whose int16 intermediate sums can saturate, and
that VNNI (AVX512-VNNI, AVX-VNNI) does not have the issue. On such a machine the CPU-target model of the digits
networks measurably loses a little more (seen 2026-12-03 on an AMD EPYC exposing AVX2 only: floating every conv
of a minmax CPU-target MobileNetV2 reached 97.7% agreement, not 99%, and the ECA gates' mean error 0.015, not
0.01). The TensorRT-target models are s8s8 and do not use that path.
"""
import platform


def _flags():
    try:
        with open("/proc/cpuinfo", "r", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def u8s8_saturates() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    return not {"avx512_vnni", "avx_vnni", "amx_int8"} & _flags()


U8S8_SATURATES = u8s8_saturates()
