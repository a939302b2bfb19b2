"""`eca-deploy compare-layers`: per-layer error of a Q/DQ or FP16 model against its FP32 model, worst first."""
import click

from calibration.layer_report import DEFAULT_NUM_IMAGES

from deploy.validate import MAX_NUM_IMAGES

from .common import at_most, emit_json, json_option, note, stderr_is_tty
from .options import workers_option


@click.command("compare-layers")
@click.argument("fp32_model", type=click.Path(dir_okay=False))
@click.argument("other_model", type=click.Path(dir_okay=False))
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False),
              help="Images: an ImageFolder tree or a folder of images (preprocessed as FP32_MODEL says).")
@click.option("--labels", "labels_file", type=click.Path(dir_okay=False), help="As for calibrate (class balance).")
@click.option("--num-images", type=click.IntRange(min=1), default=DEFAULT_NUM_IMAGES, show_default=True,
              callback=at_most(MAX_NUM_IMAGES), help="At most {}.".format(MAX_NUM_IMAGES))
@click.option("--seed", type=click.IntRange(min=0, max=2 ** 32 - 1), default=0, show_default=True)
@workers_option
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Decoded-image cache.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write SQNR along the depth as a PNG.")
@json_option
def compare_layers_command(fp32_model, other_model, data_dir, labels_file, num_images, seed, workers, cache_dir,
                           plot_path, as_json):
    """Match each Conv/Gemm/MatMul of OTHER_MODEL (Q/DQ or FP16) to FP32_MODEL and list its error, worst first.

    Both models run in ONNX Runtime, optimizations off, with every compute layer's output exposed.
    """
    import os

    from deploy.validate import check_outputs_spare_inputs

    check_outputs_spare_inputs([("--plot", plot_path), ("--cache-dir", cache_dir)],
                               [("FP32_MODEL", fp32_model), ("OTHER_MODEL", other_model), ("--data", data_dir),
                                ("--labels", labels_file)])
    from data.datasets import load_dataset
    from calibration.layer_report import compare_layers, load_pair, plot_sqnr

    fp32, other, info = load_pair(fp32_model, other_model)
    progress = not as_json and stderr_is_tty()
    images = load_dataset(data_dir, info.preprocess, labels_file=labels_file, num_images=num_images, seed=seed,
                          workers=workers, cache_dir=cache_dir, progress=progress)
    report = compare_layers(fp32, other, images.array, progress=progress, sources=(fp32_model, other_model),
                            image_names=images.paths)
    if report.unmatched:
        note("{} FP32 layer(s) have no counterpart in {}: {}".format(
            len(report.unmatched), other_model, ", ".join(report.unmatched[:5])))
    if plot_path:
        plot_sqnr(report, plot_path, title="{} vs {} ({} images)".format(
            os.path.basename(other_model), os.path.basename(fp32_model), report.num_images))
    if as_json:
        payload = report.to_dict()
        if plot_path:
            payload["plot"] = os.path.abspath(plot_path)
        emit_json(payload)
        return
    click.echo("{} compute layers of {} against {}, on {} images (worst first):".format(
        len(report.layers), other_model, fp32_model, report.num_images))
    width = max(len(layer.name) for layer in report.layers)
    click.echo("  {:<{w}} {:<7} {:>9} {:>9} {:>13}  {}".format("name", "op", "sqnr_db", "cosine", "max_abs_error",
                                                              "runs in", w=width))
    for layer in report.layers:
        click.echo("  {:<{w}} {:<7} {:>9.2f} {:>9.5f} {:>13.4g}  {}".format(
            layer.name, layer.op, layer.sqnr_db, layer.cosine, layer.max_abs_error,
            "int8" if layer.quantized else "float", w=width))
    click.echo("worst: {}".format(report.worst))
    if plot_path:
        click.echo("wrote {} (SQNR along the depth)".format(plot_path))
