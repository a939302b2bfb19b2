"""`cli.py bundle`: ONNX models, calibration caches, labels and the deploy/ runtime in one folder or tarball."""
import click

from .common import emit_json, json_option, note


@click.command("bundle")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(),
              help="Folder, or tarball when it ends in .tar.gz/.tgz.")
@click.option("--max-batch", type=click.IntRange(min=1), help="Largest batch for the engines built on the target.")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@json_option
def bundle_command(artifacts, output, max_batch, force, as_json):
    """Pack ARTIFACTS (.onnx models, .cache calibration caches, .txt labels) with the deploy/ runtime, a README
    and build_engines.sh. Engines are built on the target (python3 -m deploy.build), never bundled.
    """
    from deploy.bundle import bundle

    result = bundle(artifacts, output, max_batch=max_batch, force=force)
    for message in result.notes:
        note(message)
    if as_json:
        emit_json(result.to_dict())
        return
    click.echo("wrote {} ({}, {} files): {}".format(result.output, result.kind, len(result.files),
                                                    ", ".join(result.models + result.caches + result.labels)))
    click.echo("on the target: sh build_engines.sh, which runs:")
    for command in result.build_commands:
        click.echo("  " + command)
