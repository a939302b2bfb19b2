"""Rebuild docs/attention_digits.png: SE- and ECA-ResNet-18 (narrow) trained on scikit-learn's digits, drawn by
`eca-deploy attention` one cell per block, compared models stacked.

    .venv/bin/python docs/make_attention_digits.py      # a few minutes on 2 CPU cores
"""
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from data.digits import make_digits_split, save_state_dict, train_digits_model  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="attention-digits-") as work:
        train_dir, val_dir = make_digits_split(os.path.join(work, "digits"))
        weights = {}
        for arch in ("eca_resnet18", "se_resnet18"):
            weights[arch] = save_state_dict(train_digits_model(arch, train_dir), os.path.join(work, arch + ".pth"))
        out = os.path.join(work, "out")
        subprocess.run([sys.executable, os.path.join(ROOT, "cli.py"), "attention", "eca_resnet18",
                        "--weights", weights["eca_resnet18"], "--compare", "se_resnet18",
                        "--compare-weights", weights["se_resnet18"], "--data", val_dir, "--input-size", "32",
                        "--out", out], check=True)
        shrink_png(os.path.join(out, "attention.png"), os.path.join(ROOT, "docs", "attention_digits.png"))


def shrink_png(source: str, target: str) -> None:
    """A 64-colour palette keeps the line plot unchanged to the eye at about a quarter of the size."""
    from PIL import Image

    with Image.open(source) as image:
        image.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)


if __name__ == "__main__":
    main()
