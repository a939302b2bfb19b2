"""TensorRT engines: build from ONNX, sidecars, the engine cache, and the CUDA bindings the runner needs.

Nothing here imports ``tensorrt`` or a CUDA binding at module load; they are imported inside the functions that
use them, so ``--help`` and the ONNX Runtime path work on machines without them.

- ``compat``: the only module that knows how TensorRT 8.5/8.6 (JetPack 5), 10.x (JetPack 6) and 11.x differ.
- ``build``: options, the version-dependent build plan, the build itself and the equivalent trtexec line.
- ``profiles``: batch ranges and optimization-profile shapes, and their checks at run time.
- ``onnx_info``: input shapes and precision (FP16, Q/DQ) of an ONNX model, without TensorRT.
- ``calibrator``: the legacy implicit-INT8 path from a calibration cache, with its header check.
- ``sidecar``: the JSON written beside each engine, and the check made before an engine is loaded.
- ``engine_cache``: engines built on first use, named by model hash, TensorRT version, device and precision.
- ``cuda``: device memory, streams, events and CUDA graphs through cuda-python, pycuda or libcudart.so.
- ``inspect``: layer precisions read back from a built engine.
"""
