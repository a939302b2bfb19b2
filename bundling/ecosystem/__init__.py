"""The bundle in the device's own software: DeepStream (Gst-nvinfer), Triton Inference Server, jetson-inference.

One module per consumer (``deepstream``, ``triton``, ``jetson_inference``), each writing its files into the bundle
from ``model.describe_model``; ``write_ecosystem`` runs them all and hands the bundle its build-script lines and
README section. We write configs for these servers and build no server of our own.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

from ..formats import shell_word
from .deepstream import NvinferConfig, write_configs
from .jetson_inference import FOLDER as JETSON_FOLDER
from .jetson_inference import INPUT_EXAMPLE, ImagenetLine, write_imagenet_models
from .model import BundledModel, describe_model
from .triton import TritonModel, build_script_lines, model_name, write_repository

GST_EXAMPLE = ("gst-launch-1.0 filesrc location=VIDEO.mp4 ! qtdemux ! h264parse ! nvv4l2decoder ! m.sink_0 "
               "nvstreammux name=m batch-size=1 width=1280 height=720 ! nvinfer config-file-path={} ! nvvideoconvert "
               "! nvdsosd ! nv3dsink")


@dataclass
class Ecosystem:
    models: List[BundledModel]
    deepstream: List[NvinferConfig]
    triton: List[TritonModel]
    imagenet: List[ImagenetLine]
    script_lines: List[str] = field(default_factory=list)  # build_engines.sh's block that fills triton/
    scaling: Dict[str, Dict[str, object]] = field(default_factory=dict)  # nvinfer's geometries measured per model

    @property
    def script_blocks(self) -> List[List[str]]:
        derive = [line.derive for line in self.imagenet if line.derive]
        if derive:
            derive = ["# jetson-inference's imagenet loads a batch-1 copy of the model (it builds without an",
                      "# optimization profile); it is derived here, not shipped, so the bundle holds each model once"
                      ] + derive
        return ([derive] if derive else []) + ([self.script_lines] if self.models else [])

    def readme_text(self) -> str:
        """The bundle README's section on these consumers ('' when no model gets an engine)."""
        if not self.models:
            return ""
        return "\n".join(_deepstream_section(self) + _triton_section(self) + _imagenet_section(self)) + "\n"


def write_ecosystem(staging: str, build_commands: Sequence[str], label_files: Sequence[str] = (),
                    deepstream_scaling=None) -> Ecosystem:
    """deepstream/, triton/ and jetson-inference/ for the models that ``build_commands`` (build_engines.sh's
    deploy.build lines, one per model) build in the bundle folder ``staging``; ``deepstream_scaling``: nvinfer's
    geometries measured per model (benchmark.bundle_reference.deepstream_scaling), for the configs."""
    models = [describe_model(staging, command, label_files) for command in build_commands]
    if not models:  # every model is for ONNX Runtime only: nothing for nvinfer or a plan to serve
        return Ecosystem([], [], [], [])
    return Ecosystem(models, write_configs(staging, models, deepstream_scaling), write_repository(staging, models),
                     write_imagenet_models(staging, models), build_script_lines(models),
                     dict(deepstream_scaling or {}))


def _deepstream_section(ecosystem: Ecosystem) -> List[str]:
    first = ecosystem.deepstream[0].path
    lines = [
        "## 4. DeepStream, Triton and jetson-inference", "",
        "The bundle wrote these from each model's metadata; nothing has to be written by hand.", "",
        "### DeepStream (Gst-nvinfer)", "",
        "`deepstream/<model>.txt` is a primary-classifier config per model, with the engine from step 1 and a",
        "one-line label file beside it. In a pipeline:", "",
        "    " + GST_EXAMPLE.format(shell_word(first)), "",  # gst-launch escapes each argument's spaces itself
        "or in a deepstream-app config: `[primary-gie]` with `enable=1` and `config-file=` the path of `{}`.".format(
            first), "",
        "- nvinfer scales the whole frame to the network size: it does not resize the shorter side and center",
        "  crop as the model was checked. Crop a region upstream (nvdspreprocess ROIs) or run the config as a",
        "  secondary classifier on a detector's objects, or export with `--geometry stretch` so the model itself",
        "  expects the whole frame stretched (use it when the camera frames are what the model must classify).",
    ] + _scaling_lines(ecosystem) + [
        "- nvinfer applies one scale to all channels, `net-scale-factor * (x - offsets[c])`; against the model's",
        "  exact per-channel `(x/255 - mean)/std` over pixels 0-255:",
    ]
    lines += ["  - {}: {}".format(config.model, config.describe()) for config in ecosystem.deepstream]
    if any(not config.error.exact for config in ecosystem.deepstream):
        lines.append("  For exact inputs, export with `eca-deploy export --normalize-in-graph` and bundle that model.")
    return lines + [
        "- The models output logits (no softmax), so `classifier-threshold` is a threshold on the top logit.", ""]


