"""`cli.py pipeline`: export -> FP16 -> INT8 (CPU and TensorRT targets) -> engines -> benchmark -> report.

Each step records in ``<out>/pipeline_state.json`` the fingerprints of its inputs (sha256 of each input file;
for an image folder, of its listing: relative paths, sizes and mtimes, so a 50,000-image folder is not read
twice) and of its options, and the outputs it wrote. A step is skipped when all of them are unchanged and
its outputs still exist; otherwise it reruns, and so does every step whose inputs it rewrites.
"""
import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from deploy.errors import CheckFailedError, UserError
from deploy.fileio import sha256_file, write_json, write_text
from deploy.images import SAMPLES_DIR, walk_images

from .engine import BenchmarkOptions, load_images, load_reference

STATE_FILE = "pipeline_state.json"
STATE_FORMAT = 1
DEFAULT_ARCH = "eca_resnet50"
INT8_TARGETS = ("cpu", "tensorrt")
ENGINE_SOURCES = ("fp16", "int8_tensorrt")  # the ONNX models TensorRT builds engines from
TABLE_A_COST = "about 1 minute on 2 idle cores, 9 minutes on 2 busy ones"
TABLE_A_HOW_TO = ("Not measured in this run: it exports, quantizes and times 8 models ({}). Produce it with "
                  "`cli.py pipeline --table-a` (or `make bench`).")


@dataclass
class PipelineConfig:
    arch: str = DEFAULT_ARCH
    weights: Optional[str] = None
    data_dir: Optional[str] = None
    labels_file: Optional[str] = None
    out: str = "out/pipeline"
    input_size: Optional[int] = None
    num_images: int = 512
    method: str = "entropy"
    batch_sizes: Sequence[int] = (1, 8)  # small defaults: `make demo` must finish in minutes on 2 cores
    warmup: int = 1
    iterations: int = 5
    threads: Optional[int] = None
    table_a: bool = False
    table_a_weights: Optional[str] = None
    table_a_iterations: int = 10
    force: bool = False
    progress: bool = True


@dataclass
class StepOutcome:
    name: str
    status: str  # "ran", "skipped" or "unavailable"
    reason: str
    outputs: Dict[str, str] = field(default_factory=dict)
    summary: Dict[str, object] = field(default_factory=dict)
    seconds: float = 0.0

    def line(self, index: int, total: int) -> str:
        if self.status == "ran":
            return "[{}/{}] {}: ran in {:.1f} s ({})".format(index, total, self.name, self.seconds, self.reason)
        return "[{}/{}] {}: {} ({})".format(index, total, self.name, self.status, self.reason)


@dataclass
class PipelineResult:
    arch: str
    out: str
    random_weights: bool
    steps: List[StepOutcome]
    report: Dict[str, str]
    seconds: float

    def to_dict(self) -> Dict[str, object]:
        return {"arch": self.arch, "out": self.out, "random_weights": self.random_weights,
                "steps": [asdict(s) for s in self.steps], "report": self.report, "seconds": self.seconds}


# -- fingerprints and state -------------------------------------------------------------------------------

def folder_fingerprint(path: str) -> str:
    digest = hashlib.sha256()
    for image in walk_images(path):
        stat = os.stat(image)
        digest.update(json.dumps([os.path.relpath(image, path), stat.st_size, stat.st_mtime_ns]).encode("utf-8"))
    return "listing:" + digest.hexdigest()


def path_fingerprint(path: Optional[str]) -> Optional[str]:
    if path is None:
        return None
    if os.path.isdir(path):
        return folder_fingerprint(path)
    if os.path.isfile(path):
        return "sha256:" + sha256_file(path)
    return "missing"


def _options_digest(options: Dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode("utf-8")).hexdigest()


