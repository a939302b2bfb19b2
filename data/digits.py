"""Real labeled images without a download: scikit-learn's bundled handwritten digits as ImageFolder trees.

The 8x8 digits are upscaled to RGB images and written as ``root/<class>/<n>.png``, and small ECA/SE
networks are trained on them in seconds, so the demo, the INT8, FP16 and attention checks and the tests run
on real trained weights and report real accuracy.
"""
import json
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch
from PIL import Image

import models
from deploy.errors import UserError
from deploy.fileio import atomic_path, sha256_file, write_json

DIGITS_ARCH = "eca_resnet18"
DIGITS_FORMAT = 1  # bump when the training recipe changes, so a cached checkpoint is retrained
DIGIT_CLASSES = [str(d) for d in range(10)]
IMAGE_SIZE = 40   # what is written to disk; the models' preprocessing resizes to 37 and crops 32
INPUT_SIZE = 32


def load_digits_arrays() -> Tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise UserError("the digits data ship with scikit-learn: pip install scikit-learn "
                        "(it is in requirements-dev.txt)") from None
    digits = load_digits()
    return digits.images.astype(np.float32), digits.target.astype(np.int64)


def digit_to_gray(pixels: np.ndarray) -> Image.Image:
    """A digit's 8x8 pixels (0-16) as an 8x8 grayscale image."""
    return Image.fromarray(np.uint8(np.clip(pixels / 16.0 * 255.0, 0, 255)), mode="L")


def digit_to_image(pixels: np.ndarray, size: int = IMAGE_SIZE) -> Image.Image:
    return digit_to_gray(pixels).resize((size, size), Image.BICUBIC).convert("RGB")


def split_indices(n: int, holdout: float = 0.33, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    order = np.random.RandomState(seed).permutation(n)
    cut = int(round(n * (1 - holdout)))
    return np.sort(order[:cut]), np.sort(order[cut:])


def write_imagefolder(root: str, indices=None, size: int = IMAGE_SIZE, fmt: str = "png",
                      render: Optional[Callable[[np.ndarray], Image.Image]] = None) -> Dict[str, int]:
    """Write digits (all, or ``indices``) as ``root/<digit>/<index>.<fmt>``; return counts per class.
    ``render`` turns a digit's 8x8 pixels into the image written (default: digit_to_image at ``size``)."""
    images, labels = load_digits_arrays()
    indices = range(len(images)) if indices is None else indices
    render = render or (lambda pixels: digit_to_image(pixels, size))
    counts: Dict[str, int] = {}
    for index in indices:
        label = DIGIT_CLASSES[labels[index]]
        folder = os.path.join(root, label)
        os.makedirs(folder, exist_ok=True)
        render(images[index]).save(os.path.join(folder, "{:04d}.{}".format(index, fmt)))
        counts[label] = counts.get(label, 0) + 1
    return counts


def make_digits_split(root: str) -> Tuple[str, str]:
    """``root/train`` and ``root/val`` ImageFolder trees from one fixed split."""
    images, _ = load_digits_arrays()
    train_idx, val_idx = split_indices(len(images))
    train_dir, val_dir = os.path.join(root, "train"), os.path.join(root, "val")
    write_imagefolder(train_dir, train_idx)
    write_imagefolder(val_dir, val_idx)
    return train_dir, val_dir


def train_digits_model(arch: str = "eca_resnet18", train_dir: str = None, epochs: int = 6, seed: int = 0,
                       stem_width: int = 16, lr: float = 3e-3, input_size: int = INPUT_SIZE,
                       epoch_done: Optional[Callable[[int, int, float], None]] = None,
                       **options) -> torch.nn.Module:
    """Train a narrow zoo model on the digits through the project's own preprocessing. ``epoch_done(epoch,
    epochs, seconds)`` is called after each epoch with the seconds it took."""
    from deploy.images import walk_images
    from deploy.preprocess import PreprocessSpec, preprocess_file

    torch.manual_seed(seed)
    if stem_width is not None:  # the ResNets' width; MobileNetV2 takes width_mult instead
        options["stem_width"] = stem_width
    model = models.create_model(arch, num_classes=10, **options)
    model.preprocess = PreprocessSpec.for_input_size(input_size)
    paths = walk_images(train_dir)
    x = torch.from_numpy(np.stack([preprocess_file(p, model.preprocess) for p in paths]))
    y = torch.tensor([int(os.path.basename(os.path.dirname(p))) for p in paths])
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * ((len(x) + 63) // 64))
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        for batch in torch.randperm(len(x), generator=generator).split(64):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            scheduler.step()
        if epoch_done is not None:
            epoch_done(epoch, epochs, time.perf_counter() - started)
    return model.eval()


def save_state_dict(model: torch.nn.Module, path: str) -> str:
    """An official-format training checkpoint: ``state_dict`` with DataParallel's ``module.`` prefixes, ``arch``."""
    with atomic_path(path) as tmp:
        torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}, "arch": model.arch},
                   tmp)
    return path