def _scaling_lines(ecosystem: Ecosystem) -> List[str]:
    """The geometry each config applies and what it measured (emulated on the reference images)."""
    if not ecosystem.scaling:
        return ["  (not measured: the bundle carries no reference images)"]
    lines = ["  Emulated on the reference images (top-1 agreement with the model's own preprocessing):"]
    for config in ecosystem.deepstream:
        row = ecosystem.scaling.get(config.model)
        if row:
            lines.append("  - {}: {}; the config applies {}".format(config.model, ", ".join(
                "{} {:.2f}%".format(g, float(row[g])) for g in ("stretch", "letterbox") if g in row),
                row["applied"]))
    return lines


def _triton_section(ecosystem: Ecosystem) -> List[str]:
    model = ecosystem.models[0]
    onnx_name, trt_name = model_name(model, "onnx"), model_name(model, "trt")
    return [
        "### Triton Inference Server", "",
        "`triton/` is a model repository with two models per ONNX model: `<model>_onnx` (ONNX Runtime) and",
        "`<model>_trt` (TensorRT), whose `1/model.plan` build_engines.sh puts in place. After step 1:", "",
        "    tritonserver --model-repository=triton",
        "    perf_analyzer -m {} --concurrency-range 1:4".format(trt_name), "",
        "Before the engines are built, serve the ONNX models alone:", "",
        "    tritonserver --model-repository=triton --model-control-mode=explicit --load-model={}".format(onnx_name),
        "",
        "Each config has the engine profile's largest batch as `max_batch_size`, dynamic batching, one GPU instance",
        "and the labels as `label_filename` (Triton's classification extension). Triton is how a user who outgrows",
        "one device serves the same repository on many GPUs: copy this bundle to the server and rebuild each plan",
        "there, since a plan only runs on the GPU and TensorRT version that built it:", "",
        "    python3 -m deploy.build {} -o {}{}".format(
            shell_word(model.file), shell_word("triton/{}/1/model.plan".format(trt_name)),
            " --max-batch {}".format(model.max_batch) if model.dynamic_batch else ""), "",
        "eca-deploy builds no server of its own.", "",
    ]


def _imagenet_section(ecosystem: Ecosystem) -> List[str]:
    lines = ["### jetson-inference", ""]
    commands = [line for line in ecosystem.imagenet if line.command]
    if commands:
        lines += ["    " + line.command for line in commands] + [
            "",
            "(`{}` is the camera and the screen; an image file, a folder or a video works as well.) imagenet".format(
                INPUT_EXAMPLE),
            "resizes the whole image to the network size (no center crop), normalizes with ImageNet's mean and std and",
            "builds its own FP16 engine beside the model on first use."]
        if any(" --model={}/".format(JETSON_FOLDER) in line.command for line in commands):
            lines += ["A model under `{}/` is a batch-1 copy: imagenet builds without an optimization".format(
                JETSON_FOLDER),
                      "profile, so it cannot take a dynamic batch."]
        if any(line.derive for line in commands):
            lines += ["`sh build_engines.sh` writes that copy (`python3 -m deploy.fixed_batch MODEL OUT`, no onnx",
                      "package needed); the bundle does not carry it, so it stores each model once."]
        lines.append("")
    lines += ["- {}.".format(line.reason) for line in ecosystem.imagenet if not line.command]
    return lines + ([""] if lines[-1] else [])
