"""`eca-deploy build`: an ONNX model -> a TensorRT engine and its sidecar, on this machine's GPU (or --dry-run: the plan).

A thin click front over ``deploy.build.run_build``, the function ``python -m deploy.build`` calls on the
target; the options are declared once, in ``deploy.trt.plan.BUILD_CLI_OPTIONS``.
"""
import click

from deploy.trt.plan import BUILD_CLI_OPTIONS

from .common import emit_json, json_option, note

_TYPES = {"int": int, "path": click.Path(dir_okay=False), "text": str}


def build_options(func):
    for option in reversed(BUILD_CLI_OPTIONS):
        if option.kind == "flag":
            func = click.option(option.flag, option.dest, is_flag=True, help=option.help)(func)
        else:
            kind = click.Choice(option.choices) if option.kind == "choice" else _TYPES[option.kind]
            func = click.option(option.flag, option.dest, type=kind, metavar=option.metavar, help=option.help)(func)
    return func


@click.command("build")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Default: MODEL.<precision>.engine.")
@build_options
@json_option
def build_command(model, output, as_json, **options):
    """Build MODEL.onnx into a TensorRT engine plus its JSON sidecar, and print the equivalent trtexec and
    polygraphy lines.

    Precision comes from the model (FP32, FP16 or Q/DQ INT8 ONNX) unless --precision says otherwise; the engine's
    file name, sidecar and --json name it. Needs TensorRT here, except --dry-run.
    """
    from deploy.build import run_build

    payload, lines = run_build(model, output, options, log=note)
    if as_json:
        emit_json(payload)
    else:
        click.echo("\n".join(lines))