class StepRunner:
    """Runs steps in order, skipping those whose fingerprints match the state file; saves after each step."""

    def __init__(self, out: str, force: bool = False, echo: Optional[Callable[[str], None]] = None,
                 total: int = 6):
        self.out = out
        self.force = force
        self.echo = echo or (lambda line: None)
        self.total = total
        self.path = os.path.join(out, STATE_FILE)
        self.state = self._load()
        self.outcomes: List[StepOutcome] = []

    def _load(self) -> Dict[str, object]:
        try:
            with open(self.path, "r", encoding="utf-8") as handle:
                state = json.load(handle)
        except (OSError, ValueError):
            return {"format": STATE_FORMAT, "steps": {}}
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            return {"format": STATE_FORMAT, "steps": {}}  # another layout: rerun everything, never guess
        return state

    def _why_run(self, previous: Optional[dict], inputs: Dict[str, Optional[str]], options: Dict[str, object],
                 options_digest: str) -> str:
        if self.force:
            return "--force"
        if not previous:
            return "first run"
        changed = [k for k in sorted(set(inputs) | set(previous.get("inputs", {})))
                   if inputs.get(k) != previous.get("inputs", {}).get(k)]
        if changed:
            return "input changed: " + ", ".join(changed)
        if options_digest != previous.get("options_digest"):
            old = previous.get("options", {})
            changed = [k for k in sorted(set(old) | set(options)) if _options_digest({k: old.get(k)}) !=
                       _options_digest({k: options.get(k)})]
            return "option changed: " + (", ".join(changed) or "format")
        missing = [k for k, p in sorted(previous.get("outputs", {}).items()) if not os.path.exists(p)]
        if missing:
            return "output missing: " + ", ".join(missing)
        return ""

    def step(self, name: str, inputs: Dict[str, Optional[str]], options: Dict[str, object],
             run: Callable[[], Tuple[Dict[str, str], Dict[str, object]]]) -> StepOutcome:
        fingerprints = {key: path_fingerprint(path) for key, path in inputs.items()}
        digest = _options_digest(options)
        previous = self.state["steps"].get(name)
        reason = self._why_run(previous, fingerprints, options, digest)
        if not reason:
            outcome = StepOutcome(name, "skipped", "inputs unchanged", dict(previous["outputs"]),
                                  dict(previous.get("summary", {})))
            return self._record(outcome)
        started = time.perf_counter()
        outputs, summary = run()
        outcome = StepOutcome(name, "ran", reason, outputs, summary, time.perf_counter() - started)
        self.state["steps"][name] = {"inputs": fingerprints, "options": options, "options_digest": digest,
                                     "outputs": outputs, "summary": summary, "finished": time.time()}
        write_json(self.path, self.state)
        return self._record(outcome)

    def unavailable(self, name: str, reason: str) -> StepOutcome:
        return self._record(StepOutcome(name, "unavailable", reason))

    def _record(self, outcome: StepOutcome) -> StepOutcome:
        self.outcomes.append(outcome)
        self.echo(outcome.line(len(self.outcomes), self.total))
        return outcome


# -- the steps ---------------------------------------------------------------------------------------------

def _export(config: PipelineConfig, path: str):
    from exporter import export_model

    result = export_model(config.arch, path, weights=config.weights,
                          input_size=config.input_size or 224)
    if not result.parity:
        raise CheckFailedError("export: ONNX Runtime output differs from PyTorch (max abs error {:.3g})".format(
            result.parity.max_abs_error))
    return {"fp32": result.path}, {"random_weights": result.random_weights, "simplified": result.simplified,
                                   "parity_max_abs_error": result.parity.max_abs_error, "notes": result.notes}


def _fp16(fp32: str):
    from calibration.fp16 import convert_to_fp16_file

    report = convert_to_fp16_file(fp32).to_dict()
    summary = {k: v for k, v in report.items() if isinstance(v, (int, float, str, bool)) and k != "path"}
    return {"fp16": report["path"]}, summary


def _int8(config: PipelineConfig, fp32: str, images):
    from calibration.api import calibrate

    result = calibrate(fp32, targets=INT8_TARGETS, method=config.method, num_images=len(images.array),
                       fp16=False, progress=config.progress, images=images.loaded)
    outputs = {"int8_" + target: path for target, path in result.int8_models.items()}
    for key in ("calib_cache", "ranges_json"):
        if getattr(result, key, None):
            outputs[key] = getattr(result, key)
    return outputs, {"num_images": result.num_images, "method": result.method, "skipped": len(result.skipped)}


