"""Options that more than one command takes, declared once: `pipeline` runs the steps of export, calibrate and
bundle, so it takes their options from here instead of restating them (a restated default drifts)."""
import click

from calibration.api import DEFAULT_NUM_HOLDOUT_IMAGES, DEFAULT_TARGET
from deploy.preprocess import PREPROCESS_OPTIONS
from deploy.validate import MAX_INPUT_SIZE, MAX_NUM_IMAGES, THREADS_PER_CORE, max_threads
from precision.qdq import TARGETS

from .common import at_most, thread_count


def preprocess_options(func):
    """The flags of deploy.preprocess.PREPROCESS_OPTIONS, declared there beside the config they set."""
    for option in reversed(PREPROCESS_OPTIONS):
        if option.is_flag:
            func = click.option(option.flag, option.dest, is_flag=True, help=option.help)(func)
            continue
        size = option.metavar == "N" and not option.choices  # a size in pixels: one bound, MAX_INPUT_SIZE
        kind = click.Choice(option.choices) if option.choices else (click.IntRange(min=1) if size else str)
        func = click.option(option.flag, option.dest, type=kind, metavar=option.metavar if not option.choices
                            else None, callback=at_most(MAX_INPUT_SIZE) if size else None,
                            help=option.help + (" At most {}.".format(MAX_INPUT_SIZE) if size else ""))(func)
    return func


def target_option(default=(DEFAULT_TARGET,)):
    """--target, repeatable; ``default`` is what the command does without it (said in --help)."""
    return click.option("--target", "targets", type=click.Choice(TARGETS), multiple=True,
                        help="Q/DQ placement: tensorrt (signed, TensorRT fusions) or cpu (uint8, ONNX Runtime). "
                             "Repeat for both. [default: {}]".format(", ".join(default)))


def min_agreement_option(func):
    return click.option(
        "--min-agreement", type=click.FloatRange(min=0, max=100), metavar="PCT",
        help="Top-1 agreement with the FP32 original (%) the INT8 models must show on unseen images: calibration "
             "floats layers until it holds, a bundle refuses a model below it, and the device is held to it.")(func)


def max_top1_drop_option(func):
    return click.option("--max-top1-drop", type=click.FloatRange(min=0, max=100), metavar="PT",
                        help="Top-1 points an INT8 model may lose on the unseen images (needs labels).")(func)


def holdout_count_option(func):
    return click.option("--holdout-images", "num_holdout_images", type=click.IntRange(min=1),
                        callback=at_most(MAX_NUM_IMAGES),
                        help="Most --holdout-data images that judge [default: half of them, at most {}, so the other "
                             "half stays unseen to measure the model; at most {}].".format(
                                 DEFAULT_NUM_HOLDOUT_IMAGES, MAX_NUM_IMAGES))(func)


def holdout_option(func):
    return click.option(
        "--holdout-data", "holdout_dir", type=click.Path(file_okay=False),
        help="Unseen images (e.g. a validation split the model never trained on) that judge auto's candidates "
             "and the targets; every calibration image then feeds the ranges. Without them the judges are held out "
             "from the calibration images, and agreement on training images reads high.")(func)


def workers_option(func):
    return click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True, callback=thread_count,
                        help="Image decoding threads (at most {}: {} per core).".format(
                            max_threads(), THREADS_PER_CORE))(func)


def threads_option(func):
    return click.option("--threads", type=click.IntRange(min=1), callback=thread_count,
                        help="CPU threads for every backend (default: all cores; at most {}: {} per core).".format(
                            max_threads(), THREADS_PER_CORE))(func)
