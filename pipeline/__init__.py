"""The user's one command: export, FP16, INT8, engines, benchmark, report and bundle in one run."""
