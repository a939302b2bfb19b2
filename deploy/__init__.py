"""Torch-free runtime: preprocessing, model metadata, runners, TensorRT build and Jetson inference.

Everything under deploy/ is copied onto Jetson boards, so it imports only the standard library, numpy,
Pillow and (lazily) onnxruntime, tensorrt and CUDA bindings, and keeps Python 3.8 syntax.
"""
