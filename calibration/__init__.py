"""Calibration: images for INT8 calibration, activation ranges, FP16 conversion and Q/DQ placement."""

from .api import CalibrationResult, calibrate  # noqa: E402,F401  (the public entry point)
