"""`make gpu-check`: everything a lent GPU can verify, one summary line per check, in under 5 minutes.

Checks, each coping with what is missing on the machine (no onnxsim, no TensorRT, a CPU-only onnxruntime):

1. cuda: the CUDA path deploy/ ships (Polygraphy's libcudart wrapper plus deploy.trt.cuda): a 64 MiB round trip,
   a stream, events, a CUDA graph captured and replayed, and the out-of-memory message;
2. benchmark-engine with the PyTorch reference on CUDA: FP32, FP16 channels-last (``--reference-precision fp16``)
   and with CUDA graphs;
3. tensorrt: FP16 and INT8 (Q/DQ) engines of the digits ECA model trained here (``python -m data.digits``; needs
   scikit-learn), built by the bundle's own build_engines.sh and checked with ``deploy.check`` against PyTorch.

Without a GPU it says so in one line and exits 0. It exits 1 when a check that could run failed.
Run it from the repository root: ``python tools/gpu_check.py`` (the Makefile uses .venv's python when present).
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCH, SIZE = "eca_resnet18", 64  # small: exports in seconds, still a real ECA network
STEP_TIMEOUT = 150  # seconds per subprocess; the whole script stays under 5 minutes on one GPU
RESULTS = []


def report(name: str, status: str, detail: str) -> None:
    RESULTS.append(status)
    print("{:<28} {:<5} {}".format(name, status, detail), flush=True)


def has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def gpu_present() -> bool:
    return shutil.which("nvidia-smi") is not None or os.path.exists("/dev/nvidia0")


def run(args, name: str):
    """(ok, stdout, last stderr line) of a project command run with this interpreter from the repository root."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        proc = subprocess.run([sys.executable] + args, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=STEP_TIMEOUT)
    except subprocess.TimeoutExpired:
        return False, "", "{} timed out after {} s".format(name, STEP_TIMEOUT)
    errors = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    return proc.returncode == 0, proc.stdout, errors[-1] if errors else "exit {}".format(proc.returncode)


# -- 1. the CUDA path -------------------------------------------------------------------------------------------

def graph_round_trip(data):
    """(``data`` came back unchanged, graph replay ms): host -> device, a device copy captured as a CUDA graph
    and replayed between two events, device -> host. The test of deploy.trt.cuda runs the same trip."""
    import numpy as np
    from polygraphy import cuda as pcuda

    sys.path.insert(0, ROOT)
    from deploy.trt.cuda import Event, Graph

    stream = pcuda.Stream()
    source, target = pcuda.DeviceArray(data.shape, data.dtype), pcuda.DeviceArray(data.shape, data.dtype)
    graph = start = end = None
    try:
        source.copy_from(data, stream)
        copy = lambda: pcuda.wrapper().memcpy(target.ptr, source.ptr, data.nbytes,  # noqa: E731
                                              pcuda.MemcpyKind.DeviceToDevice, stream.ptr)
        graph, start, end = Graph(stream.ptr, copy), Event(), Event()
        start.record(stream.ptr)
        graph.launch(stream.ptr)
        end.record(stream.ptr)
        elapsed = Event.elapsed_ms(start, end)
        back = np.empty_like(data)
        target.copy_to(back, stream)
        stream.synchronize()
        return bool(np.array_equal(back, data)), elapsed
    finally:
        for item in (graph, start, end, source, target, stream):
            if item is not None:
                item.free()


def check_cuda() -> None:
    if not has("polygraphy"):
        report("cuda (deploy.trt.cuda)", "SKIP", "polygraphy is not installed (pip install polygraphy==0.53.6)")
        return
    import numpy as np
    from polygraphy import cuda as pcuda
    from polygraphy.exception import PolygraphyException

    sys.path.insert(0, ROOT)
    from deploy.trt.cuda import device_info

    try:
        info = device_info()
        same, elapsed = graph_round_trip(np.random.default_rng(0).random(16 << 20, dtype=np.float32))  # 64 MiB
        try:
            pcuda.DeviceArray.raw((1 << 50,))  # 1 PiB: must fail with a message, not crash
            oom = "no error for 1 PiB"
        except (PolygraphyException, MemoryError, RuntimeError) as exc:
            oom = "out-of-memory reported ({})".format(str(exc).strip().splitlines()[0][:40])
        status = "PASS" if same and "reported" in oom else "FAIL"
        report("cuda (deploy.trt.cuda)", status, "{} sm {}: 64 MiB round trip {}, graph replay {:.3f} ms, "
               "{}".format(info.name, info.compute_capability, "ok" if same else "MISMATCH", elapsed, oom))
    except Exception as exc:  # noqa: BLE001 (one line per check, whatever broke)
        report("cuda (deploy.trt.cuda)", "FAIL", "{}: {}".format(type(exc).__name__, exc))


# -- 2. the PyTorch reference on CUDA ---------------------------------------------------------------------------

