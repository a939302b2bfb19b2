"""`cli.py bundle`: ONNX models, calibration caches, labels, PyTorch reference data and the deploy/ runtime."""
import click

from deploy.reference import DEFAULT_REFERENCE_IMAGES

from .common import emit_json, json_option, note, stderr_is_tty


@click.command("bundle")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(),
              help="Folder, or tarball when it ends in .tar.gz/.tgz.")
@click.option("--max-batch", type=click.IntRange(min=1), help="Largest batch for the engines built on the target.")
@click.option("--weights", type=click.Path(dir_okay=False),
              help="The checkpoint the models were exported from (PyTorch's logits travel in reference.npz).")
@click.option("--data", "data_dir", type=click.Path(file_okay=False),
              help="Images the models were checked on (ImageFolder tree or flat); default: the sample photos, "
                   "for 1000-class ImageNet models only.")
@click.option("--labels", "labels_file", type=click.Path(dir_okay=False), help="Labels file for a flat --data.")
@click.option("--reference-images", type=click.IntRange(min=1), default=DEFAULT_REFERENCE_IMAGES, show_default=True,
              help="Images whose PyTorch logits the bundle carries for python -m deploy.check.")
@click.option("--seed", type=int, default=0, show_default=True, help="Which images are drawn from --data.")
@click.option("--no-reference", is_flag=True, help="Carry no reference data (deploy.check then has nothing to do).")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@json_option
def bundle_command(artifacts, output, max_batch, weights, data_dir, labels_file, reference_images, seed, no_reference,
                   force, as_json):
    """Pack ARTIFACTS (.onnx models, .cache calibration caches, .txt labels) with the deploy/ runtime, a README,
    build_engines.sh and reference.npz: images, the PyTorch logits for them and the per-precision tolerances
    every model passed on this CPU, so `python -m deploy.check` proves the engines on the target. Engines are
    built on the target (python3 -m deploy.build), never bundled.
    """
    from benchmark.bundle_reference import make_bundle_reference
    from deploy.bundle import bundle, check_output, classify_artifacts

    check_output(artifacts, output, force)
    proof = None
    if not no_reference:
        models = classify_artifacts(artifacts)[0]
        proof = make_bundle_reference(models, weights=weights, data_dir=data_dir, labels_file=labels_file,
                                      num_images=reference_images, seed=seed,
                                      progress=stderr_is_tty() and not as_json)
        for message in proof.notes:
            note(message)
    elif weights or data_dir or labels_file:
        note("--no-reference: --weights, --data and --labels are not used")
    result = bundle(artifacts, output, max_batch=max_batch, force=force, proof=proof)
    for message in result.notes:
        note(message)
    payload = result.to_dict()
    if proof is not None:
        payload["cpu_checks"] = [check_summary(c) for c in proof.cpu_checks]
    if as_json:
        emit_json(payload)
        return
    click.echo("wrote {} ({}, {} files): {}".format(result.output, result.kind, len(result.files),
                                                    ", ".join(result.models + result.caches + result.labels)))
    for check in payload.get("cpu_checks", []):
        click.echo("  {name} ({precision}) on this CPU vs PyTorch: top-1 agreement {top1_agreement:.1%}, cosine "
                   "{cosine_similarity:.5f}; the target must reach {tolerance[min_top1_agreement]:.0%} and "
                   "{tolerance[min_cosine]}".format(**check))
    click.echo("on the target: sh build_engines.sh, which runs:")
    for command in result.build_commands:
        click.echo("  " + command)
    if result.reference:
        click.echo("then: python3 -m deploy.check   (every model and engine against PyTorch's logits)")


def check_summary(check):
    return {"name": check.name, "precision": check.precision, "top1_agreement": check.top1_agreement,
            "cosine_similarity": check.cosine_similarity, "tolerance": check.tolerance}