def _engines(config: PipelineConfig, sources: Dict[str, str], out: str):
    from deploy.trt.build import BuildOptions, build_engine

    outputs, summary = {}, {}
    options = BuildOptions(min_batch=1, opt_batch=max(config.batch_sizes), max_batch=max(config.batch_sizes))
    for key, onnx_path in sources.items():
        engine = os.path.join(out, "engines", os.path.splitext(os.path.basename(onnx_path))[0] + ".engine")
        result = build_engine(onnx_path, engine, options)
        outputs["engine_" + key] = result.engine_path
        summary[key] = {"precision": result.precision, "trt_version": result.trt_version,
                        "build_seconds": result.build_seconds, "notes": result.notes}
    return outputs, summary


def _benchmark(config: PipelineConfig, artifacts: List[str], images, reference, out: str):
    from .engine import benchmark_engine
    from .report import write_report

    options = BenchmarkOptions(batch_sizes=tuple(config.batch_sizes), warmup=config.warmup,
                               iterations=config.iterations, threads=config.threads,
                               num_images=config.num_images, progress=config.progress)
    result = benchmark_engine(artifacts, config.arch, weights=config.weights, data_dir=config.data_dir,
                              options=options, reference=reference, images=images)
    files = write_report(result, os.path.join(out, "benchmark"))
    drops = {a.name: a.top1_drop for a in result.artifacts}
    return files, {"top1_drop": drops, "threads": result.options["threads"]}


def _table_a(config: PipelineConfig, out: str, log):
    from .table_a import measure_table_a, to_markdown

    result = measure_table_a(os.path.join(out, "table_a"), weights_dir=config.table_a_weights,
                             threads=config.threads, iterations=config.table_a_iterations, progress=config.progress,
                             log=log)
    json_path, md_path = os.path.join(out, "table_a", "table_a.json"), os.path.join(out, "table_a", "table_a.md")
    write_json(json_path, result.to_dict())
    write_text(md_path, to_markdown(result))
    return {"json": json_path, "markdown": md_path}, {"seconds": result.seconds}


def _demote_headings(markdown: str) -> str:
    return re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", markdown, flags=re.MULTILINE)


def _read(path: str) -> str:
    with open(path, "r", encoding="utf-8") as handle:
        return handle.read()


def _report(config: PipelineConfig, out: str, benchmark_files: Dict[str, str], table_a_md: Optional[str],
            artifacts: Dict[str, str], random_weights: bool):
    from .table_a import complexity_only_markdown

    if table_a_md:
        table = _read(table_a_md)
    else:
        table = complexity_only_markdown(TABLE_A_HOW_TO.format(TABLE_A_COST))
    weights = "random weights (seed 0): agreement is meaningful, accuracy is not" if random_weights else \
        "weights " + os.fspath(config.weights)
    lines = ["# eca-deploy pipeline: {}".format(config.arch), "", "Model: {} with {}.".format(config.arch, weights),
             "", table, "", "## Artifacts", ""]
    lines += ["- {}: {} ({:.1f} MB)".format(k, os.path.relpath(p, out), os.path.getsize(p) / 2 ** 20)
              for k, p in sorted(artifacts.items(), key=lambda item: _artifact_order(item[0])) if os.path.isfile(p)]
    lines += ["", _demote_headings(_read(benchmark_files["markdown"]))]
    markdown = "\n".join(lines)
    report = {"markdown": os.path.join(out, "report.md"), "json": os.path.join(out, "report.json")}
    with open(benchmark_files["json"], "r", encoding="utf-8") as handle:
        benchmark = json.load(handle)
    table_json = None
    if table_a_md:
        with open(os.path.join(os.path.dirname(table_a_md), "table_a.json"), "r", encoding="utf-8") as handle:
            table_json = json.load(handle)
    write_text(report["markdown"], markdown)
    write_json(report["json"], {"arch": config.arch, "random_weights": random_weights, "artifacts": artifacts,
                                "benchmark": benchmark, "table_a": table_json,
                                "files": dict(benchmark_files, **report)})
    return dict(report, latency_plot=benchmark_files["latency_plot"],
                accuracy_plot=benchmark_files["accuracy_plot"]), {}


# -- the whole run -----------------------------------------------------------------------------------------

def check_config(config: PipelineConfig) -> None:
    import models

    models.get_entry(config.arch)  # an unknown name fails here with a suggestion
    if config.weights is not None and not os.path.isfile(config.weights):
        raise UserError("weights not found: {}".format(config.weights))
    if config.data_dir is not None and not os.path.isdir(config.data_dir):
        raise UserError("data folder not found: {}".format(config.data_dir))
    if config.labels_file is not None and config.data_dir is None:
        raise UserError("--labels needs --data")


