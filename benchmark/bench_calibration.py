"""What `calibrate --method auto` costs against one explicit method, on the same model and images.

Run: ``python -m benchmark.bench_calibration [--model FP32.onnx --data DIR] [--num-images 512] [--repeats 2] [--json]``

Without ``--model``, an ECA-MobileNetV2 (width 0.5, 64x64, random weights: the cost does not depend on them) is
exported and calibrated on scikit-learn's digits, written as 64-pixel images. Images are decoded once, before
the clock starts, and both runs write both targets' INT8 models. The goal: auto costs at most 3x one method.
Random weights make the agreements meaningless; only the times count here. A measurement, not a test.
"""
import argparse
import json
import os
import sys
import tempfile
import time

GOAL_RATIO = 3.0
BASELINE_METHOD = "entropy"


def _digits_folder(directory: str, size: int = 64) -> str:
    """scikit-learn's digits as an ImageFolder tree of RGB PNGs (the same images the tests use)."""
    from data.digits import write_imagefolder
    root = os.path.join(directory, "digits")
    write_imagefolder(root, size=size)
    return root


def _default_model(directory: str) -> str:
    from exporter import export_model
    path = os.path.join(directory, "eca_mobilenet_v2.onnx")
    export_model("eca_mobilenet_v2", path, num_classes=10, input_size=64, width_mult=0.5, parity_batch_sizes=(1,))
    return path


def measure(model: str, data: str, num_images: int, directory: str, repeats: int = 2) -> dict:
    from calibration.api import calibrate
    from data.datasets import load_dataset
    from deploy.metadata import read_model_info
    images = load_dataset(data, read_model_info(model).preprocess, num_images=num_images,
                          cache_dir=os.path.join(directory, "cache"), progress=False)
    runs = {}
    for _ in range(repeats):  # interleaved (A, B, A, B), best of each: a busy spell hits both alike
        for method in (BASELINE_METHOD, "auto"):
            start = time.perf_counter()
            result = calibrate(model, targets=("tensorrt", "cpu"), method=method, images=images, fp16=False,
                               progress=False, output=os.path.join(directory, method, "model.int8.tensorrt.onnx"))
            seconds = time.perf_counter() - start
            run = runs.setdefault(method, {"seconds": seconds, "all_seconds": []})
            run["all_seconds"].append(round(seconds, 2))
            run["seconds"] = min(run["seconds"], seconds)
            run["choice"] = {t: o.candidate.name for t, o in result.targets.items()}
    ratio = runs["auto"]["seconds"] / runs[BASELINE_METHOD]["seconds"]
    return {"model": os.path.basename(model), "images": len(images), "runs": runs, "ratio": ratio,
            "goal": GOAL_RATIO, "met": ratio <= GOAL_RATIO}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.bench_calibration", description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="An FP32 .onnx from `eca-deploy export` (default: a random ECA-MobileNetV2).")
    parser.add_argument("--data", help="Calibration images (default: scikit-learn's digits).")
    parser.add_argument("--num-images", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2, help="Interleaved runs of each; the fastest counts.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="eca-bench-calib-") as directory:
        model = args.model or _default_model(directory)
        data = args.data or _digits_folder(directory)
        report = measure(model, data, args.num_images, directory, max(1, args.repeats))
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
    runs = report["runs"]
    print("calibrate, both targets, {} on {} images (fastest of {} interleaved runs):".format(
        report["model"], report["images"], max(1, args.repeats)))
    print("  --method {}: {:.1f} s".format(BASELINE_METHOD, runs[BASELINE_METHOD]["seconds"]))
    print("  --method auto: {:.1f} s (chose {})".format(runs["auto"]["seconds"], ", ".join(
        "{} for {}".format(name, target) for target, name in runs["auto"]["choice"].items())))
    print("  auto / {}: {:.2f}x (goal <= {:.0f}x: {})".format(BASELINE_METHOD, report["ratio"], GOAL_RATIO,
                                                           "met" if report["met"] else "NOT met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
