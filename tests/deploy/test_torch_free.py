"""deploy/ is copied to Jetsons: it must run without torch (or click, tqdm, the rest of the project) and parse on 3.8."""
import ast
import json
import os
import sys

import pytest

from tests.blocking import ROOT, attempts_from_project, run_blocked

DEPLOY = os.path.join(ROOT, "deploy")
# Everything deploy/ may import besides the standard library and itself (the optional ones lazily).
ALLOWED_THIRD_PARTY = {"numpy", "PIL", "onnxruntime", "onnx", "tensorrt", "polygraphy", "cv2", "jtop",
                       "tqdm"}  # tqdm: deploy.progress only, lazily, with a silent fallback
# Blocked in the subprocesses: what the desktop pipeline has and a Jetson does not.
NOT_ON_JETSON = ["torch", "torchvision", "click", "tqdm", "onnxsim", "bundling", "models", "exporter", "precision", "calibration",
                 "data", "benchmark", "analysis", "pipeline", "demo", "tools", "commands", "cli"]


def deploy_sources():
    for directory, _, files in os.walk(DEPLOY):
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.join(directory, name)


def test_infer_runs_end_to_end_without_torch(tiny_imagenet_onnx, tmp_path):
    proc = run_blocked(["-m", "deploy.infer", tiny_imagenet_onnx, "deploy/samples", "--json", "--batch", "2"],
                       str(tmp_path), NOT_ON_JETSON)
    assert proc.returncode == 0, proc.stderr
    assert attempts_from_project(proc.stderr) == []
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(lines) == 10 and lines[-1]["summary"]["latency"]["runs"] == 5
    assert {len(r["topk"]) for r in lines[:-1]} == {5}


def test_every_deploy_module_imports_without_torch(tmp_path):
    script = ("import importlib, pkgutil, sys, deploy\n"
              "names = [m.name for m in pkgutil.walk_packages(deploy.__path__, 'deploy.')]\n"
              "[importlib.import_module(n) for n in names]\n"
              "print(len(names), sorted(m for m in ('torch', 'tensorrt', 'cuda', 'pycuda', 'cv2') if m in sys.modules))")
    proc = run_blocked(["-c", script], str(tmp_path), NOT_ON_JETSON + ["tensorrt", "cuda", "pycuda", "cv2"])
    assert proc.returncode == 0, proc.stderr
    assert attempts_from_project(proc.stderr) == []
    count, loaded = proc.stdout.split(" ", 1)
    assert int(count) >= 15 and loaded.strip() == "[]"


def _runtime_annotation_problems(tree):
    """PEP 604 unions and builtin generics in annotations, which Python 3.8 evaluates and rejects."""
    if any(isinstance(node, ast.ImportFrom) and node.module == "__future__" and
           any(alias.name == "annotations" for alias in node.names) for node in tree.body):
        return []
    annotations = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.args + node.args.kwonlyargs + node.args.posonlyargs
            args += [a for a in (node.args.vararg, node.args.kwarg) if a]
            annotations += [a.annotation for a in args if a.annotation] + ([node.returns] if node.returns else [])
        elif isinstance(node, ast.AnnAssign):
            annotations.append(node.annotation)
    problems = []
    for annotation in annotations:
        for node in ast.walk(annotation):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
                problems.append("X | Y at line {}".format(node.lineno))
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in (
                    "list", "dict", "tuple", "set", "frozenset", "type"):
                problems.append("{}[...] at line {}".format(node.value.id, node.lineno))
    return problems


@pytest.mark.parametrize("path", list(deploy_sources()), ids=lambda p: os.path.relpath(p, ROOT))
def test_python38_syntax(path):
    source = open(path, encoding="utf-8").read()
    tree = ast.parse(source, filename=path, feature_version=(3, 8))
    assert _runtime_annotation_problems(tree) == []


def test_deploy_imports_only_stdlib_numpy_pillow_and_itself():
    stdlib = set(sys.stdlib_module_names)
    problems = []
    for path in deploy_sources():
        tree = ast.parse(open(path, encoding="utf-8").read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                tops = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                tops = [node.module.split(".")[0]]
            else:
                continue
            problems += ["{}:{} imports {}".format(os.path.relpath(path, ROOT), node.lineno, top) for top in tops
                         if top not in stdlib and top not in ALLOWED_THIRD_PARTY]
    assert problems == []


def test_a_device_without_pillow_is_told_what_to_install(tmp_path):
    """JetPack does not always carry Pillow: the entry points say so in one line instead of an import traceback."""
    proc = run_blocked(["-m", "deploy.check"], str(tmp_path), ["PIL"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if not line.startswith("blocked import: ")]
    assert lines == ["error: deploy/ needs Pillow (sudo apt install python3-pil, or pip install pillow)"]
