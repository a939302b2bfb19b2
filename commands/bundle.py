"""`eca-deploy bundle`: ONNX models, calibration caches, labels, PyTorch reference data and the deploy/ runtime."""
import click

from deploy.reference import DEFAULT_REFERENCE_IMAGES
from deploy.runners.execution import DEFAULT_MAX_BATCH

from deploy.validate import MAX_BATCH, MAX_NUM_IMAGES

from .common import at_most, emit_json, json_option, note, stderr_is_tty
from .options import min_agreement_option


@click.command("bundle")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(),
              help="Folder, or tarball when it ends in .tar.gz/.tgz.")
@click.option("--max-batch", type=click.IntRange(min=1), callback=at_most(MAX_BATCH),
              help="Largest batch for the engines built on the target (default {}: every batch benchmark-engine, "
                   "pipeline and deploy.bench time by default; at most {}).".format(DEFAULT_MAX_BATCH, MAX_BATCH))
@click.option("--weights", type=click.Path(dir_okay=False),
              help="The checkpoint or program (.pt2, TorchScript) the models were exported from (PyTorch's logits travel "
                   "in reference.npz).")
@click.option("--data", "data_dir", type=click.Path(file_okay=False),
              help="Images the models were checked on (ImageFolder tree or flat); default: the sample photos, "
                   "for 1000-class ImageNet models only.")
@click.option("--labels", "labels_file", type=click.Path(dir_okay=False), help="Labels file for a flat --data.")
@click.option("--reference-images", type=click.IntRange(min=1), default=DEFAULT_REFERENCE_IMAGES, show_default=True,
              callback=at_most(MAX_NUM_IMAGES),
              help="Images whose PyTorch logits the bundle carries for python -m deploy.check (at most {}).".format(
                  MAX_NUM_IMAGES))
@click.option("--seed", type=int, default=0, show_default=True, help="Which images are drawn from --data.")
@min_agreement_option
@click.option("--no-reference", is_flag=True, help="Carry no reference data (deploy.check then has nothing to do).")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@json_option
def bundle_command(artifacts, output, max_batch, weights, data_dir, labels_file, reference_images, seed, min_agreement,
                   no_reference, force, as_json):
    """Pack ARTIFACTS (.onnx models, .cache calibration caches, .txt labels) with the deploy/ runtime, a README,
    build_engines.sh and reference.npz: images, the PyTorch logits for them (of the program --weights names, for a
    model exported from a .pt2 / TorchScript file; of the FP32 ONNX for an ONNX model from elsewhere) and what
    every model measured on this CPU, the bar `python -m deploy.check` holds the engines to on the target. Images
    that calibrated or judged an INT8 model are left out of --data. Engines are built on the target
    (python3 -m deploy.build), never bundled.
    """
    from benchmark.bundle_reference import make_bundle_reference
    from bundling.bundle import bundle, check_class_folders, check_output, classify_artifacts
    from deploy.metadata import read_model_info, reference_origin

    check_output(artifacts, output, force,
                 inputs=[("--weights", weights), ("--data", data_dir), ("--labels", labels_file)])
    proof = None
    models = classify_artifacts(artifacts)[0]
    origin = reference_origin(read_model_info(models[0]).source_kind)  # PyTorch, or the FP32 ONNX of a foreign model
    if not no_reference:
        check_class_folders(data_dir if labels_file is None else None)  # names that become labels, before PyTorch
        proof = make_bundle_reference(models, weights=weights, data_dir=data_dir, labels_file=labels_file,
                                      num_images=reference_images, seed=seed, min_agreement=min_agreement,
                                      progress=stderr_is_tty() and not as_json)
        for message in proof.notes:
            note(message)
    elif weights or data_dir or labels_file or min_agreement is not None:
        note("--no-reference: --weights, --data, --labels and --min-agreement are not used")
    result = bundle(artifacts, output, max_batch=max_batch, force=force, proof=proof)
    for message in result.notes:
        note(message)
    _print(result, proof, origin, as_json)


def _print(result, proof, origin, as_json):
    payload = result.to_dict()
    if proof is not None:
        payload["cpu_checks"] = [check_summary(c) for c in proof.cpu_checks]
    if as_json:
        emit_json(payload)
        return
    click.echo("wrote {} ({}, {} files): {}".format(result.output, result.kind, len(result.files),
                                                    ", ".join(result.models + result.caches + result.labels)))
    if proof is not None:
        click.echo("measured on this CPU against {} on {} reference images ({}); the bar the device must "
                   "reach:".format(origin, proof.data.num_images, proof.data.source))
    for check in payload.get("cpu_checks", []):
        click.echo("  {name} ({precision}): top-1 agreement {measured_top1_agreement:.2f}% (device: at least "
                   "{required_top1_agreement:.2f}%, {allowance_images} image(s) for its kernels), cosine "
                   "{measured_cosine:.5f} (device: at least {required_cosine:.5f})".format(**check["bar"]))
    click.echo("on the target: sh build_engines.sh, which runs:")
    for command in result.build_commands:
        click.echo("  " + command)
    if result.reference:
        click.echo("then: python3 -m deploy.check   (every model and engine against {}'s logits)".format(origin))


def check_summary(check):
    """One model measured on this CPU (percent) and the bar the device must reach."""
    return {"name": check.name, "precision": check.precision, "top1_agreement": check.top1_agreement,
            "cosine_similarity": check.cosine_similarity, "top1_accuracy": check.top1_accuracy, "bar": check.bar}
