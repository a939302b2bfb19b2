"""`python -m demo --out DIR` (`make demo`): two pipeline runs and one report that opens with what was measured.

1. Accuracy: a narrow ECA-ResNet-18 trained here on scikit-learn's handwritten digits (about 10 s on 2 cores,
   cached under DIR), calibrated on training images and scored on held-out ones, so the parity table shows real
   accuracy for FP32, FP16 and both INT8 models.
2. Speed: ECA-ResNet-50 at 224x224 with random weights (no checkpoint can be downloaded here), timed on the
   sample photos; its timings are real, its accuracy is not, and the report says so where its numbers appear.
"""
import json
import os
import re
from typing import Callable, Dict, List, Optional, Tuple

from data.digits import DIGITS_ARCH, INPUT_SIZE, DigitsModel, prepare_digits
from deploy.fileio import write_text
from pipeline.run import PipelineConfig, PipelineResult, run_pipeline

SPEED_ARCH = "eca_resnet50"
# Calibration draws 600 of the 1,204 training digits; the 593 held-out ones split into judges and measured ones.
DIGITS_NUM_IMAGES = 600


def _count_images(folder: str) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def sections(markdown: str) -> Dict[str, str]:
    """``## heading`` -> the text under it, for the reports the pipeline writes."""
    found: Dict[str, str] = {}
    for block in re.split(r"^## ", markdown, flags=re.MULTILINE)[1:]:
        heading, _, body = block.partition("\n")
        found[heading.strip()] = body.strip()
    return found


def _relink(markdown: str, folder: str) -> str:
    return re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", lambda m: "![{}]({}/{})".format(m.group(1), folder, m.group(2)),
                  markdown)


def _section(report: Dict[str, str], prefix: str) -> str:
    return next(body for heading, body in report.items() if heading.startswith(prefix))


def demo_markdown(digits: DigitsModel, digits_md: str, speed_md: str, measured_images: Optional[int] = None) -> str:
    """The demo's report; ``measured_images``: how many held-out images the accuracy rows were measured on (the
    pipeline keeps the others to judge the calibration), default all of them."""
    accuracy, speed = sections(digits_md), sections(speed_md)
    held_out = _count_images(digits.val_dir)
    measured = held_out if measured_images is None else measured_images
    trained = ("trained here in {:.0f} s".format(digits.trained_seconds) if digits.trained_seconds is not None
               else "trained here")
    lines = [
        "# eca-deploy demo",
        "",
        "What was measured, in this order: accuracy parity of a model with trained weights, then speed.",
        "",
        "## Accuracy: {} trained on handwritten digits, held-out images".format(DIGITS_ARCH),
        "",
        "A narrow {} ({}) on scikit-learn's digits ({:,} training images, upscaled to RGB), exported at {}x{}, "
        "calibrated on {:,} training images, its calibration judged on {:,} held-out images, and scored against the "
        "real labels of {:,} other held-out images that neither trained nor chose it. Rows: PyTorch, then ONNX "
        "Runtime running the FP32, FP16 and both INT8 models.".format(
            DIGITS_ARCH, trained, _count_images(digits.train_dir), INPUT_SIZE, INPUT_SIZE,
            min(DIGITS_NUM_IMAGES, _count_images(digits.train_dir)), held_out - measured, measured),
        "",
        _relink(_section(accuracy, "Parity"), "digits"),
        "",
        "## Speed: {} at 224x224, random weights".format(SPEED_ARCH),
        "",
        "No checkpoint can be downloaded here, so {} has **random weights** (seed 0): these timings are real, its "
        "accuracy is not (on the 9 unlabeled sample photos only agreement with PyTorch is measured; see "
        "`{}/report.md`).".format(SPEED_ARCH, SPEED_ARCH),
        "",
        _relink(_section(speed, "Throughput"), SPEED_ARCH),
        "",
        "## Not measured in this run",
        "",
        _section(speed, "Not measured"),
        "",
        "## Full reports",
        "",
        "- `digits/report.md`: the digits model, every step, speed and environment",
        "- `{}/report.md`: ECA-ResNet-50, every step, agreement and environment".format(SPEED_ARCH),
        "",
    ]
    return "\n".join(lines)


def run_demo(out: str, echo: Callable[[str], None], progress: bool = False, threads: Optional[int] = None,
             force: bool = False) -> Tuple[str, List[PipelineResult]]:
    """Both pipeline runs and ``out/report.md``; returns the report's path and the two results."""
    out = os.path.abspath(out)
    digits = prepare_digits(os.path.join(out, "digits_data"), echo)
    echo("demo: 1/2 pipeline on the trained digits model (accuracy)")
    accuracy = run_pipeline(PipelineConfig(
        arch=DIGITS_ARCH, weights=digits.checkpoint, calib_data=digits.train_dir, eval_data=digits.val_dir,
        input_size=INPUT_SIZE, out=os.path.join(out, "digits"), num_images=DIGITS_NUM_IMAGES,
        threads=threads, force=force, progress=progress), echo=echo)
    echo("demo: 2/2 pipeline on {} at 224x224, random weights (speed)".format(SPEED_ARCH))
    speed = run_pipeline(PipelineConfig(arch=SPEED_ARCH, out=os.path.join(out, SPEED_ARCH), threads=threads,
                                        force=force, progress=progress), echo=echo)
    with open(accuracy.report["markdown"], "r", encoding="utf-8") as handle:
        digits_md = handle.read()
    with open(speed.report["markdown"], "r", encoding="utf-8") as handle:
        speed_md = handle.read()
    path = os.path.join(out, "report.md")
    with open(accuracy.report["json"], "r", encoding="utf-8") as handle:
        measured = json.load(handle)["benchmark"]["data"]["num_images"]
    write_text(path, demo_markdown(digits, digits_md, speed_md, measured))
    return path, [accuracy, speed]