def export_model(folder: str):
    """(FP32 ONNX, FP16 ONNX, digits folder or None): the digits ECA model trained here when scikit-learn is
    there (real weights, so engines can be held to PyTorch on real images), else a random-weight one; or
    (None, reason, None)."""
    args = ["cli.py", "export", ARCH, "--precision", "fp16", "-o", os.path.join(folder, "model.onnx")]
    digits = os.path.join(folder, "digits") if has("sklearn") else None
    if digits:
        ok, _, error = run(["-m", "data.digits", digits], "data.digits")
        if not ok:
            return None, "training the digits model failed: " + error, None
        args += ["--weights", os.path.join(digits, "eca_resnet18_digits.pth"), "--crop", "32", "--resize", "37"]
    else:
        args += ["--input-size", str(SIZE)]
    if not has("onnxsim"):
        args.append("--no-simplify")
    ok, _, error = run(args, "export")
    if not ok:
        return None, "export failed: " + error, None
    return os.path.join(folder, "model.onnx"), os.path.join(folder, "model.fp16.onnx"), digits


def _reference_p50(stdout: str) -> str:
    try:
        timings = json.loads(stdout)["reference"]["timings"]
        first = timings[0]
        return "batch {} p50 {:.2f} ms".format(first["batch_size"], float(first["latency"]["p50_ms"]))
    except (ValueError, KeyError, IndexError, TypeError):
        return "ran (latency not read from its JSON)"


def check_torch_reference(model) -> None:
    if not has("torch"):
        report("benchmark-engine (cuda)", "SKIP", "torch is not installed")
        return
    if model is None:
        report("benchmark-engine (cuda)", "SKIP", "no exported model to benchmark")
        return
    base = ["cli.py", "benchmark-engine", model, "--device", "cuda", "--num-images", "16", "--batch-sizes", "1,8",
            "--iterations", "10", "--json"]
    for name, extra in (("fp32", []), ("fp16 channels-last", ["--reference-precision", "fp16"]),
                        ("cuda graphs", ["--cuda-graph"])):
        label = "benchmark-engine {}".format(name)
        ok, out, error = run(base + extra, label)
        if ok:
            report(label, "PASS", "PyTorch {} on CUDA: {}".format(ARCH, _reference_p50(out)))
        else:
            report(label, "FAIL", error)


# -- 3. TensorRT engines ----------------------------------------------------------------------------------------

def check_tensorrt(folder: str, models) -> None:
    if not has("tensorrt"):
        report("tensorrt fp16/int8 engines", "SKIP", "tensorrt is not importable here")
        return
    if models[0] is None:
        report("tensorrt fp16/int8 engines", "SKIP", "no exported model")
        return
    fp32, fp16, digits = models
    if digits is None:
        report("tensorrt fp16/int8 engines", "SKIP", "scikit-learn is not installed: the engines are checked on "
               "the digits model trained here, whose weights and held-out images make the check mean something")
        return
    ok, _, error = run(["cli.py", "calibrate", fp32, "--data", os.path.join(digits, "train"), "--num-images", "256",
                        "--no-fp16", "--json"], "calibrate")
    int8 = fp32[:-5] + ".int8.tensorrt.onnx"
    engines = []
    for precision, source in (("fp16", fp16), ("int8", int8 if ok else None)):
        if source is None:
            report("tensorrt {} engine".format(precision), "FAIL", "calibrate failed: " + error)
            continue
        built, out, build_error = run(["-m", "deploy.build", source, "--json"], "deploy.build")
        if not built:
            report("tensorrt {} engine".format(precision), "FAIL", build_error)
            continue
        result = json.loads(out)
        good = result["precision"] == precision and result["layer_precisions"].get(precision, 0) > 0
        engines.append(result["engine_path"])
        report("tensorrt {} engine".format(precision), "PASS" if good else "FAIL",
               "TensorRT {}, flags [{}], layers {}".format(result["trt_version"], " ".join(result["trt_flags"]),
                                                            result["layer_precisions"]))
    bundle = os.path.join(folder, "bundle")
    ok, _, error = run(["cli.py", "bundle", fp32, fp16] + ([int8] if os.path.exists(int8) else []) + [
        "--weights", os.path.join(digits, "eca_resnet18_digits.pth"), "--data", os.path.join(digits, "val"),
        "-o", bundle], "bundle")
    if ok:  # the bundle's own script, as a user runs it on the device
        proc = subprocess.run(["sh", "build_engines.sh"], cwd=bundle, capture_output=True, text=True,
                              timeout=STEP_TIMEOUT)
        ok, error = proc.returncode == 0, (proc.stderr.strip().splitlines() or ["build_engines.sh failed"])[-1]
    if ok:
        ok, _, error = run(["-m", "deploy.check", bundle, "--json"], "deploy.check")
    report("deploy.check (bundle)", "PASS" if ok else "FAIL", "every artifact passes" if ok else error)


def main() -> int:
    if not gpu_present():
        print("gpu-check: no NVIDIA GPU on this machine (no nvidia-smi, no /dev/nvidia0); nothing to check")
        return 0
    started = time.time()
    print("gpu-check on {} ({}), {}".format(os.uname().nodename, sys.version.split()[0],
                                            time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())))
    check_cuda()
    folder = tempfile.mkdtemp(prefix="gpu-check-")
    try:
        models = export_model(folder) if has("torch") else (None, "torch is not installed", None)
        if models[0] is None:
            report("export {}".format(ARCH), "FAIL" if has("torch") else "SKIP", models[1])
        check_torch_reference(models[0])
        check_tensorrt(folder, models)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print("gpu-check: {} pass, {} fail, {} skipped in {:.0f} s".format(
        RESULTS.count("PASS"), RESULTS.count("FAIL"), RESULTS.count("SKIP"), time.time() - started))
    return 1 if "FAIL" in RESULTS else 0


if __name__ == "__main__":
    sys.exit(main())