@dataclass
class DigitsModel:
    checkpoint: str
    train_dir: str
    val_dir: str
    trained_seconds: Optional[float]  # how long its training took (None: unknown)


def _say_remaining(echo: Callable[[str], None]) -> Callable[[int, int, float], None]:
    """After the first epoch, the time left as that epoch measured it: the only estimate worth printing."""
    def epoch_done(epoch: int, epochs: int, seconds: float) -> None:
        if epoch == 1 and epochs > 1:
            echo("digits: epoch 1 of {} took {:.1f} s; about {:.0f} s to go".format(epochs, seconds,
                                                                                 seconds * (epochs - 1)))
    return epoch_done


def prepare_digits(root: str, echo: Callable[[str], None] = print) -> DigitsModel:
    """The digits ImageFolder trees and a trained checkpoint under ``root``, reused when already there."""
    stamp_path = os.path.join(root, "digits_model.json")
    checkpoint = os.path.join(root, "{}_digits.pth".format(DIGITS_ARCH))
    train_dir, val_dir = os.path.join(root, "train"), os.path.join(root, "val")
    try:
        with open(stamp_path, "r", encoding="utf-8") as handle:
            stamp = json.load(handle)
        if stamp.get("format") == DIGITS_FORMAT and sha256_file(checkpoint) == stamp.get("checkpoint_sha256") \
                and os.path.isdir(train_dir) and os.path.isdir(val_dir):
            echo("digits: reusing the digits model trained earlier ({})".format(checkpoint))
            return DigitsModel(checkpoint, train_dir, val_dir, stamp.get("seconds"))
    except (OSError, ValueError):
        pass
    started = time.perf_counter()
    echo("digits: training {} (narrow) on scikit-learn's digits ...".format(DIGITS_ARCH))
    train_dir, val_dir = make_digits_split(root)
    save_state_dict(train_digits_model(DIGITS_ARCH, train_dir, epoch_done=_say_remaining(echo)), checkpoint)
    seconds = time.perf_counter() - started
    echo("digits: trained in {:.0f} s".format(seconds))
    write_json(stamp_path, {"format": DIGITS_FORMAT, "checkpoint_sha256": sha256_file(checkpoint),
                            "seconds": seconds})
    return DigitsModel(checkpoint, train_dir, val_dir, seconds)


def main(argv=None) -> int:
    """`python -m data.digits DIR`: a trained checkpoint and labeled images to follow the README's walkthrough."""
    import argparse

    from deploy.cliutil import run_main

    parser = argparse.ArgumentParser(prog="python -m data.digits", description=main.__doc__)
    parser.add_argument("root", help="Folder for train/, val/ and {}_digits.pth".format(DIGITS_ARCH))
    args = parser.parse_args(argv)

    def body() -> int:
        model = prepare_digits(args.root)
        print("checkpoint {} ({} classes, {}x{} input); images {} (training) and {} (held out)".format(
            model.checkpoint, len(DIGIT_CLASSES), INPUT_SIZE, INPUT_SIZE, model.train_dir, model.val_dir))
        return 0

    return run_main(body)


if __name__ == "__main__":
    raise SystemExit(main())
