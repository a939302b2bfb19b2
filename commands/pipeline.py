"""`eca-deploy pipeline`: the main job. Export, FP16, INT8, engines, benchmark and report; unchanged steps skip."""
import click

from calibration.api import DEFAULT_METHOD, METHOD_CHOICES
from pipeline.run import INT8_TARGETS, PipelineConfig

from .benchmark_engine import parse_batch_sizes
from deploy.validate import MAX_BATCH, MAX_INPUT_SIZE, MAX_ITERATIONS, MAX_NUM_IMAGES

from .common import at_most, emit_json, json_option, stderr_is_tty
from .options import (holdout_count_option, holdout_option, max_top1_drop_option, min_agreement_option,
                      preprocess_options, target_option, threads_option)


def _batch_sizes_callback(ctx, param, value):
    return parse_batch_sizes(value)


def _program_of(model, weights):
    """The program file among MODEL and --weights, if one of them is one (a zoo name is never a file here)."""
    import os

    from deploy.errors import UserError
    from models.program import is_program
    if os.path.isfile(model):
        if not is_program(model):
            raise UserError("{} is not a .pt2 or TorchScript program; give a zoo name, with --weights for a "
                            "checkpoint".format(model))
        if weights is not None:
            raise UserError("{} is a program with its own weights; drop --weights".format(model))
        return model
    if weights is not None and is_program(weights):
        source = click.get_current_context().get_parameter_source("model")
        if source is not None and source.name != "DEFAULT":
            raise UserError("--weights {} is a program that carries its own architecture; give it alone (or as "
                            "MODEL), without the zoo name {}".format(weights, model))
        return weights
    return None


@click.command("pipeline")
@click.argument("model", required=False, default="eca_resnet50")
@click.option("--weights", type=click.Path(dir_okay=False), help="Checkpoint (default: random weights, said so), or a "
              "program (.pt2, TorchScript) in place of MODEL.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False),
              help="One image folder, split deterministically into calibration and held-out evaluation images "
                   "(default: the 9 shipped sample photos for both, unlabeled).")
@click.option("--calib-data", type=click.Path(file_okay=False), help="Calibration images (with --eval-data).")
@click.option("--eval-data", type=click.Path(file_okay=False),
              help="Labeled evaluation images for accuracy and parity (with --calib-data).")
@click.option("--labels", "labels_file", type=click.Path(dir_okay=False),
              help="Labels file for a flat --data or --eval-data.")
@holdout_option
@holdout_count_option
@target_option(INT8_TARGETS)
@min_agreement_option
@max_top1_drop_option
@click.option("--trt-version", help="TensorRT version stamped into the calibration cache (default: calibrate's; "
                                    "8.5.2 on JetPack 5.1, 10.3 on JetPack 6).")
@click.option("--bundle", type=click.Path(), help="Also pack the models, the cache and deploy/ for the device into "
                                                  "this folder or .tar.gz (eca-deploy bundle).")
@click.option("--out", default="out/pipeline", show_default=True, type=click.Path(file_okay=False))
@click.option("--input-size", type=click.IntRange(min=32), callback=at_most(MAX_INPUT_SIZE),
              help="Export input size (default: 224, at most {}).".format(MAX_INPUT_SIZE))
@preprocess_options
@click.option("--num-images", type=click.IntRange(min=1), default=512, show_default=True,
              callback=at_most(MAX_NUM_IMAGES),
              help="Most images for calibration, and most for evaluation (at most {}).".format(MAX_NUM_IMAGES))
@click.option("--method", type=click.Choice(METHOD_CHOICES), default=DEFAULT_METHOD, show_default=True,
              help="INT8 calibration method (auto: the best candidate on held-out calibration images).")
@click.option("--batch-sizes", default=",".join(str(b) for b in PipelineConfig.batch_sizes), show_default=True,
              callback=_batch_sizes_callback,
              help="Each at most {}.".format(MAX_BATCH))
@click.option("--warmup", type=click.IntRange(min=0), default=PipelineConfig.warmup, show_default=True,
              callback=at_most(MAX_ITERATIONS),
              help="At most {}.".format(MAX_ITERATIONS))
@click.option("--iterations", type=click.IntRange(min=1), default=PipelineConfig.iterations, show_default=True,
              callback=at_most(MAX_ITERATIONS), help="At most {}.".format(MAX_ITERATIONS))
@threads_option
@click.option("--baselines", is_flag=True, help="Also measure ResNet-18/34 with no attention, SE, CBAM and ECA, deployed (8 models; minutes).")
@click.option("--baselines-weights", type=click.Path(file_okay=False),
              help="Folder of <model>.pth checkpoints for those 8 models (default: random weights).")
@click.option("--force", is_flag=True, help="Rerun every step, even when its inputs are unchanged.")
@json_option
def pipeline_command(model, weights, data_dir, calib_data, eval_data, labels_file, holdout_dir, num_holdout_images,
                     targets, min_agreement, max_top1_drop, trt_version, bundle, out, input_size, num_images, method,
                     batch_sizes, warmup, iterations, threads, baselines, baselines_weights, force, as_json,
                     **preprocessing):
    """Run MODEL (default eca_resnet50; or a .pt2 / TorchScript program file) through export, FP16, INT8, engines,
    benchmark-engine, the report and (with --bundle) the bundle for the device.

    Steps whose inputs and options have not changed since the last run in --out are skipped.
    """
    from deploy.preprocess import resolve_input_size
    from pipeline.run import PipelineConfig, run_pipeline

    input_size = resolve_input_size(input_size, preprocessing.pop("crop", None)) if (
        input_size or preprocessing.get("crop")) else None
    chosen = {k: v for k, v in preprocessing.items() if v not in (None, False)}
    program = _program_of(model, weights)
    if program:
        from models.program import program_name
        model, weights = program_name(program), program
    config = PipelineConfig(arch=model, weights=weights, program=program, data_dir=data_dir, calib_data=calib_data,
                            holdout_data=holdout_dir, num_holdout_images=num_holdout_images, targets=tuple(targets) or INT8_TARGETS,
                            min_agreement=min_agreement, max_top1_drop=max_top1_drop, preprocess_options=chosen,
                            eval_data=eval_data, trt_version=trt_version, bundle=bundle, labels_file=labels_file,
                            out=out,
                            input_size=input_size, num_images=num_images, method=method, batch_sizes=batch_sizes,
                            warmup=warmup, iterations=iterations, threads=threads, baselines=baselines,
                            baselines_weights=baselines_weights, force=force, progress=stderr_is_tty() and not as_json)
    # Step lines go to stderr with --json, so stdout stays one JSON document.
    result = run_pipeline(config, echo=lambda line: click.echo(line, err=as_json or line.startswith("note:")))
    if as_json:
        emit_json(result.to_dict())
        return
    ran = [s.name for s in result.steps if s.status == "ran"]
    skipped = [s.name for s in result.steps if s.status != "ran"]
    click.echo("ran: {}; skipped: {} ({:.1f} s)".format(", ".join(ran) or "none", ", ".join(skipped) or "none",
                                                         result.seconds))
    click.echo("report: {}".format(result.report.get("markdown")))
    if result.report.get("bundle"):
        click.echo("bundle: {}".format(result.report["bundle"]))
