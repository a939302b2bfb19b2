"""`eca-deploy attention`: per-class channel weights of ECA/SE blocks per block and deployed-model parity."""
import click

from deploy.validate import MAX_BATCH, MAX_INPUT_SIZE, MAX_NUM_IMAGES

from .common import at_most, emit_json, json_option, note, stderr_is_tty
from .options import workers_option


@click.command("attention")
@click.argument("model")
@click.option("--weights", type=click.Path(dir_okay=False), help="Checkpoint of MODEL, or a .pt2 program in its place "
              "(its ECA gates found in its graph; its preprocessing from --deployed).")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False),
              help="Labelled images: an ImageFolder tree, or a folder with --labels.")
@click.option("--labels", "labels_file", type=click.Path(dir_okay=False),
              help="'<file> <class index>' lines or ImageNet's LOC_val_solution.csv.")
@click.option("--classes", help="Classes to draw: folder names, ImageNet names or indices, comma-separated "
              "(default: the first 4).")
@click.option("--num-images", type=click.IntRange(min=1), callback=at_most(MAX_NUM_IMAGES),
              help="Use a class-balanced sample of N images (default: all; at most {}).".format(MAX_NUM_IMAGES))
@click.option("--compare", "compare_model", help="A second zoo model to draw beside MODEL (e.g. se_resnet50).")
@click.option("--compare-weights", type=click.Path(dir_okay=False), help="Checkpoint of the --compare model.")
@click.option("--deployed", type=click.Path(dir_okay=False),
              help="An ONNX model of MODEL (FP32, FP16 or INT8 Q/DQ): report its attention parity.")
@click.option("--input-size", type=click.IntRange(min=32), callback=at_most(MAX_INPUT_SIZE),
              help="Default: the deployed model's (another size is refused), else 224 for a 1000-class ImageNet "
              "checkpoint; required for a checkpoint trained on other data. At most {}.".format(MAX_INPUT_SIZE))
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, callback=at_most(MAX_BATCH),
              help="At most {}.".format(MAX_BATCH))
@workers_option
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="For --num-images.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="out/attention", show_default=True,
              help="Folder for attention.png, attention.json, attention.csv (and attention_parity.csv).")
@json_option
def attention_command(model, weights, data_dir, labels_file, classes, num_images, compare_model, compare_weights,
                      deployed, input_size, batch_size, workers, seed, out_dir, as_json):
    """Average the ECA/SE channel weights of MODEL per class over --data and draw them, one cell per block
    (conv_i_j); with --deployed, rank the blocks by how far the deployed model's weights are from PyTorch's.

    MODEL is a zoo name, or a torch.export program (.pt2) whose ECA gates (global pool -> 1-D conv -> sigmoid ->
    multiply) are found in its graph; it then needs --deployed, the ONNX model exported from it.
    """
    from deploy.errors import UserError
    from deploy.validate import check_outputs_spare_inputs

    if compare_weights and not compare_model:
        raise UserError("--compare-weights needs --compare MODEL")
    check_outputs_spare_inputs([("--out", out_dir)], [("--weights", weights), ("--data", data_dir), ("--labels",
                               labels_file), ("--compare-weights", compare_weights), ("--deployed", deployed)])
    from analysis.attention import analyze_attention
    report = analyze_attention(
        model, data_dir, weights=weights, labels_file=labels_file, classes=classes, num_images=num_images,
        compare=compare_model, compare_weights=compare_weights, deployed=deployed, out_dir=out_dir,
        input_size=input_size, batch_size=batch_size, workers=workers, seed=seed,
        progress=stderr_is_tty() and not as_json)
    for message in report.notes:
        note(message)
    if report.skipped:
        note("skipped {} unreadable image(s), e.g. {}".format(len(report.skipped), report.skipped[0]))
    if as_json:
        emit_json(report.to_dict())
        return
    _print_spread(report)
    if report.parity is not None:
        _print_parity(report)
    click.echo("wrote " + ", ".join(report.files[key] for key in sorted(report.files)))


def _print_spread(report):
    classes = ", ".join("{} ({})".format(c.display, c.count) for c in report.classes)
    click.echo("{} images, {} classes; drawn: {} and the all-class average".format(
        report.num_images, report.num_classes, classes))
    models = report.models
    rows = {}
    for column, model in enumerate(models):
        for block in model.blocks:
            rows.setdefault(block.label, [block.channels] + [None] * len(models))[column + 1] = \
                model.means.spread(block.name)
    header = "{:<12} {:>8}".format("block", "channels") + "".join(
        " {:>22}".format("spread " + m.arch) for m in models)
    click.echo(header)
    for label, values in rows.items():
        cells = "".join(" {:>22}".format("-" if v is None else "{:.4f}".format(v)) for v in values[1:])
        click.echo("{:<12} {:>8}{}".format(label, values[0], cells))
    click.echo("spread: mean over channels of the std across class means ({} classes); higher = more "
               "class-specific".format(report.num_classes))
    for model in models:
        if model.accuracy is not None:
            click.echo("{} top-1 vs labels: {:.2%}".format(model.arch, model.accuracy))


def _print_parity(report):
    parity = report.parity
    click.echo("attention parity of {} ({}, {}) vs PyTorch, worst block first:".format(
        parity.deployed, parity.precision, ", ".join(parity.providers)))
    click.echo("{:>4} {:<12} {:>8} {:>13} {:>14}".format("rank", "block", "channels", "max abs diff", "mean abs diff"))
    for rank, row in enumerate(parity.blocks, 1):
        click.echo("{:>4} {:<12} {:>8} {:>13.3g} {:>14.3g}".format(rank, row.label, row.channels, row.max_abs_diff,
                                                                     row.mean_abs_diff))
    logits = parity.logits
    click.echo("logits: max abs error {:.3g}, top-1 agreement {:.2%}; deployed top-1 vs labels {:.2%}".format(
        logits["max_abs_error"], logits["top1_agreement"], report.deployed_accuracy or 0.0))
