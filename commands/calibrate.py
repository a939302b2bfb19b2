"""`cli.py calibrate`: INT8 Q/DQ models, the TensorRT calibration cache, the ranges JSON and the FP16 model."""
import click

from .common import emit_json, json_option, note, stderr_is_tty

METHODS = ("entropy", "minmax", "percentile", "mse")
TARGETS = ("tensorrt", "cpu")


@click.command("calibrate")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False),
              help="Calibration images: an ImageFolder tree or a folder of images.")
@click.option("--labels", "labels_file", type=click.Path(dir_okay=False),
              help="'<file> <class>' lines or ImageNet's LOC_val_solution.csv (for class-balanced sampling).")
@click.option("--target", "targets", type=click.Choice(TARGETS), multiple=True,
              help="Q/DQ placement: tensorrt (signed, TensorRT fusions) or cpu (uint8, ONNX Runtime). "
                   "Repeat for both. [default: tensorrt]")
@click.option("--method", type=click.Choice(METHODS), default="entropy", show_default=True,
              help="How each activation's clipping range is chosen.")
@click.option("--percentile", type=click.FloatRange(min=0, max=100, min_open=True), default=99.99,
              show_default=True, help="For --method percentile.")
@click.option("--num-images", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("--seed", type=click.IntRange(min=0, max=2 ** 32 - 1), default=0, show_default=True,
              help="Seed of the class-balanced image sample.")
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True, help="Image decoding threads.")
@click.option("--trt-version", default="8.6", show_default=True,
              help="TensorRT version stamped into the calibration cache (8.5.2 on JetPack 5.1, 10.3 on JetPack 6); "
                   "TensorRT ignores a cache from another version.")
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="Decoded-image cache (default: ~/.cache/eca-deploy).")
@click.option("--no-fp16", is_flag=True, help="Do not write the FP16 model.")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="INT8 model of the first target (default: MODEL stem + .int8.<target>.onnx); "
                   "the other files go beside it.")
@json_option
def calibrate_command(model, data_dir, labels_file, targets, method, percentile, num_images, seed, workers,
                      trt_version, cache_dir, no_fp16, output, as_json):
    """Calibrate the FP32 classifier MODEL (.onnx from `cli.py export`) on the images in --data.

    Activation ranges come from running MODEL in ONNX Runtime once; the INT8 model(s), the TensorRT calibration
    cache (implicit INT8 on TensorRT 8.5-10.x), the ranges JSON and the FP16 model all use them.
    """
    from calibration.api import calibrate

    result = calibrate(model, data_dir=data_dir, labels_file=labels_file, targets=targets or ("tensorrt",),
                       method=method, num_images=num_images, seed=seed, workers=workers, output=output,
                       trt_version=trt_version, cache_dir=cache_dir, fp16=not no_fp16, percentile=percentile,
                       progress=not as_json and stderr_is_tty())
    for message in result.notes:
        note(message)
    if result.skipped:
        note("skipped {} unreadable image(s), e.g. {}: {}".format(len(result.skipped), *result.skipped[0]))
    if as_json:
        emit_json(result.to_dict())
        return
    click.echo("calibrated on {} images with {}".format(result.num_images, result.method))
    for target, path in result.int8_models.items():
        click.echo("wrote {} (int8, {})".format(path, target))
    click.echo("wrote {} (TensorRT {} calibration cache, {})".format(
        result.calib_cache, _version_text(result.trt_version), result.trt_algorithm))
    click.echo("wrote {} (ranges)".format(result.ranges_json))
    if result.fp16_model:
        click.echo("wrote {} (fp16)".format(result.fp16_model))


def _version_text(number: int) -> str:
    from deploy.calib_cache import format_trt_version
    return format_trt_version(number)
