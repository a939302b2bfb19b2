"""Running `python -m deploy.check` as a device would, shared by the check, proof and binding tests: a copy of a
bundle, only the bundle importable, torch and the host-side rooms blocked."""
import shutil

from tests.blocking import run_blocked

BLOCKED = ["torch", "models", "exporter", "calibration", "benchmark"]


def copy_bundle(root, tmp_path, name="device"):
    target = str(tmp_path / name)
    shutil.copytree(root, target)
    return target


def run_check(bundle_dir, tmp_path, *args, blocked=BLOCKED, as_json=True):
    """python -m deploy.check in the bundle folder, with only the bundle importable and torch blocked."""
    return run_blocked(["-m", "deploy.check"] + (["--json"] if as_json else []) + list(args), str(tmp_path), blocked,
                       cwd=bundle_dir)
