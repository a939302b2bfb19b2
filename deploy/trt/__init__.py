"""TensorRT through Polygraphy: ``version`` (the one version codec), ``plan`` (options, honest precisions, flags
and command lines per version, no TensorRT needed), ``build`` (the Polygraphy calls and the INT8 check),
``profiles``, ``calibrator`` (implicit INT8 cache check), ``sidecar``, ``engine_cache``, ``inspect`` (layer
precisions), ``cuda`` (events and graphs Polygraphy lacks) and ``compat`` (lazy imports). Nothing here imports
``tensorrt`` or Polygraphy at module load, so ``--help``, the dry run and ONNX Runtime work without them.
"""
