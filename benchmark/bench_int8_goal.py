"""Issue 12's goal, measured: the default `calibrate` on ECA-MobileNetV2s it never saw, scored on unseen digits.

Run: ``python -m benchmark.bench_int8_goal [--widths 0.5,0.75,1.0] [--epochs 12] [--keep DIR] [--json]``

For each width an ECA-MobileNetV2 (official layout) is trained here on scikit-learn's digits, rotated, rescaled,
shifted and noisy at 73 pixels, read at 64x64. It is exported, and `calibrate` runs with no flag but the two
targets, on 512 of the 1400 training digits. Each INT8 model is then scored in ONNX Runtime against FP32 on the
397 digits that no step saw. The goal, per target: at least 99.5% top-1 agreement with FP32 and at most 0.5 pt
of top-1 lost. Training takes a few minutes per width on 2 cores. A measurement, not a test: which images tie
near the top decides agreement this close to 100%, so another seed or recipe moves it by a digit or two.

How far the measurement itself can be trusted is measured too. Each INT8 model runs twice: with ONNX Runtime's
graph optimizations, as `calibrate` scores it, and with none (every Q/DQ node as written). Both compute the
same Q/DQ arithmetic; only the order of float operations differs, so a value that lands near a rounding
boundary can land on the other side. "ref" is the agreement of the second run, "kernel" the unseen images whose
top-1 differs between the two runs, and "max dlogit" the largest logit difference between them. A TensorRT
engine, with its own kernels and fusions, is a third such order: agreements that differ by less than the kernel
flips are not told apart by any runtime.
"""
import argparse
import json
import os
import sys
import tempfile
import time

MIN_AGREEMENT = 99.5    # %, issue 12's goal
MAX_TOP1_DROP = 0.5     # points
IMAGE_SIZE = 73         # written to disk; the model's preprocessing resizes to 73 and crops 64
INPUT_SIZE = 64
VAL_SHARE = 397 / 1797.0
TARGETS = ("tensorrt", "cpu")


def noisy_digit(pixels, rng):
    """A digit as a harder photo: scaled by 0.7-1.05, shifted by up to 4 px, rotated by up to 25 degrees and
    overlaid with Gaussian noise (sigma 20 of 255)."""
    import numpy as np
    from PIL import Image
    from data.digits import digit_to_gray
    gray = digit_to_gray(pixels)
    side = int(round(IMAGE_SIZE * rng.uniform(0.7, 1.05)))
    canvas = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    offset = (IMAGE_SIZE - side) // 2
    dx, dy = rng.randint(-4, 5, size=2)
    canvas.paste(gray.resize((side, side), Image.BICUBIC), (offset + int(dx), offset + int(dy)))
    canvas = canvas.rotate(rng.uniform(-25, 25), resample=Image.BILINEAR)
    noisy = np.asarray(canvas, np.float32) + rng.normal(0, 20, canvas.size[::-1])
    return Image.fromarray(np.uint8(np.clip(noisy, 0, 255))).convert("RGB")


def write_noisy_digits(root: str):
    """(train_dir, val_dir): 1400 and 397 noisy digits as ImageFolder trees, the same for every run."""
    import numpy as np
    from data.digits import load_digits_arrays, split_indices, write_imagefolder
    train_idx, val_idx = split_indices(len(load_digits_arrays()[0]), holdout=VAL_SHARE, seed=0)
    folders = []
    for name, indices, seed in (("train", train_idx, 1), ("val", val_idx, 2)):
        rng = np.random.RandomState(seed)
        folder = os.path.join(root, name)
        write_imagefolder(folder, indices, render=lambda pixels, rng=rng: noisy_digit(pixels, rng))
        folders.append(folder)
    return tuple(folders)


def train_and_export(width: float, train_dir: str, directory: str, epochs: int) -> str:
    from data.digits import save_state_dict, train_digits_model
    from exporter import export_model
    model = train_digits_model("eca_mobilenet_v2", train_dir, epochs=epochs, stem_width=None, lr=1e-2,
                               input_size=INPUT_SIZE, width_mult=width)
    checkpoint = save_state_dict(model, os.path.join(directory, "eca_mobilenet_v2.pth"))
    path = os.path.join(directory, "eca_mobilenet_v2.onnx")
    export_model("eca_mobilenet_v2", path, weights=checkpoint, input_size=INPUT_SIZE, width_mult=width,
                 parity_batch_sizes=(2,))
    return path


