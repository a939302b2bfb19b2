"""Every module imports, and every command's --help works, where TensorRT and the CUDA bindings cannot be imported.

The check runs in a subprocess whose import system refuses tensorrt, pycuda, cuda (cuda-python) and polygraphy even when
they are installed, so it means the same on a machine with TensorRT. It also proves that nothing even tries to
import them at module load (each attempt is logged).
"""
import ast
import json
import os

from tests.blocking import attempts_from_project, run_blocked

PACKAGES = ("bundling", "models", "exporter", "precision", "calibration", "data", "deploy", "benchmark", "analysis", "pipeline",
            "demo", "tools", "commands")
BLOCKED = ["tensorrt", "pycuda", "cuda", "polygraphy"]

SCRIPT = r'''
import contextlib, importlib, io, json, os, pkgutil, sys
from click.testing import CliRunner

packages = {packages!r}
modules = ["cli"]
for package in packages:
    if os.path.isdir(package):
        imported = importlib.import_module(package)
        modules.append(package)
        modules += [m.name for m in pkgutil.walk_packages(imported.__path__, package + ".")]
failures = {{}}
for name in modules:
    try:
        importlib.import_module(name)
    except Exception as exc:
        failures[name] = "{{}}: {{}}".format(type(exc).__name__, exc)

import cli
helps = {{}}
runner = CliRunner()
for args in [["--help"]] + [[name, "--help"] for name in sorted(cli.COMMANDS)]:
    result = runner.invoke(cli.cli, args, prog_name="cli.py")
    helps[" ".join(args)] = [result.exit_code, "Usage:" in result.output, (result.output or repr(result.exception))[-300:]]

from deploy import bench, build, check, infer
for name, main in (("deploy.infer", infer.main), ("deploy.build", build.main), ("deploy.check", check.main),
                   ("deploy.bench", bench.main)):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main(["--help"])
            code = 0
        except SystemExit as exc:
            code = exc.code
    helps[name] = [code, "usage:" in out.getvalue(), out.getvalue()[-300:]]

print(json.dumps({{"modules": modules, "failures": failures, "helps": helps,
                  "loaded": sorted(m for m in {blocked!r} if m in sys.modules)}}))
'''


def test_all_modules_import_and_all_help_works_without_tensorrt(tmp_path):
    proc = run_blocked(["-c", SCRIPT.format(packages=PACKAGES, blocked=BLOCKED)], str(tmp_path), BLOCKED,
                       timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["failures"] == {}
    # torch itself probes `cuda.bindings` (and catches the ImportError); none of our modules may try.
    assert attempts_from_project(proc.stderr) == []
    assert report["loaded"] == []
    for module in ("deploy.infer", "deploy.build", "deploy.trt.compat", "deploy.runners.tensorrt", "commands.build",
                   "commands.bundle"):
        assert module in report["modules"]
    import cli
    assert {"cli.py --help".split(" ", 1)[1]} | {"{} --help".format(c) for c in cli.COMMANDS} | {
        "deploy.infer", "deploy.build", "deploy.check", "deploy.bench"} == set(report["helps"])
    for args, (code, has_usage, tail) in report["helps"].items():
        assert code == 0 and has_usage, (args, tail)


# The rooms from the floor up. A module may import its own room and the rooms below it, never one above: with
# every arrow pointing down, no circle can form. docs/ARCHITECTURE.md lists the rooms in this order.
LAYERS = ("deploy", "bundling", "models", "data", "exporter", "precision", "calibration", "benchmark", "analysis", "pipeline",
          "demo", "commands", "tools")


ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def room_modules(room):
    """{dotted module name: path} of every Python file in one room."""
    modules = {}
    for folder, _, files in os.walk(os.path.join(ROOT_DIR, room)):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, ROOT_DIR)[:-3].replace(os.sep, ".")
                modules[dotted[:-len(".__init__")] if dotted.endswith(".__init__") else dotted] = path
    return modules


def imported_names(path, module):
    """Every module a file imports, absolute and dotted, at module load or inside a function alike; a relative
    import is resolved against ``module``'s package, and ``from P import x`` names P.x as well as P."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            names += [base] + ["{}.{}".format(base, alias.name) for alias in node.names]
    return names


def imported_rooms(path):
    """The project rooms a file imports, at module load or inside a function alike."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:  # relative ones stay in the room
            names.append(node.module)
    return {name.split(".")[0] for name in names} & set(LAYERS)


def file_arrows(room):
    """{module: {modules of the same room it imports}}: the arrows between files inside one room."""
    modules = room_modules(room)
    arrows = {}
    for module, path in modules.items():
        targets = set()
        for name in imported_names(path, module):
            while name and name not in modules:  # `from deploy.x import f` is an arrow to deploy.x
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        arrows[module] = targets
    return arrows


def circles(arrows):
    """The strongly connected groups of more than one file (Tarjan's algorithm): each holds a circle."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in arrows[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(arrows):
        if node not in index:
            visit(node)
    return found


def import_arrows():
    """{(room, imported room): [files]} over every Python file of every room."""
    arrows = {}
    for room in LAYERS:
        for folder, _, files in os.walk(os.path.join(ROOT_DIR, room)):
            for name in sorted(f for f in files if f.endswith(".py")):
                path = os.path.join(folder, name)
                for target in imported_rooms(path) - {room}:
                    arrows.setdefault((room, target), []).append(os.path.relpath(path, ROOT_DIR))
    return arrows


def test_imports_point_down_the_rooms_and_never_up():
    arrows = import_arrows()
    up = {"{} -> {}".format(a, b): files for (a, b), files in arrows.items() if LAYERS.index(b) > LAYERS.index(a)}
    assert up == {}
    assert ("benchmark", "data") in arrows and ("demo", "data") in arrows  # the digits live in data/, not demo/
    assert not any(target == "demo" for _, target in arrows)  # nothing builds on the demo


def test_the_architecture_map_lists_the_rooms_in_import_order():
    import os
    import re

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = open(os.path.join(root, "docs", "ARCHITECTURE.md"), encoding="utf-8").read()
    table = re.findall(r"^\| `(\w+)/` \|", text, flags=re.MULTILINE)
    assert [room for room in table if room in LAYERS] == list(LAYERS)


def test_no_circles_between_the_files_of_any_room():
    found = {room: circles(file_arrows(room)) for room in LAYERS}
    assert {room: groups for room, groups in found.items() if groups} == {}
    assert "deploy.manifest" in file_arrows("deploy")["deploy.check"]  # the checker sees lazy, relative imports


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_device_runtime_holds_no_host_side_packaging():
    """What a bundle copies onto the device is deploy/ as it is: nothing in it writes bundles, proofs or the
    DeepStream/Triton/jetson-inference files, and nothing in it imports the room that does."""
    modules = room_modules("deploy")
    assert not any(name.startswith(("deploy.bundle", "deploy.ecosystem")) for name in modules)
    assert ("deploy", "bundling") not in import_arrows()
    for path in modules.values():
        text = open(path, encoding="utf-8").read()
        assert "def save_reference" not in text and "savez" not in text, path