def run_pipeline(config: PipelineConfig, echo: Optional[Callable[[str], None]] = None) -> PipelineResult:
    from deploy.trt.compat import tensorrt_available

    check_config(config)
    started = time.perf_counter()
    echo = echo or (lambda line: None)
    out = os.path.abspath(config.out)
    steps = StepRunner(out, config.force, echo, total=7 if config.table_a else 6)
    data = config.data_dir or SAMPLES_DIR
    cache: Dict[str, object] = {}

    def reference():
        if "reference" not in cache:
            cache["reference"] = load_reference(config.arch, config.weights, config.input_size)
        return cache["reference"]

    def images():
        if "images" not in cache:
            cache["images"] = load_images(config.data_dir, config.labels_file, reference().spec, config.num_images,
                                          progress=config.progress)
        return cache["images"]

    if config.weights is None:
        echo("note: no --weights given: {} has random weights (seed 0)".format(config.arch))
    if config.data_dir is None:
        echo("note: no --data: calibrating and measuring on the sample photos in {} (unlabeled)".format(SAMPLES_DIR))

    model_options = {"arch": config.arch, "input_size": config.input_size or 224}
    export = steps.step("export", {"weights": config.weights}, model_options,
                        lambda: _export(config, os.path.join(out, config.arch + ".onnx")))
    fp32 = export.outputs["fp32"]
    fp16 = steps.step("fp16", {"fp32": fp32}, {}, lambda: _fp16(fp32)).outputs["fp16"]
    int8 = steps.step("int8", {"fp32": fp32, "data": data, "labels": config.labels_file},
                      {"targets": list(INT8_TARGETS), "method": config.method, "num_images": config.num_images},
                      lambda: _int8(config, fp32, images())).outputs
    artifacts = {"fp32": fp32, "fp16": fp16}
    artifacts.update({k: v for k, v in int8.items() if k.startswith("int8_")})

    if tensorrt_available():
        sources = {k: artifacts[k] for k in ENGINE_SOURCES if k in artifacts}
        engines = steps.step("engines", sources, {"batch_sizes": list(config.batch_sizes)},
                             lambda: _engines(config, sources, out)).outputs
        artifacts.update(engines)
    else:
        steps.unavailable("engines", "skipped: TensorRT is not installed here (the tensorrt Python package cannot "
                                     "be imported); build engines on the target with `cli.py build`")

    threads = BenchmarkOptions(threads=config.threads).resolved_threads()
    bench_inputs = dict(artifacts, weights=config.weights, data=data, labels=config.labels_file)
    bench_options = {"batch_sizes": list(config.batch_sizes), "warmup": config.warmup,
                     "iterations": config.iterations, "threads": threads, "num_images": config.num_images,
                     "arch": config.arch, "input_size": config.input_size}
    ordered = [artifacts[k] for k in sorted(artifacts, key=_artifact_order)]
    bench = steps.step("benchmark", bench_inputs, bench_options,
                       lambda: _benchmark(config, ordered, images(), reference(), out)).outputs

    table_md = None
    if config.table_a:
        table = steps.step("table-a", {"weights": config.table_a_weights},
                           {"threads": threads, "iterations": config.table_a_iterations},
                           lambda: _table_a(config, out, echo))
        table_md = table.outputs["markdown"]
    elif os.path.isfile(os.path.join(out, "table_a", "table_a.md")):
        table_md = os.path.join(out, "table_a", "table_a.md")  # measured by an earlier --table-a run

    random_weights = config.weights is None
    report = steps.step("report", {"benchmark": bench["json"], "table_a": table_md},
                        {"arch": config.arch, "artifacts": sorted(artifacts)},
                        lambda: _report(config, out, bench, table_md, artifacts, random_weights)).outputs
    return PipelineResult(config.arch, out, random_weights, steps.outcomes, report,
                          time.perf_counter() - started)


def _artifact_order(key: str) -> Tuple[int, str]:
    order = ("fp32", "fp16", "int8_cpu", "int8_tensorrt", "engine_fp16", "engine_int8_tensorrt")
    return (order.index(key) if key in order else len(order), key)
