"""What `make demo` runs: the whole pipeline on a model trained here (real accuracy) and on ECA-ResNet-50 (speed).

Nothing is downloaded: the trained model learns scikit-learn's bundled handwritten digits (``data.digits``).
"""
