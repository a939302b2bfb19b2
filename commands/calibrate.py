"""`eca-deploy calibrate`: INT8 Q/DQ models, the TensorRT calibration cache, the ranges JSON and the FP16 model."""
import click

from calibration.api import (DEFAULT_METHOD, DEFAULT_NUM_IMAGES, DEFAULT_TARGET, DEFAULT_TRT_VERSION,
                             HOLDOUT_SEPARATE, METHOD_CHOICES, judged_on)
from calibration.fallback import FLOAT_LAYER_SHARE
from precision.qdq import TARGETS
from calibration.ranges import DEFAULT_PERCENTILE
from calibration.selection import CANDIDATES, HOLDOUT_SHARE, MIN_HOLDOUT
from deploy.validate import MAX_NUM_IMAGES

from .common import at_most, emit_json, json_option, note, stderr_is_tty
from .options import (holdout_count_option, holdout_option, max_top1_drop_option, min_agreement_option,
                      target_option, workers_option)


@click.command("calibrate")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False),
              help="Calibration images: an ImageFolder tree or a folder of images.")
@click.option("--labels", "labels_file", type=click.Path(dir_okay=False),
              help="'<file> <class>' lines or ImageNet's LOC_val_solution.csv (for class-balanced sampling).")
@target_option()
@click.option("--method", type=click.Choice(METHOD_CHOICES), default=DEFAULT_METHOD, show_default=True,
              help="How each activation's clipping range is chosen. auto holds out {:.0%} of the images (at least "
                   "{}), tries {} and keeps, per target, the one that agrees best with FP32 on them (within one "
                   "image, the least KL).".format(
                       HOLDOUT_SHARE, MIN_HOLDOUT, ", ".join(c.name for c in CANDIDATES)))
@click.option("--percentile", type=click.FloatRange(min=0, max=100, min_open=True), default=DEFAULT_PERCENTILE,
              show_default=True, help="For --method percentile.")
@min_agreement_option
@max_top1_drop_option
@click.option("--max-float-layers", type=click.IntRange(min=0), metavar="N",
              help="Most layers left in float to meet a target [default: about {:.0%} of the quantized "
                   "layers].".format(FLOAT_LAYER_SHARE))
@click.option("--num-images", type=click.IntRange(min=1), default=DEFAULT_NUM_IMAGES, show_default=True,
              callback=at_most(MAX_NUM_IMAGES), help="At most {}.".format(MAX_NUM_IMAGES))
@holdout_option
@holdout_count_option
@click.option("--seed", type=click.IntRange(min=0, max=2 ** 32 - 1), default=0, show_default=True,
              help="Seed of the class-balanced image sample and of the held-out split.")
@workers_option
@click.option("--trt-version", default=DEFAULT_TRT_VERSION, show_default=True,
              help="TensorRT version stamped into the calibration cache (8.5.2 on JetPack 5.1, 10.3 on JetPack 6); "
                   "TensorRT ignores a cache from another version.")
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="Decoded-image cache (default: ~/.cache/eca-deploy).")
@click.option("--no-fp16", is_flag=True, help="Do not write the FP16 model.")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="INT8 model of the first target (default: MODEL stem + .int8.<target>.onnx); "
                   "the other files go beside it, named after its stem.")
@json_option
def calibrate_command(model, data_dir, labels_file, targets, method, percentile, min_agreement, max_top1_drop,
                      max_float_layers, num_images, holdout_dir, num_holdout_images, seed, workers, trt_version,
                      cache_dir, no_fp16, output, as_json):
    """Calibrate the FP32 classifier MODEL (.onnx from `eca-deploy export`) on the images in --data.

    Activation ranges come from running MODEL in ONNX Runtime once; the INT8 model(s), the TensorRT calibration
    cache (implicit INT8 on TensorRT 8.5-10.x), the ranges JSON and the FP16 model all use them. A missed
    --min-agreement / --max-top1-drop exits 1; the best model reached is still written.
    """
    from calibration.api import calibrate
    from calibration.fallback import AccuracyGoal
    from deploy.errors import CheckFailedError

    result = calibrate(model, data_dir=data_dir, labels_file=labels_file, targets=targets or (DEFAULT_TARGET,),
                       method=method, num_images=num_images, seed=seed, workers=workers, output=output,
                       trt_version=trt_version, cache_dir=cache_dir, fp16=not no_fp16, percentile=percentile,
                       progress=not as_json and stderr_is_tty(),
                       goal=AccuracyGoal(min_agreement, max_top1_drop), max_float_layers=max_float_layers,
                       holdout_dir=holdout_dir, num_holdout_images=num_holdout_images)
    for message in result.notes:
        note(message)
    if result.skipped:
        note("skipped {} unreadable image(s), e.g. {}: {}".format(len(result.skipped), *result.skipped[0]))
    if as_json:
        emit_json(result.to_dict())
    else:
        _print_result(result)
    if result.missed:
        target = result.missed[0]
        outcome = result.targets[target]
        raise CheckFailedError("{} missed for the {} target: best agreement {:.2f}% {} with {} float layer(s) "
                               "tried; the best model reached is written to {}".format(
                                   result.goal, target, outcome.score["agreement"], _judged(result),
                                   outcome.float_layers_tried, result.int8_models[target]))


def _judged(result) -> str:
    return judged_on(result.heldout_source, result.heldout_images)


def _target_met_line(result, target: str) -> str:
    """One line per met target, with the figure and the images it was measured on."""
    score = result.targets[target].score
    parts = []
    if result.goal_spec.min_agreement is not None:
        parts.append("{:.2f}% >= {:g}%".format(score["agreement"], result.goal_spec.min_agreement))
    if result.goal_spec.max_top1_drop is not None:
        parts.append("top-1 drop {:.2f} pt <= {:g} pt".format(score["top1_drop"], result.goal_spec.max_top1_drop))
    return "target met ({}): {} {}".format(target, " and ".join(parts), _judged(result))


def _print_result(result) -> None:
    held = ""
    if result.heldout_images:
        held = " ({} {} to judge them)".format(result.heldout_images, "separate held-out images"
                                               if result.heldout_source == HOLDOUT_SEPARATE else "more held out")
    click.echo("calibrated on {} images{}".format(result.num_images, held))
    for target, path in result.int8_models.items():
        outcome = result.targets[target]
        for line in outcome.table:
            click.echo(line)
        text = "wrote {} (int8, {}, {}".format(path, target, outcome.candidate.name)
        if outcome.score is not None:
            text += ", agreement {:.2f}% {}".format(outcome.score["agreement"], _judged(result))
            if "top1_drop" in outcome.score:
                text += ", top-1 {:+.2f} pt".format(0.0 - outcome.score["top1_drop"])  # 0.0 - 0.0 is +0.0
        if outcome.float_layers:
            text += ", {} float layer(s): {}".format(len(outcome.float_layers), ", ".join(outcome.float_layers))
        click.echo(text + ")")
    click.echo("wrote {} (TensorRT {} calibration cache, {}, {})".format(
        result.calib_cache, _version_text(result.trt_version), result.trt_algorithm, result.method))
    click.echo("wrote {} (ranges)".format(result.ranges_json))
    if result.fp16_model:
        click.echo("wrote {} (fp16)".format(result.fp16_model))
    for target, outcome in result.targets.items():
        if outcome.goal_met:
            click.echo(_target_met_line(result, target))


def _version_text(number: int) -> str:
    from deploy.calib_cache import format_trt_version
    return format_trt_version(number)
