"""Torch-free runtime: preprocessing, model metadata, runners, TensorRT build and Jetson inference.

Everything under deploy/ is copied onto Jetson boards, so it imports only the standard library, numpy,
Pillow and (lazily) onnxruntime, tensorrt and CUDA bindings, and keeps Python 3.8 syntax.
"""
import sys


def _require_numpy_and_pillow() -> None:
    """deploy/ runs on a device's own Python: without numpy or Pillow there, `python3 -m deploy.check` would die in
    an import traceback; say instead, in one line, what to install (JetPack's own packages first)."""
    missing = []
    for name, label, apt, pip in (("numpy", "numpy", "python3-numpy", "numpy"), ("PIL", "Pillow", "python3-pil",
                                                                                  "pillow")):
        try:
            __import__(name)
        except ImportError:
            missing.append((label, apt, pip))
    if missing:
        sys.stderr.write("error: deploy/ needs {} (sudo apt install {}, or pip install {})\n".format(
            " and ".join(m[0] for m in missing), " ".join(m[1] for m in missing), " ".join(m[2] for m in missing)))
        raise SystemExit(2)


_require_numpy_and_pillow()
