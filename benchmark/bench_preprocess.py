"""Throughput of calibration image loading: JPEG decode + resize + crop + normalize, in images per second.

Run: ``python -m benchmark.bench_preprocess [--num-images 256] [--workers 2] [--json]``

The images are ImageNet-like JPEGs (500x375 or 375x500, quality 90) synthesized from scikit-image's photos
into a temporary folder. Loading goes through data.datasets.load_images with the cache off, so every
run decodes. One stage breakdown (single thread) shows where the time goes.
"""
import argparse
import json
import os
import sys
import tempfile
import time
from typing import Dict, List

import numpy as np
from PIL import Image

from benchmark.environment import cpu_count, cpu_model
from data.datasets import ImageSet, decode_crop, load_images, normalize_crops
from deploy.preprocess import PreprocessSpec, decode_image, resize_and_crop

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
          "colorwheel")
TARGET_IMAGES_PER_S = 300.0


def make_jpegs(directory: str, count: int, quality: int = 90, seed: int = 0) -> List[str]:
    """``count`` distinct 500x375 (one in four 375x500) JPEGs: seeded crops and flips of the photos."""
    from skimage import data

    photos = [Image.fromarray(getattr(data, name)()).convert("RGB") for name in PHOTOS]
    rng = np.random.RandomState(seed)
    paths = []
    for index in range(count):
        photo = photos[index % len(photos)]
        size = (375, 500) if index % 4 == 3 else (500, 375)
        scale = rng.uniform(0.6, 1.0) * min(photo.width / size[0], photo.height / size[1])
        w, h = int(size[0] * scale), int(size[1] * scale)
        left, top = rng.randint(0, photo.width - w + 1), rng.randint(0, photo.height - h + 1)
        image = photo.crop((left, top, left + w, top + h)).resize(size, Image.LANCZOS)
        if rng.rand() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        path = os.path.join(directory, "{:05d}.JPEG".format(index))
        image.save(path, quality=quality)
        paths.append(path)
    return paths


def time_loader(paths: List[str], spec: PreprocessSpec, workers: int, executor: str, repeats: int) -> Dict:
    images = ImageSet(paths=paths, labels=None, class_names=None)
    seconds, cpu_seconds = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        loaded = load_images(images, spec, workers=workers, use_cache=False, progress=False, executor=executor)
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(_cpu_seconds() - cpu_start)
        assert len(loaded) == len(paths), loaded.summary()
    best, median = min(seconds), float(np.median(seconds))
    return {"workers": workers, "executor": executor, "images": len(paths),
            "images_per_s_best": len(paths) / best, "images_per_s_median": len(paths) / median,
            "cpu_ms_per_image": 1e3 * float(np.median(cpu_seconds)) / len(paths), "seconds": seconds}


def _cpu_seconds() -> float:
    """CPU time of this process and its reaped children (the process pool's workers), all threads."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def stage_breakdown(paths: List[str], spec: PreprocessSpec) -> Dict[str, float]:
    """CPU milliseconds per image for each stage, one thread."""
    start = time.thread_time()  # CPU time, so that other load on the machine does not inflate it
    decoded = [decode_image(p) for p in paths]
    t_decode = time.thread_time()
    crops = np.stack([np.asarray(resize_and_crop(image, spec)) for image in decoded])
    t_resize = time.thread_time()
    normalize_crops(crops, spec)
    t_norm = time.thread_time()
    n = len(paths)
    return {"decode_ms": 1e3 * (t_decode - start) / n, "resize_crop_ms": 1e3 * (t_resize - t_decode) / n,
            "normalize_ms": 1e3 * (t_norm - t_resize) / n}


def run_benchmark(num_images: int = 256, workers: int = 2, repeats: int = 3, input_size: int = 224) -> Dict:
    spec = PreprocessSpec.for_input_size(input_size)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory(prefix="bench-preprocess-") as directory:
        paths = make_jpegs(directory, num_images)
        for path in paths:  # the page cache warm-up, so the numbers are decode, not disk
            decode_crop(path, spec)
        configs = [(1, "thread"), (workers, "thread"), (workers, "process")]
        runs = [time_loader(paths, spec, w, executor, repeats) for w, executor in configs]
        stages = stage_breakdown(paths, spec)
        mean_bytes = float(np.mean([os.path.getsize(p) for p in paths]))
    main = runs[1]
    return {
        "benchmark": "preprocess",
        "spec": spec.to_metadata(),
        "jpeg": {"size": "500x375 and 375x500", "quality": 90, "mean_bytes": mean_bytes},
        "environment": {"cpu": cpu_model(), "cpu_cores": cpu_count(), "python": sys.version.split()[0],
                        "pillow": Image.__version__, "numpy": np.__version__,
                        # other work on the machine lowers the wall-clock numbers; this makes it visible
                        "load_average_1min": load_before},
        "runs": runs,
        "stages_ms_per_image": stages,
        "images_per_s": main["images_per_s_median"],
        "target_images_per_s": TARGET_IMAGES_PER_S,
        "meets_target": main["images_per_s_median"] >= TARGET_IMAGES_PER_S,
    }


def format_report(result: Dict) -> str:
    lines = ["decode + preprocess, {} JPEGs ({}, q90, {:.0f} KB avg), crop {}, {} on {} cores".format(
        result["runs"][0]["images"], result["jpeg"]["size"], result["jpeg"]["mean_bytes"] / 1024,
        result["spec"]["input_size"], result["environment"]["cpu"], result["environment"]["cpu_cores"])]
    lines.append("{:>8} {:>9} {:>14} {:>12} {:>12}".format(
        "workers", "executor", "img/s median", "img/s best", "CPU ms/img"))
    for run in result["runs"]:
        lines.append("{:>8} {:>9} {:>14.0f} {:>12.0f} {:>12.2f}".format(
            run["workers"], run["executor"], run["images_per_s_median"], run["images_per_s_best"],
            run["cpu_ms_per_image"]))
    stages = result["stages_ms_per_image"]
    lines.append("one thread, CPU ms/image: decode {decode_ms:.2f}, resize+crop {resize_crop_ms:.2f}, "
                 "normalize {normalize_ms:.2f}".format(**stages))
    load = result["environment"]["load_average_1min"]
    if load is not None:
        lines.append("load average before the run: {:.2f} on {} cores".format(load, result["environment"]["cpu_cores"]))
    lines.append("{:.0f} img/s with the default loader (target {:.0f}): {}".format(
        result["images_per_s"], result["target_images_per_s"], "met" if result["meets_target"] else "NOT met"))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.bench_preprocess", description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    result = run_benchmark(args.num_images, args.workers, args.repeats, args.input_size)
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