def measure_width(width: float, train_dir: str, val_dir: str, directory: str, epochs: int) -> list:
    """One row per target: the default calibrate's choice and its agreement on the unseen digits."""
    import numpy as np
    import onnx
    from calibration.api import calibrate, load_classifier
    from calibration.selection import HeldOut, run_logits
    from data.datasets import load_dataset
    started = time.perf_counter()
    onnx_path = train_and_export(width, train_dir, directory, epochs)
    trained = time.perf_counter() - started
    model, info = load_classifier(onnx_path)
    started = time.perf_counter()
    result = calibrate(onnx_path, data_dir=train_dir, targets=TARGETS, fp16=False, progress=False)
    calibrated = time.perf_counter() - started
    val = load_dataset(val_dir, info.preprocess, num_images=10000, progress=False, num_classes=info.num_classes)
    unseen = HeldOut(model, np.ascontiguousarray(val.array, dtype=np.float32), np.asarray(val.labels))
    rows = []
    for target in TARGETS:
        outcome = result.targets[target]
        quantized = onnx.load(result.int8_models[target])
        optimized, written = (run_logits(quantized, unseen.images, optimize=flag) for flag in (True, False))
        score = unseen.score_logits(optimized)
        rows.append({
            "width": width, "target": target, "choice": outcome.candidate.name,
            "heldout_agreement": outcome.score["agreement"], "unseen_images": len(unseen),
            "fp32_top1": round(unseen.fp32_top1, 2), "agreement": round(score.agreement, 2),
            "top1_change": round(score.top1 - unseen.fp32_top1, 2), "kl": float("{:.4g}".format(score.kl)),
            "met": _meets_goal(score.agreement, unseen.fp32_top1 - score.top1),
            "reference_agreement": round(unseen.score_logits(written).agreement, 2),
            "kernel_flips": int(np.sum(optimized.argmax(1) != written.argmax(1))),
            "kernel_max_logit_diff": round(float(np.abs(optimized - written).max()), 3),
            "train_seconds": round(trained, 1), "calibrate_seconds": round(calibrated, 1),
        })
    return rows


HEADER = "{:>5} {:>6} {:<8} {:<18} {:>8} {:>8} {:>8} {:>8}  {:<6} {:>7} {:>6} {:>10}".format(
    "width", "FP32", "target", "choice", "held-out", "unseen", "top-1", "KL", "goal", "ref", "kernel",
    "max dlogit")


def _meets_goal(agreement: float, top1_drop: float) -> bool:
    """The goal read at two decimals, as issue 12 reads it: there 395 of 397 images (99.496%) is "99.50%", the
    figure of ModelOpt's best method that set the bar."""
    return round(agreement, 2) >= MIN_AGREEMENT and round(top1_drop, 2) <= MAX_TOP1_DROP


def format_row(row: dict) -> str:
    text = "{:>5g} {:>5.2f}% {:<8} {:<18} {:>7.2f}% {:>7.2f}% {:>+5.2f} pt {:>8.4g}  {:<6} {:>6.2f}% {:>6} {:>10.3f}"
    return text.format(
        row["width"], row["fp32_top1"], row["target"], row["choice"], row["heldout_agreement"], row["agreement"],
        row["top1_change"], row["kl"], "met" if row["met"] else "missed", row["reference_agreement"],
        row["kernel_flips"], row["kernel_max_logit_diff"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.bench_int8_goal", description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="0.5,0.75,1.0", help="Comma-separated width multipliers.")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--keep", help="Keep the digits, checkpoints and models in this folder.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    widths = [float(w) for w in args.widths.split(",") if w.strip()]
    with tempfile.TemporaryDirectory(prefix="eca-bench-goal-") as scratch:
        root = os.path.abspath(args.keep or scratch)
        train_dir, val_dir = write_noisy_digits(os.path.join(root, "digits"))
        rows = []
        if not args.json:
            print(HEADER, flush=True)
        for width in widths:
            directory = os.path.join(root, "width_{:g}".format(width))
            os.makedirs(directory, exist_ok=True)
            added = measure_width(width, train_dir, val_dir, directory, args.epochs)
            rows.extend(added)
            if not args.json:
                print("\n".join(format_row(row) for row in added), flush=True)
    if args.json:
        print(json.dumps({"goal": {"min_agreement": MIN_AGREEMENT, "max_top1_drop": MAX_TOP1_DROP},
                          "rows": rows}, indent=2, sort_keys=True))
    else:
        print("goal per target: >= {}% top-1 agreement with FP32, <= {} pt top-1 lost; met for {} of {}".format(
            MIN_AGREEMENT, MAX_TOP1_DROP, sum(r["met"] for r in rows), len(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
