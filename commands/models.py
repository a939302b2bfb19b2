"""`eca-deploy models`: the zoo with parameters and multiply-accumulates in the seed's units."""
import click

from deploy.validate import MAX_INPUT_SIZE

from .common import at_most, emit_json, json_option


@click.command("models")
@click.argument("names", nargs=-1)
@click.option("--input-size", type=click.IntRange(min=32), default=224, show_default=True,
              callback=at_most(MAX_INPUT_SIZE), help="At most {}.".format(MAX_INPUT_SIZE))
@json_option
def models_command(names, input_size, as_json):
    """List the zoo (or only NAMES). #Param is params / 2^20 and GFLOPs is MACs / 2^30 at 1x3xSxS, the binary units the ECA-Net paper reports.

    MACs are counted the way thop counted them when the paper was written (see README, model complexity).
    """
    import models
    from models.complexity import complexity

    for name in names:
        models.get_entry(name)  # an unknown name fails before any counting
    rows = [complexity(name, input_size) for name in (names or models.list_models())]
    if as_json:
        emit_json([{"name": r.name, "params": r.params, "macs": r.macs} for r in rows])
        return
    click.echo("{:<18} {:>10} {:>8}".format("model", "#Param", "GFLOPs"))
    for r in rows:
        click.echo("{:<18} {:>9.3f}M {:>8.3f}".format(r.name, r.mparams_binary, r.gmacs_binary))
