"""`cli.py build`: an ONNX model -> a TensorRT engine and its sidecar, on this machine's GPU.

A thin click front over ``deploy.trt.build.build_engine``, the function ``python -m deploy.build`` calls on the
target; the options are declared once, in ``deploy.trt.build.BUILD_CLI_OPTIONS``.
"""
import click

from deploy.trt.build import BUILD_CLI_OPTIONS

from .common import emit_json, json_option, note


def build_options(func):
    for option in reversed(BUILD_CLI_OPTIONS):
        if option.kind == "flag":
            func = click.option(option.flag, option.dest, is_flag=True, help=option.help)(func)
        elif option.kind == "int":
            func = click.option(option.flag, option.dest, type=int, metavar=option.metavar, help=option.help)(func)
        else:
            func = click.option(option.flag, option.dest, type=click.Path(dir_okay=False), metavar=option.metavar,
                                help=option.help)(func)
    return func


@click.command("build")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Default: MODEL.engine beside the model.")
@build_options
@json_option
def build_command(model, output, as_json, **options):
    """Build MODEL.onnx into a TensorRT engine plus its JSON sidecar, and print the equivalent trtexec line.

    Precision comes from the model: TensorRT 10/11 build it strongly typed, 8.x gets the FP16/INT8 flags the
    model needs. Needs TensorRT here; engines are bound to this TensorRT version and GPU.
    """
    from deploy.trt.build import BuildOptions, build_engine, format_build_report

    result = build_engine(model, output, BuildOptions.from_mapping(options), log=note)
    for message in result.notes:
        note(message)
    if as_json:
        emit_json(result.to_dict())
    else:
        click.echo("\n".join(format_build_report(result)))
