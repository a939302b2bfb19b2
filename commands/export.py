"""`eca-deploy export`: a zoo model, a program (.pt2, TorchScript) or an ONNX model from elsewhere to a checked,
simplified ONNX model with its parity report."""
import os

import click

from exporter.attention_form_options import DEFAULT_FORM, FORMS

from deploy.validate import MAX_BATCH, MAX_CLASSES, MAX_ECA_CONVS, MAX_ECA_KERNEL, MAX_INPUT_SIZE

from .common import at_most, emit_json, json_option, note
from .options import preprocess_options


def _parse_k_size(value):
    """'adaptive', one odd kernel, or four (one per stage), each odd and at most MAX_ECA_KERNEL: checked as
    options are parsed, before torch loads (--k-size 1000001 took 2.6 GB and 46 s to build)."""
    from deploy.errors import UserError
    from deploy.validate import MAX_ECA_KERNEL, check_bound
    if value is None or value == "adaptive":
        return value
    try:
        kernels = tuple(int(part) for part in value.split(","))
    except ValueError:
        raise UserError("--k-size must be 'adaptive', one odd int, or four comma-separated odd ints, got {!r}".format(
            value[:40])) from None
    if len(kernels) not in (1, 4):
        raise UserError("--k-size takes one kernel or one per stage (4), got {}".format(len(kernels)))
    for kernel in kernels:
        check_bound("--k-size", kernel, MAX_ECA_KERNEL)
        if kernel % 2 == 0:
            raise UserError("--k-size {} is even; ECA kernels are odd (padding (k-1)/2 keeps the channel count)"
                            .format(kernel))
    return kernels[0] if len(kernels) == 1 else kernels


@click.command("export")
@click.argument("model", metavar="MODEL")
@click.option("--weights", type=click.Path(dir_okay=False), help="Checkpoint: a state dict or a training dict.")
@click.option("--num-classes", type=click.IntRange(min=1), callback=at_most(MAX_CLASSES - 1),
              help="Default: read from the checkpoint, else 1000 (at most {}).".format(MAX_CLASSES - 1))
@click.option("--input-size", type=click.IntRange(min=32), callback=at_most(MAX_INPUT_SIZE),
              help="Network input size (default 224, at most {}).".format(MAX_INPUT_SIZE))
@preprocess_options
@click.option("--opset", type=click.IntRange(min=13), default=17, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), callback=at_most(MAX_BATCH),
              help="Fixed batch size (default: dynamic batch; at most {}).".format(MAX_BATCH))
@click.option("--dynamic-batch", is_flag=True, help="Dynamic batch axis (the default).")
@click.option("--k-size", callback=lambda ctx, param, value: _parse_k_size(value),
              help="ECA kernels of a model with random weights: 'adaptive', one odd int, or one per stage like "
                   "3,5,5,7 (each at most {}); with --weights the checkpoint's kernels are used.".format(MAX_ECA_KERNEL))
@click.option("--eca-convs", type=click.IntRange(min=1), callback=at_most(MAX_ECA_CONVS),
              help="Stack n 1-D convs in each ECA module (at most {}).".format(MAX_ECA_CONVS))
@click.option("--no-simplify", is_flag=True, help="Skip onnxsim.")
@click.option("--attention-form", type=click.Choice(FORMS), default=DEFAULT_FORM, show_default=True,
              help="How attention gates are written: nchwc runs faster in ONNX Runtime FP32 on x86 CPUs; lean is the "
                   "plain graph, for TensorRT and for INT8 calibration.")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
              help="fp16 also writes the strongly typed FP16 model beside the FP32 one.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Default: MODEL.onnx")
