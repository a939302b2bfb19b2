"""Bounds for INT8 tests that hold on every CPU, because they come from what the same run measures.

ONNX Runtime's INT8 kernels round differently by CPU: on x86-64 without VNNI its u8s8 kernels use VPMADDUBSW,
whose int16 sums can saturate (ONNX Runtime's Quantization docs, "When and why do I need to try U8U8?"), and VNNI
CPUs (AVX512-VNNI, AVX-VNNI) do not. A bound tuned on one kind fails on the other (issue 28: four tests tuned on an
AVX2-only EPYC failed on an AVX-512 VNNI one). What the same run can measure instead: how many images the order of
float operations alone changes for a model (run as optimized and as written, the kernel-order spread the bundle's
bars use, deploy.reference), and the FP32 model's own answers.
"""
import numpy as np


def order_flips(model, images: np.ndarray) -> int:
    """Images whose top-1 class differs between ``model`` (onnx.ModelProto) run as optimized and as written:
    the same arithmetic in another order, on this CPU's kernels."""
    from calibration.selection import run_logits
    optimized, as_written = run_logits(model, images), run_logits(model, images, optimize=False)
    return int(np.sum(np.argmax(optimized, axis=1) != np.argmax(as_written, axis=1)))


def missed(score, num_images: int) -> int:
    """Images a calibration Score (agreement in percent) disagrees with FP32 on."""
    return int(round((100.0 - score.agreement) * num_images / 100.0))
