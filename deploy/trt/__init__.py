"""TensorRT engines through Polygraphy: the build plan, the build, sidecars, the engine cache.

Nothing here imports ``tensorrt`` or Polygraphy at module load; they are imported inside the functions that use
them, so ``--help``, the dry run and the ONNX Runtime path work on machines without them.

- ``version``: the one TensorRT version codec (parsing, the calibration-cache number, what each version can do).
- ``plan``: build options, the honest precision and flags per TensorRT version, the trtexec/polygraphy lines.
- ``build``: the Polygraphy calls that build an engine, and the check that INT8 layers exist.
- ``profiles``: batch ranges and optimization-profile shapes, and their checks at run time.
- ``onnx_info``: input shapes and precision (FP16, Q/DQ) of an ONNX model, without TensorRT.
- ``calibrator``: legacy implicit INT8 from a calibration cache, with its version check.
- ``sidecar``: the JSON written beside each engine, and the check made before an engine is loaded.
- ``engine_cache``: engines built on first use, named by model hash, TensorRT version, device and precision.
- ``cuda``: CUDA events, graphs and the device name (what polygraphy.cuda lacks).
- ``inspect``: layer precisions read back from a built engine.
- ``compat``: lazy imports of TensorRT and Polygraphy with install hints.
"""
