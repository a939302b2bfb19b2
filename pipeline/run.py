"""`eca-deploy pipeline`: export -> FP16 -> INT8 (CPU and TensorRT targets) -> engines -> benchmark -> report -> bundle.

Calibration and evaluation use different images: ``calib_data`` and ``eval_data``, or one ``data_dir`` split
deterministically (seeded, stratified by class) into a calibration part and a held-out evaluation part. The
evaluation images are split once more, into a part that judges the calibration (auto's choice, the accuracy
targets) and a disjoint part that every reported figure (benchmark, report, the bundle's proof) is measured on,
so no figure comes from the images that chose the model (``holdout_data`` gives the judges apart instead). Only
without any data do all use the shipped sample photos, and the run says so.

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

import numpy as np

from calibration.api import DEFAULT_METHOD
from deploy.errors import CheckFailedError, UserError
from deploy.fileio import sha256_file, write_json, write_text
from deploy.images import SAMPLES_DIR, walk_images
from deploy.runners.execution import DEFAULT_BATCH_SIZES, DEFAULT_ITERATIONS, DEFAULT_WARMUP
from deploy.schema import MapOf, check_schema, load_checked_json

from benchmark.parity_and_speed import BenchmarkOptions, load_images, load_reference

STATE_FILE = "pipeline_state.json"
STATE_FORMAT = 1
# What StepRunner writes per step and reads back to decide whether to skip it.
STATE_SCHEMA = {"format": int, "steps": MapOf({
    "inputs": MapOf((str, type(None))), "options": dict, "options_digest": str, "outputs": MapOf(str),
    "summary?": dict, "finished?": float})}
DEFAULT_ARCH = "eca_resnet50"
INT8_TARGETS = ("cpu", "tensorrt")
ENGINE_SOURCES = ("fp16", "int8_tensorrt")  # the ONNX models TensorRT builds engines from
# What a device needs: the FP32 model (reference), FP16 and TensorRT-target INT8 models and the legacy cache.
BUNDLED = ("fp32", "fp16", "int8_tensorrt", "calib_cache")
REPORT_FORMAT = 2
BUNDLE_FORMAT = 2  # bumped when what the bundle step writes changes (2: the proof travels), so old bundles rebuild  # bumped when the report's layout changes, so an old report is rewritten
BASELINES_COST = "about 1 minute on 2 idle cores, 9 minutes on 2 busy ones"
BASELINES_HOW_TO = ("Attention modules against their baselines, deployed (8 models exported, quantized and "
                    "timed; {}): produce it with `eca-deploy pipeline --baselines` (or `make bench`).")
SPLIT_SEED = 0


@dataclass
class PipelineConfig:
    arch: str = DEFAULT_ARCH
    weights: Optional[str] = None
    data_dir: Optional[str] = None  # split into calibration and held-out evaluation images
    labels_file: Optional[str] = None  # labels of a flat data_dir or eval_data
    calib_data: Optional[str] = None
    eval_data: Optional[str] = None
    holdout_data: Optional[str] = None  # unseen images that judge the calibration (default: part of eval_data)
    num_holdout_images: Optional[int] = None  # None: as many as --num-images
    trt_version: Optional[str] = None  # stamped into the calibration cache; None: calibrate's default
    targets: Sequence[str] = INT8_TARGETS
    min_agreement: Optional[float] = None  # calibration target, bundle floor and device floor (percent)
    max_top1_drop: Optional[float] = None
    preprocess_options: Dict[str, object] = field(default_factory=dict)  # export's --resize, --mean, ...
    bundle: Optional[str] = None  # folder or .tar.gz for the target device
    out: str = "out/pipeline"
    input_size: Optional[int] = None
    num_images: int = 512
    method: str = DEFAULT_METHOD
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES  # benchmark-engine's and deploy.bench's defaults too
    warmup: int = DEFAULT_WARMUP
    iterations: int = DEFAULT_ITERATIONS
    threads: Optional[int] = None
    baselines: bool = False
    program: Optional[str] = None  # a .pt2 / TorchScript file: the model and its weights in one (arch is its name)
    baselines_weights: Optional[str] = None
    baselines_iterations: int = 10
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
        fresh = {"format": STATE_FORMAT, "steps": {}}
        if not os.path.lexists(self.path):
            return fresh
        try:
            state = load_checked_json(self.path, dict, "pipeline state")
            if state.get("format") != STATE_FORMAT:
                return fresh  # another layout: rerun everything, never guess
            check_schema(state, STATE_SCHEMA, self.path)
        except UserError as exc:  # damaged or hand-edited: the state is only a cache of what ran, so rebuild it
            self.echo("note: {}; starting a new state file, so every step runs".format(exc))
            return fresh
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


# -- which images calibrate and which evaluate ------------------------------------------------------------

@dataclass
class DataPlan:
    """Where calibration and evaluation images come from; ``note`` tells the user what was decided."""

    calib_dir: str
    eval_dir: Optional[str]  # None: the shipped sample photos
    labels_file: Optional[str]
    split: bool  # one folder, split into a calibration part and a held-out evaluation part
    note: Optional[str] = None
    holdout_dir: Optional[str] = None  # unseen images that judge the calibration; None: part of the evaluation

    def fingerprint_inputs(self) -> Tuple[Dict[str, Optional[str]], Dict[str, Optional[str]]]:
        """The inputs whose change reruns calibration (its judges included), and those that rerun the benchmark."""
        calib = {"data": self.calib_dir, "labels": self.labels_file if self.split else None,
                 "judges": self.holdout_dir or self.eval_dir}
        evaluate = {"data": self.eval_dir or SAMPLES_DIR, "labels": self.labels_file, "judges": self.holdout_dir}
        return calib, evaluate


def plan_data(config: PipelineConfig) -> DataPlan:
    """Decide the calibration and evaluation images from --data / --calib-data / --eval-data."""
    if config.data_dir and (config.calib_data or config.eval_data):
        raise UserError("give either --data (split into calibration and evaluation images) or --calib-data and "
                        "--eval-data, not both")
    if bool(config.calib_data) != bool(config.eval_data):
        raise UserError("--calib-data and --eval-data go together (or give one --data to split)")
    for path in (config.data_dir, config.calib_data, config.eval_data, config.holdout_data):
        if path is not None and not os.path.isdir(path):
            raise UserError("data folder not found: {}".format(path))
    if config.holdout_data and not (config.data_dir or config.eval_data):
        raise UserError("--holdout-data judges the calibration apart from the evaluation images; it needs --data or "
                        "--calib-data/--eval-data")
    if config.labels_file is not None and not (config.data_dir or config.eval_data):
        raise UserError("--labels needs --data or --eval-data")
    if config.data_dir:
        return DataPlan(config.data_dir, config.data_dir, config.labels_file, True, holdout_dir=config.holdout_data)
    if config.calib_data:
        return DataPlan(config.calib_data, config.eval_data, config.labels_file, False,
                        holdout_dir=config.holdout_data)
    return DataPlan(SAMPLES_DIR, None, None, False, "no --data: calibrating and measuring on the same sample photos "
                    "in {} (unlabeled, so no accuracy; give --data or --calib-data/--eval-data)".format(SAMPLES_DIR))


def split_images(images, num_images: int, seed: int = SPLIT_SEED):
    """One ImageSet -> (calibration, evaluation): disjoint, seeded, stratified by class.

    Calibration takes ``num_images`` or half the images, whichever is fewer; evaluation the rest, up to
    ``num_images``. The same folder and seed always give the same split.
    """
    from data.datasets import stratified_sample

    if len(images) < 2:
        raise UserError("--data has {} image(s); splitting it into calibration and evaluation images needs at "
                        "least 2".format(len(images)))
    calib = stratified_sample(images, min(num_images, len(images) // 2), seed)
    chosen = set(calib.paths)
    rest = images.subset([i for i, path in enumerate(images.paths) if path not in chosen])
    return calib, stratified_sample(rest, num_images, seed)


def split_judges(images, seed: int = SPLIT_SEED):
    """Evaluation images -> (judges, measured): disjoint halves, seeded and stratified by class. The judges choose
    the calibration (auto's candidate, the targets); every reported figure comes from the other half."""
    from data.datasets import stratified_sample

    if len(images) < 2:
        raise UserError("{} evaluation image(s): judging the calibration and measuring the models on separate "
                        "images needs at least 2 (or give --holdout-data)".format(len(images)))
    judges = stratified_sample(images, len(images) // 2, seed)
    chosen = set(judges.paths)
    return judges, images.subset([i for i, path in enumerate(images.paths) if path not in chosen])


def load_plan_images(plan: DataPlan, spec, num_images: int, progress: bool, echo: Callable[[str], None],
                     num_holdout_images: Optional[int] = None):
    """Decode the calibration images and the judges (data.datasets.LoadedImages, None without data) and the
    evaluation images (EvalImages)."""
    from data.datasets import discover, load_images as decode, stratified_sample

    from benchmark.parity_and_speed import EvalImages

    if plan.eval_dir is None:
        evaluation = load_images(None, None, spec, num_images, progress=progress)
        return evaluation.loaded, None, evaluation
    if plan.split:
        calib_set, eval_set = split_images(discover(plan.calib_dir, plan.labels_file), num_images)
        echo("note: --data {} split deterministically (seed {}, stratified by class): {} images calibrate, {} "
             "held-out images evaluate; give --calib-data and --eval-data to choose them".format(
                 plan.calib_dir, SPLIT_SEED, len(calib_set), len(eval_set)))
    else:
        calib_set = stratified_sample(discover(plan.calib_dir), num_images, SPLIT_SEED)
        eval_set = stratified_sample(discover(plan.eval_dir, plan.labels_file), num_images, SPLIT_SEED)
    if plan.holdout_dir:
        judge_set = stratified_sample(discover(plan.holdout_dir), num_holdout_images or num_images, SPLIT_SEED)
    else:
        judge_set, eval_set = split_judges(eval_set)
        echo("note: the {} evaluation images split deterministically (seed {}, stratified by class): {} judge the "
             "calibration, {} measure every reported figure".format(
                 len(judge_set) + len(eval_set), SPLIT_SEED, len(judge_set), len(eval_set)))
    calib = decode(calib_set, spec, progress=progress)
    judges = decode(judge_set, spec, progress=progress)
    loaded = decode(eval_set, spec, progress=progress)
    for name, part in (("calibration", calib), ("judging", judges), ("evaluation", loaded)):
        if not len(part):
            raise UserError("none of the {} images could be decoded".format(name))
    source = plan.eval_dir + (" (held-out part)" if plan.split else "")
    evaluation = EvalImages(array=np.ascontiguousarray(loaded.array, dtype=np.float32), labels=loaded.labels,
                            paths=list(loaded.paths), source=source, skipped=list(loaded.skipped), loaded=loaded)
    return calib, judges, evaluation


# -- the steps ---------------------------------------------------------------------------------------------

def _export(config: PipelineConfig, path: str):
    from exporter import export_model

    if config.program:
        from exporter.sources import export_program
        result = export_program(config.program, path, input_size=config.input_size,
                                preprocess_options=dict(config.preprocess_options))
    else:
        result = export_model(config.arch, path, weights=config.weights, input_size=config.input_size or 224,
                              preprocess_options=dict(config.preprocess_options) or None)
    if not result.parity:
        raise CheckFailedError("export: ONNX Runtime output differs from PyTorch (max abs error {:.3g})".format(
            result.parity.max_abs_error))
    return {"fp32": result.path}, {"random_weights": result.random_weights, "simplified": result.simplified,
                                   "parity_max_abs_error": result.parity.max_abs_error, "notes": result.notes}


def _fp16(fp32: str):
    from precision.fp16 import convert_to_fp16_file

    report = convert_to_fp16_file(fp32).to_dict()
    summary = {k: v for k, v in report.items() if isinstance(v, (int, float, str, bool)) and k != "path"}
    return {"fp16": report["path"]}, summary


def _int8(config: PipelineConfig, fp32: str, images, judges, echo: Callable[[str], None]):
    from calibration.api import DEFAULT_TRT_VERSION, calibrate, judged_on
    from calibration.fallback import AccuracyGoal

    goal = AccuracyGoal(config.min_agreement, config.max_top1_drop)
    result = calibrate(fp32, targets=tuple(config.targets), method=config.method, num_images=len(images.array),
                       fp16=False, progress=config.progress, images=images, holdout_images=judges, goal=goal,
                       trt_version=config.trt_version or DEFAULT_TRT_VERSION)
    for message in result.notes:
        echo("note: " + message)
    judged = judged_on(result.heldout_source, result.heldout_images)
    if result.missed:
        target = result.missed[0]
        raise CheckFailedError("int8: {} missed for the {} target: best agreement {:.2f}% {}; the best model reached "
                               "is {}".format(result.goal, target, result.targets[target].score["agreement"], judged,
                                              result.int8_models[target]))
    outputs = {"int8_" + target: path for target, path in result.int8_models.items()}
    for key in ("calib_cache", "ranges_json"):
        if getattr(result, key, None):
            outputs[key] = getattr(result, key)
    return outputs, {"num_images": result.num_images, "method": result.method, "skipped": len(result.skipped),
                     "judged_on": judged, "goal": result.goal,
                     "agreement": {t: o.score["agreement"] for t, o in result.targets.items() if o.score}}


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


def _benchmark(config: PipelineConfig, artifacts: List[str], images, reference, out: str, eval_dir):
    from benchmark.parity_and_speed import benchmark_engine
    from benchmark.report import write_report

    options = BenchmarkOptions(batch_sizes=tuple(config.batch_sizes), warmup=config.warmup,
                               iterations=config.iterations, threads=config.threads,
                               num_images=config.num_images, progress=config.progress)
    result = benchmark_engine(artifacts, config.arch, weights=config.weights, data_dir=eval_dir,
                              options=options, reference=reference, images=images)
    files = write_report(result, os.path.join(out, "benchmark"))
    drops = {a.name: a.top1_drop for a in result.artifacts}
    return files, {"top1_drop": drops, "threads": result.options["threads"]}


def _baselines(config: PipelineConfig, out: str, log):
    from benchmark.attention_baselines import measure_baselines, to_markdown

    result = measure_baselines(os.path.join(out, "baselines"), weights_dir=config.baselines_weights,
                             threads=config.threads, iterations=config.baselines_iterations, progress=config.progress,
                             log=log)
    json_path, md_path = os.path.join(out, "baselines", "baselines.json"), os.path.join(out, "baselines", "baselines.md")
    write_json(json_path, result.to_dict())
    write_text(md_path, to_markdown(result))
    return {"json": json_path, "markdown": md_path}, {"seconds": result.seconds}


def _relink_images(markdown: str, folder: str) -> str:
    """Image links relative to the benchmark folder, made relative to the report beside it."""
    return re.sub(r"!\[([^\]]*)\]\(([^)/]+)\)", lambda m: "![{}]({}/{})".format(m.group(1), folder, m.group(2)),
                  markdown)


def _read(path: str) -> str:
    with open(path, "r", encoding="utf-8") as handle:
        return handle.read()


def _describe_plan(plan: DataPlan) -> str:
    if plan.eval_dir is None:
        return "calibration and evaluation on the same shipped sample photos (unlabeled)"
    if plan.split:
        return ("--data {} split deterministically (seed {}, stratified by class) into calibration images and "
                "held-out evaluation images".format(plan.calib_dir, SPLIT_SEED))
    return "calibration on {}, evaluation on {}".format(plan.calib_dir, plan.eval_dir)


def _report(config: PipelineConfig, out: str, benchmark_files: Dict[str, str], baselines_md: Optional[str],
            artifacts: Dict[str, str], random_weights: bool, plan: DataPlan):
    """report.md opens with what was measured (parity, then speed, with their plots); what was not, at the end."""
    weights = ("random weights (seed 0): agreement between backends is meaningful, accuracy is not" if random_weights
               else "weights " + os.fspath(config.weights))
    bench_folder = os.path.relpath(os.path.dirname(benchmark_files["markdown"]), out)
    benchmark_md = _read(benchmark_files["markdown"]).split("\n", 1)[1]  # its title is replaced by ours
    lines = ["# eca-deploy pipeline: {}".format(config.arch), "",
             "Model: {} with {}.".format(config.arch, weights), "Data: {}.".format(_describe_plan(plan)), "",
             _relink_images(benchmark_md, bench_folder).strip(), "", "## Artifacts", ""]
    lines += ["- {}: {} ({:.1f} MB)".format(k, os.path.relpath(p, out), os.path.getsize(p) / 2 ** 20)
              for k, p in sorted(artifacts.items(), key=lambda item: _artifact_order(item[0])) if os.path.isfile(p)]
    lines += [""]
    if baselines_md:
        lines += [_read(baselines_md).strip(), ""]
    else:
        lines += ["## Not measured in this run", "", "- " + BASELINES_HOW_TO.format(BASELINES_COST)]
        if not any(k.startswith("engine_") for k in artifacts):
            lines += ["- TensorRT engines: TensorRT is not installed here; build them on the target "
                      "(`eca-deploy build`, or `build_engines.sh` in a bundle)."]
        lines += [""]
    markdown = "\n".join(lines)
    report = {"markdown": os.path.join(out, "report.md"), "json": os.path.join(out, "report.json")}
    with open(benchmark_files["json"], "r", encoding="utf-8") as handle:
        benchmark = json.load(handle)
    table_json = None
    if baselines_md:
        with open(os.path.join(os.path.dirname(baselines_md), "baselines.json"), "r", encoding="utf-8") as handle:
            table_json = json.load(handle)
    write_text(report["markdown"], markdown)
    write_json(report["json"], {"arch": config.arch, "random_weights": random_weights, "artifacts": artifacts,
                                "data": _describe_plan(plan), "benchmark": benchmark, "baselines": table_json,
                                "files": dict(benchmark_files, **report)})
    return dict(report, latency_plot=benchmark_files["latency_plot"],
                accuracy_plot=benchmark_files["accuracy_plot"]), {}


# -- the whole run -----------------------------------------------------------------------------------------

def check_sizes_and_outputs(config: PipelineConfig) -> None:
    """What fails without torch, first: sizes within deploy.validate's bounds, the memory of the largest batch,
    --mean/--std/--resize, and no output (--out, --bundle) that would change an input or the run's own models."""
    from deploy.preprocess import PreprocessSpec, resolve_spec
    from deploy.validate import (MAX_BATCH, MAX_INPUT_SIZE, MAX_ITERATIONS, MAX_NUM_IMAGES, check_batch_memory,
                                 check_bound, check_outputs_spare_inputs, check_threads)

    input_size = check_bound("--input-size", config.input_size, MAX_INPUT_SIZE, minimum=32) or 224
    for flag, value in (("--num-images", config.num_images), ("--holdout-images", config.num_holdout_images)):
        check_bound(flag, value, MAX_NUM_IMAGES)
    check_bound("--batch-sizes", tuple(config.batch_sizes), MAX_BATCH)
    check_bound("--warmup", config.warmup, MAX_ITERATIONS, minimum=0)
    check_bound("--iterations", config.iterations, MAX_ITERATIONS)
    check_threads("--threads", config.threads)
    check_batch_memory(max(config.batch_sizes), input_size, "--batch-sizes")
    resolve_spec(PreprocessSpec.for_input_size(input_size), **(config.preprocess_options or {}))
    out = os.path.abspath(config.out)
    check_outputs_spare_inputs(
        [("--out", out)],
        [("--weights", config.weights), ("--data", config.data_dir), ("--calib-data", config.calib_data),
         ("--eval-data", config.eval_data), ("--holdout-data", config.holdout_data), ("--labels", config.labels_file),
         ("--baselines-weights", config.baselines_weights), ("--out", os.path.join(out, config.arch + ".onnx"))],
        replaced=[("--bundle", config.bundle)])


def check_config(config: PipelineConfig) -> DataPlan:
    plan = plan_data(config)  # which options go together, first: it says what is wrong with the call itself
    check_sizes_and_outputs(config)  # before `import models` loads torch, so a refusal costs nothing
    if config.bundle and config.labels_file is None:
        from bundling.bundle import check_class_folders
        check_class_folders(plan.eval_dir)  # they become the bundle's labels: refused now, not after every step
    import models

    if config.program:
        from models.program import load_program
        load_program(config.program)  # a damaged or refused file fails now, not after the steps before it
        if config.baselines:
            raise UserError("--baselines measures the zoo's attention modules; it does not apply to a program")
    else:
        models.get_entry(config.arch)  # an unknown name fails here with a suggestion
    if config.weights is not None and not os.path.isfile(config.weights):
        raise UserError("weights not found: {}".format(config.weights))
    if config.trt_version is not None:
        from deploy.calib_cache import parse_trt_version
        parse_trt_version(config.trt_version)  # a typo fails now, not after export
    return plan


def _wrote_bundle(steps: StepRunner, target: str) -> bool:
    """Replace an existing bundle only when an earlier run of this pipeline wrote it, never a user's folder."""
    return steps.state["steps"].get("bundle", {}).get("outputs", {}).get("bundle") == os.path.abspath(target)


def run_pipeline(config: PipelineConfig, echo: Optional[Callable[[str], None]] = None) -> PipelineResult:
    from .lock import out_lock

    plan = check_config(config)
    # one run per --out, from before the state is read to the end: two would each drop what the other recorded
    with out_lock(os.path.abspath(config.out)):
        return _run_locked(config, plan, echo)


def _run_locked(config: PipelineConfig, plan: DataPlan, echo: Optional[Callable[[str], None]]) -> PipelineResult:
    from deploy.metadata import read_model_info
    from deploy.trt.compat import tensorrt_available

    started = time.perf_counter()
    echo = echo or (lambda line: None)
    out = os.path.abspath(config.out)
    steps = StepRunner(out, config.force, echo, total=6 + bool(config.baselines) + bool(config.bundle))
    if config.bundle and os.path.lexists(config.bundle) and not _wrote_bundle(steps, config.bundle):
        raise UserError("--bundle {} exists, and no earlier run in --out {} wrote it; choose another --bundle".format(
            config.bundle, config.out))  # found now, not after every step has run
    cache: Dict[str, object] = {}

    def reference():
        if "reference" not in cache:
            if config.program:
                from benchmark.parity_and_speed import original_reference
                cache["reference"] = original_reference(read_model_info(fp32), config.program, source=fp32)
            else:
                cache["reference"] = load_reference(config.arch, config.weights, config.input_size)
        return cache["reference"]

    def images(kind: str):
        """The calibration ("calib"), judging ("judges") or evaluation ("eval") images, in the preprocessing the
        export recorded."""
        if kind not in cache:
            spec = read_model_info(fp32).preprocess
            cache["calib"], cache["judges"], cache["eval"] = load_plan_images(
                plan, spec, config.num_images, config.progress, echo, config.num_holdout_images)
        return cache[kind]

    if config.weights is None:
        echo("note: no --weights given: {} has random weights (seed 0)".format(config.arch))
    if plan.note:
        echo("note: " + plan.note)

    model_options = {"arch": config.arch, "input_size": config.input_size or 224}
    if config.preprocess_options:  # absent when unset, so older state files still match
        model_options["preprocess"] = dict(config.preprocess_options)
    export = steps.step("export", {"weights": config.weights}, model_options,
                        lambda: _export(config, os.path.join(out, config.arch + ".onnx")))
    fp32 = export.outputs["fp32"]
    fp16 = steps.step("fp16", {"fp32": fp32}, {}, lambda: _fp16(fp32)).outputs["fp16"]
    calib_inputs, eval_inputs = plan.fingerprint_inputs()
    int8_options = {"targets": list(config.targets), "method": config.method, "num_images": config.num_images,
                    "split": plan.split, "judges": ("holdout", config.num_holdout_images) if plan.holdout_dir
                    else "eval-half",
                    "min_agreement": config.min_agreement, "max_top1_drop": config.max_top1_drop}
    if config.trt_version is not None:  # absent from the options when unset, so older state files still match
        int8_options["trt_version"] = config.trt_version
    int8 = steps.step("int8", dict(calib_inputs, fp32=fp32), int8_options,
                      lambda: _int8(config, fp32, images("calib"), images("judges"), echo)).outputs
    artifacts = {"fp32": fp32, "fp16": fp16}
    artifacts.update({k: v for k, v in int8.items() if k.startswith("int8_")})

    if tensorrt_available():
        sources = {k: artifacts[k] for k in ENGINE_SOURCES if k in artifacts}
        engines = steps.step("engines", sources, {"batch_sizes": list(config.batch_sizes)},
                             lambda: _engines(config, sources, out)).outputs
        artifacts.update(engines)
    else:
        steps.unavailable("engines", "skipped: TensorRT is not installed here (the tensorrt Python package cannot "
                                     "be imported); build engines on the target with `eca-deploy build`")

    threads = BenchmarkOptions(threads=config.threads).resolved_threads()
    bench_inputs = dict(artifacts, weights=config.weights, **eval_inputs)
    bench_options = {"batch_sizes": list(config.batch_sizes), "warmup": config.warmup,
                     "iterations": config.iterations, "threads": threads, "num_images": config.num_images,
                     "arch": config.arch, "input_size": config.input_size, "split": plan.split,
                     "judges": "holdout" if plan.holdout_dir else "eval-half"}
    ordered = [artifacts[k] for k in sorted(artifacts, key=_artifact_order)]
    bench = steps.step("benchmark", bench_inputs, bench_options,
                       lambda: _benchmark(config, ordered, images("eval"), reference(), out, plan.eval_dir)).outputs

    table_md = None
    if config.baselines:
        table = steps.step("baselines", {"weights": config.baselines_weights},
                           {"threads": threads, "iterations": config.baselines_iterations},
                           lambda: _baselines(config, out, echo))
        table_md = table.outputs["markdown"]
    elif os.path.isfile(os.path.join(out, "baselines", "baselines.md")):
        table_md = os.path.join(out, "baselines", "baselines.md")  # measured by an earlier --baselines run

    random_weights = config.weights is None
    report = steps.step("report", {"benchmark": bench["json"], "baselines": table_md},
                        {"arch": config.arch, "artifacts": sorted(artifacts), "data": _describe_plan(plan),
                         "format": REPORT_FORMAT},
                        lambda: _report(config, out, bench, table_md, artifacts, random_weights, plan)).outputs
    if config.bundle:
        shipped = {k: v for k, v in dict(artifacts, calib_cache=int8.get("calib_cache")).items()
                   if v and k in BUNDLED}
        target = os.path.abspath(config.bundle)
        ours = _wrote_bundle(steps, target)
        bundled = steps.step("bundle", dict(shipped, weights=config.weights, **eval_inputs),
                             {"output": target, "min_agreement": config.min_agreement,
                              "max_batch": max(config.batch_sizes), "format": BUNDLE_FORMAT},
                             lambda: _bundle(config, shipped, target, ours, images("eval"), plan)).outputs
        report = dict(report, bundle=bundled["bundle"])
    return PipelineResult(config.arch, out, random_weights, steps.outcomes, report,
                          time.perf_counter() - started)


def _bundle(config: PipelineConfig, artifacts: Dict[str, str], output: str, replace: bool, images, plan: DataPlan):
    """The bundle with its proof: PyTorch's logits on the images every reported figure was measured on (never the
    ones that chose the calibration), each model's measured bar, the class names and sample images."""
    from benchmark.bundle_reference import make_bundle_reference
    from bundling.bundle import bundle

    paths = [artifacts[k] for k in sorted(artifacts, key=_artifact_order)]
    models = [p for p in paths if p.lower().endswith(".onnx")]
    proof = make_bundle_reference(models, weights=config.weights, data_dir=plan.eval_dir,
                                  labels_file=config.labels_file, num_images=len(images.array),
                                  min_agreement=config.min_agreement, images=images)
    result = bundle(paths, output, max_batch=max(config.batch_sizes), force=replace, proof=proof)
    bars = {bar.name: bar.to_dict() for bar in proof.data.bars}
    return {"bundle": result.output}, {"files": len(result.files), "models": result.models, "caches": result.caches,
                                       "build_commands": result.build_commands, "notes": result.notes,
                                       "reference_images": proof.data.num_images, "bars": bars}


def _artifact_order(key: str) -> Tuple[int, str]:
    order = ("fp32", "fp16", "int8_cpu", "int8_tensorrt", "engine_fp16", "engine_int8_tensorrt", "calib_cache")
    return (order.index(key) if key in order else len(order), key)
