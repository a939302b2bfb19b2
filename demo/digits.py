"""Real labeled images without a download: scikit-learn's bundled handwritten digits as ImageFolder trees.

The 8x8 digits are upscaled to RGB images and written as ``root/<class>/<n>.png``, and small ECA/SE
networks are trained on them in seconds, so the demo, the INT8, FP16 and attention checks and the tests run
on real trained weights and report real accuracy.
"""
import os
from typing import Dict, Tuple

import numpy as np
import torch
from PIL import Image

import models
from deploy.errors import UserError

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


def digit_to_image(pixels: np.ndarray, size: int = IMAGE_SIZE) -> Image.Image:
    gray = Image.fromarray(np.uint8(np.clip(pixels / 16.0 * 255.0, 0, 255)), mode="L")
    return gray.resize((size, size), Image.BICUBIC).convert("RGB")


def split_indices(n: int, holdout: float = 0.33, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    order = np.random.RandomState(seed).permutation(n)
    cut = int(round(n * (1 - holdout)))
    return np.sort(order[:cut]), np.sort(order[cut:])


def write_imagefolder(root: str, indices=None, size: int = IMAGE_SIZE, fmt: str = "png") -> Dict[str, int]:
    """Write digits (all, or ``indices``) as ``root/<digit>/<index>.<fmt>``; return counts per class."""
    images, labels = load_digits_arrays()
    indices = range(len(images)) if indices is None else indices
    counts: Dict[str, int] = {}
    for index in indices:
        label = DIGIT_CLASSES[labels[index]]
        folder = os.path.join(root, label)
        os.makedirs(folder, exist_ok=True)
        digit_to_image(images[index], size).save(os.path.join(folder, "{:04d}.{}".format(index, fmt)))
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
                       stem_width: int = 16, **options) -> torch.nn.Module:
    """Train a narrow zoo model on the digits through the project's own preprocessing."""
    from deploy.images import walk_images
    from deploy.preprocess import PreprocessSpec, preprocess_file

    torch.manual_seed(seed)
    model = models.create_model(arch, num_classes=10, stem_width=stem_width, **options)
    model.preprocess = PreprocessSpec.for_input_size(INPUT_SIZE)
    paths = walk_images(train_dir)
    x = torch.from_numpy(np.stack([preprocess_file(p, model.preprocess) for p in paths]))
    y = torch.tensor([int(os.path.basename(os.path.dirname(p))) for p in paths])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=epochs * ((len(x) + 63) // 64))
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(64):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            scheduler.step()
    return model.eval()


def save_state_dict(model: torch.nn.Module, path: str) -> str:
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}, "arch": model.arch}, path)
    return path
