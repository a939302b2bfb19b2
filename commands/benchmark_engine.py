"""`eca-deploy benchmark-engine`: parity and speed of ONNX models and TensorRT engines against PyTorch."""
import click

from benchmark.parity_and_speed import DEVICES, REFERENCE_PRECISIONS, BenchmarkOptions

from deploy.validate import MAX_BATCH, MAX_INPUT_SIZE, MAX_ITERATIONS, MAX_NUM_IMAGES

from .common import at_most, emit_json, json_option, note, stderr_is_tty
from .options import threads_option


def parse_batch_sizes(value):
    if value is None or isinstance(value, tuple):
        return value
    try:
        sizes = tuple(int(part) for part in str(value).split(",") if part.strip())
    except ValueError:
        raise click.BadParameter("give comma-separated positive integers, e.g. 1,8,32") from None
    if not sizes or min(sizes) < 1:
        raise click.BadParameter("give comma-separated positive integers, e.g. 1,8,32")
    from deploy.validate import check_bound
    return tuple(sorted(set(check_bound("--batch-sizes", sizes, MAX_BATCH))))


def _batch_sizes_callback(ctx, param, value):
    return parse_batch_sizes(value)


@click.command("benchmark-engine")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--reference", "arch", help="Zoo model of the reference (default: the arch in the artifact's metadata).")
@click.option("--weights", type=click.Path(dir_okay=False), help="Checkpoint of the reference (default: random), or "
              "the program (.pt2, TorchScript) the artifacts were exported from; checked against the sha256 in the "
              "artifact's metadata. For an ONNX model from elsewhere: its FP32 ONNX (default: the one listed).")
@click.option("--strict", is_flag=True, help="--weights that are not the artifact's checkpoint: an error, not a warning.")
@click.option("--input-size", type=click.IntRange(min=32), callback=at_most(MAX_INPUT_SIZE),
              help="Reference input size (default: the artifact's; at most {}).".format(MAX_INPUT_SIZE))
@click.option("--data", "data_dir", type=click.Path(file_okay=False),
              help="Image folder (ImageFolder tree or flat). Default: the shipped sample photos, unlabeled.")
@click.option("--labels", "labels_file", type=click.Path(dir_okay=False), help="Labels file for a flat --data.")
@click.option("--num-images", type=click.IntRange(min=1), default=BenchmarkOptions.num_images, show_default=True,
              callback=at_most(MAX_NUM_IMAGES), help="At most {}.".format(MAX_NUM_IMAGES))
@click.option("--batch-sizes", default=",".join(str(b) for b in BenchmarkOptions.batch_sizes), show_default=True,
              callback=_batch_sizes_callback, help="Each at most {}.".format(MAX_BATCH))
@click.option("--warmup", type=click.IntRange(min=0), default=BenchmarkOptions.warmup, show_default=True, callback=at_most(MAX_ITERATIONS),
              help="Uncounted runs per batch size after the first one (at most {}).".format(MAX_ITERATIONS))
@click.option("--iterations", type=click.IntRange(min=1), default=BenchmarkOptions.iterations, show_default=True,
              callback=at_most(MAX_ITERATIONS), help="At most {}.".format(MAX_ITERATIONS))
@threads_option
@click.option("--device", type=click.Choice(DEVICES), default=DEVICES[0], show_default=True)
@click.option("--reference-precision", type=click.Choice(REFERENCE_PRECISIONS), default=REFERENCE_PRECISIONS[0],
              show_default=True, help="fp16: the PyTorch reference in half precision and channels-last, the fair "
                                      "comparison for an FP16 engine on a GPU.")
@click.option("--cuda-graph", is_flag=True, help="Replay CUDA graphs (TensorRT engines, PyTorch on CUDA).")
@click.option("--report", "report_dir", type=click.Path(file_okay=False),
              help="Write benchmark.md/.json/.csv and PNG plots here.")
@click.option("--max-top1-drop", type=float,
              help="Fail (exit 1) when an artifact loses more top-1 points than this vs the reference.")
@click.option("--seed", type=int, default=0, show_default=True, help="Which images are drawn from --data.")
@json_option
def benchmark_engine_command(artifacts, arch, weights, strict, input_size, data_dir, labels_file, num_images,
                             batch_sizes, warmup, iterations, threads, device, reference_precision, cuda_graph,
                             report_dir, max_top1_drop, seed, as_json):
    """Measure ARTIFACTS (ONNX models of any precision, TensorRT engines) against the PyTorch reference.

    The reference's architecture, input size, classes and preprocessing come from the first artifact's metadata;
    all artifacts must agree on them. Every backend gets the same preprocessed real images: top-1/top-5
    accuracy (with labels), agreement with PyTorch, logit errors, then, with the backends taking turns, latency
    mean/p50/p90/p99, images/s at p50 and the spread p90/p50 per batch size (above 1.5: unstable).
    """
    from benchmark.parity_and_speed import benchmark_engine
    from benchmark.report import to_markdown, write_report
    from deploy.validate import check_finite_number, check_outputs_spare_inputs

    check_outputs_spare_inputs([("--report", report_dir)], [("ARTIFACTS", list(artifacts)), ("--weights", weights),
                                                            ("--data", data_dir), ("--labels", labels_file)])
    if max_top1_drop is not None:  # NaN would never fail and a negative drop always would
        check_finite_number("--max-top1-drop", max_top1_drop, minimum=0, maximum=100)

    options = BenchmarkOptions(batch_sizes=batch_sizes, warmup=warmup, iterations=iterations, threads=threads,
                               device=device, cuda_graph=cuda_graph, num_images=num_images, seed=seed,
                               progress=stderr_is_tty() and not as_json, reference_precision=reference_precision,
                               strict=strict)
    result = benchmark_engine(artifacts, arch, weights=weights, data_dir=data_dir, labels_file=labels_file,
                              input_size=input_size, options=options)
    if result.reference.kind == "onnx":
        note("no PyTorch program: the reference is the FP32 ONNX {}".format(result.reference.path))
    elif weights is None:
        note("no --weights given: the reference {} has random weights (seed 0)".format(result.arch))
    for message in result.notes:
        note(message)
    payload = result.to_dict()
    if report_dir:
        payload["report_files"] = write_report(result, report_dir)
    if as_json:
        emit_json(payload)
    else:
        click.echo(to_markdown(result))
        for path in payload.get("report_files", {}).values():
            click.echo("wrote {}".format(path))
    report_breaches(result, max_top1_drop)


def report_breaches(result, max_top1_drop):
    from deploy.errors import CheckFailedError

    breaches = result.breaches(max_top1_drop)
    if breaches:
        basis = "accuracy" if result.data["labeled"] else "agreement with PyTorch"
        raise CheckFailedError("top-1 drop above {:g} points ({}): {}".format(max_top1_drop, basis, ", ".join(
            "{} {:.2f}".format(b.name, b.top1_drop) for b in breaches)))
