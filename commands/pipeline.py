"""`cli.py pipeline`: the main job. Export, FP16, INT8, engines, benchmark and report; unchanged steps skip."""
import click

from calibration.api import DEFAULT_METHOD, METHOD_CHOICES

from .benchmark_engine import parse_batch_sizes
from .common import emit_json, json_option, stderr_is_tty


def _batch_sizes_callback(ctx, param, value):
    return parse_batch_sizes(value)


@click.command("pipeline")
@click.argument("model", required=False, default="eca_resnet50")
@click.option("--weights", type=click.Path(dir_okay=False), help="Checkpoint (default: random weights, said so).")
@click.option("--data", "data_dir", type=click.Path(file_okay=False),
              help="One image folder, split deterministically into calibration and held-out evaluation images "
                   "(default: the 9 shipped sample photos for both, unlabeled).")
@click.option("--calib-data", type=click.Path(file_okay=False), help="Calibration images (with --eval-data).")
@click.option("--eval-data", type=click.Path(file_okay=False),
              help="Labeled evaluation images for accuracy and parity (with --calib-data).")
@click.option("--labels", "labels_file", type=click.Path(dir_okay=False),
              help="Labels file for a flat --data or --eval-data.")
@click.option("--trt-version", help="TensorRT version stamped into the calibration cache (default: calibrate's; "
                                    "8.5.2 on JetPack 5.1, 10.3 on JetPack 6).")
@click.option("--bundle", type=click.Path(), help="Also pack the models, the cache and deploy/ for the device into "
                                                  "this folder or .tar.gz (cli.py bundle).")
@click.option("--out", default="out/pipeline", show_default=True, type=click.Path(file_okay=False))
@click.option("--input-size", type=click.IntRange(min=32), help="Export input size (default: 224).")
@click.option("--num-images", type=click.IntRange(min=1), default=512, show_default=True,
              help="Most images for calibration, and most for evaluation.")
@click.option("--method", type=click.Choice(METHOD_CHOICES), default=DEFAULT_METHOD, show_default=True,
              help="INT8 calibration method (auto: the best candidate on held-out calibration images).")
@click.option("--batch-sizes", default="1,8", show_default=True, callback=_batch_sizes_callback)
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--iterations", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for every backend (default: all cores).")
@click.option("--baselines", is_flag=True, help="Also measure ResNet-18/34 with no attention, SE, CBAM and ECA, deployed (8 models; minutes).")
@click.option("--baselines-weights", type=click.Path(file_okay=False),
              help="Folder of <model>.pth checkpoints for those 8 models (default: random weights).")
@click.option("--force", is_flag=True, help="Rerun every step, even when its inputs are unchanged.")
@json_option
def pipeline_command(model, weights, data_dir, calib_data, eval_data, labels_file, trt_version, bundle, out, input_size, num_images, method, batch_sizes,
                     warmup, iterations, threads, baselines, baselines_weights, force, as_json):
    """Run MODEL (default eca_resnet50) through export, FP16, INT8, engines, benchmark-engine, the report and
    (with --bundle) the bundle for the device.

    Steps whose inputs and options have not changed since the last run in --out are skipped.
    """
    from pipeline.run import PipelineConfig, run_pipeline

    config = PipelineConfig(arch=model, weights=weights, data_dir=data_dir, calib_data=calib_data,
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