@json_option
def export_command(model, weights, num_classes, input_size, opset, batch, dynamic_batch, k_size, eca_convs,
                   no_simplify, attention_form, precision, output, as_json, **preprocessing):
    """Export MODEL to ONNX, check it with onnx.checker and compare it to the original in ONNX Runtime.

    MODEL is a zoo name (with --weights), a program file that carries its own code (torch.export .pt2 or
    TorchScript, e.g. a timm model saved in its own environment; sizes from the program or --timm-config), or an
    ONNX classifier exported elsewhere (checked, simplified and stamped; its FP32 ONNX is then the reference).
    """
    from deploy.errors import UserError
    from deploy.names import check_name
    from deploy.preprocess import PreprocessSpec, resolve_input_size, resolve_spec
    from deploy.validate import check_head_memory, check_outputs_spare_inputs
    from precision.fp16 import fp16_path_for

    from exporter.sources import source_kind
    if batch and dynamic_batch:
        raise UserError("--batch and --dynamic-batch exclude each other")
    kind = source_kind(model)
    if kind != "zoo":
        return _export_file(kind, model, weights, num_classes, input_size, opset, batch, k_size, eca_convs,
                            no_simplify, attention_form, precision, output, as_json, preprocessing)
    if k_size is not None and weights:  # the checkpoint's (1, 1, k) weights decide; a silent override misleads
        raise UserError("--k-size applies to a model with random weights; with --weights the kernels are read from "
                        "the checkpoint's *.eca.conv.weight shapes, so leave --k-size out")
    output = output or "{}.onnx".format(model)
    fp16_output = fp16_path_for(output) if precision == "fp16" else None
    check_outputs_spare_inputs([("-o", output), ("the FP16 model", fp16_output)], [("--weights", weights)])
    check_name(os.path.basename(output), "file name", "-o")  # it will be written into scripts and configs
    if num_classes is not None:
        check_head_memory(num_classes)
    # a bad --mean, --std, --resize or timm config fails here, before torch loads and the model is built
    explicit_size = preprocessing["crop"] or input_size
    resolve_spec(PreprocessSpec.for_input_size(resolve_input_size(input_size, preprocessing["crop"])),
                 **dict(preprocessing, crop=explicit_size))
    from exporter import export_model
    options = {}
    if k_size is not None:
        options["k_size"] = k_size
    if eca_convs is not None:
        options["num_convs"] = eca_convs
    result = export_model(model, output, weights=weights, num_classes=num_classes,
                          input_size=resolve_input_size(input_size, preprocessing["crop"]), opset=opset,
                          batch=batch, do_simplify=not no_simplify, attention_form=attention_form,
                          preprocess_options=dict(preprocessing, crop=explicit_size), **options)
    if result.random_weights:
        note("no --weights given: {} has random weights (seed 0)".format(model))
    _report(result, precision, as_json)


def _export_file(kind, model, weights, num_classes, input_size, opset, batch, k_size, eca_convs, no_simplify,
                 attention_form, precision, output, as_json, preprocessing):
    """A program (.pt2, TorchScript) or an ONNX model: the file is the model, so zoo-only options are refused."""
    from deploy.errors import UserError
    from deploy.names import check_name
    from deploy.preprocess import resolve_input_size
    from deploy.validate import check_outputs_spare_inputs
    from exporter.sources import export_onnx_file, export_program
    from precision.fp16 import fp16_path_for

    for flag, value in (("--weights", weights), ("--num-classes", num_classes), ("--k-size", k_size),
                        ("--eca-convs", eca_convs)):
        if value is not None:
            raise UserError("{} is for zoo models; {} carries its own {}".format(
                flag, model, "weights" if flag == "--weights" else "architecture"))
    if kind == "onnx" and batch:
        raise UserError("--batch is for models exported from PyTorch; {} keeps its own batch dimension".format(model))
    size = resolve_input_size(input_size, preprocessing["crop"], default=0) or None
    output = output or os.path.splitext(os.path.basename(model))[0] + ".onnx"
    fp16_output = fp16_path_for(output) if precision == "fp16" else None
    check_outputs_spare_inputs([("-o", output), ("the FP16 model", fp16_output)], [("MODEL", model)])
    check_name(os.path.basename(output), "file name", "-o")  # it will be written into scripts and configs
    if kind == "program":
        result = export_program(model, output, input_size=size, opset=opset, batch=batch,
                                do_simplify=not no_simplify, attention_form=attention_form,
                                preprocess_options=preprocessing)
    else:
        result = export_onnx_file(model, output, input_size=size, opset=opset, do_simplify=not no_simplify,
                                  attention_form=attention_form, preprocess_options=preprocessing)
    _report(result, precision, as_json)


def _report(result, precision, as_json):
    from deploy.errors import CheckFailedError
    payload = result.to_dict()
    if precision == "fp16":
        from precision.fp16 import convert_to_fp16_file
        payload["fp16"] = convert_to_fp16_file(result.path).to_dict()
    for message in result.notes:
        note(message)
    if as_json:
        emit_json(payload)
    else:
        _print_summary(result, payload.get("fp16"))
    if not result.parity:
        raise CheckFailedError("ONNX Runtime output differs from PyTorch beyond tolerance (max abs error {:.3g})".format(
            result.parity.max_abs_error))


def _print_summary(result, fp16):
    click.echo("wrote {} ({}, {})".format(result.path, result.arch,
                                         "simplified" if result.simplified else "not simplified"))
    click.echo("  preprocessing: {}".format(result.preprocess.describe()))
    for comparison in result.parity.comparisons:
        click.echo("  parity batch {:>2}: max abs error {:.3g} (tolerance {:.3g}), top-1 agreement {:.1%} -> {}".format(
            comparison.batch_size, comparison.max_abs_error, comparison.tolerance, comparison.top1_agreement,
            "ok" if comparison else "FAIL"))
    if fp16:
        click.echo("wrote {} (fp16)".format(fp16["path"]))
