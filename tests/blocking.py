"""Run Python in a subprocess where some packages cannot be imported, even when they are installed.

A ``sitecustomize.py`` on PYTHONPATH puts a finder first in ``sys.meta_path`` that raises ImportError for the
blocked top-level names (and their submodules) and logs each attempt to stderr as
``blocked import: NAME from FILE``, so a test can also prove that no module of ours even tried (a caught
ImportError would otherwise go unnoticed). Third-party packages probe optional imports too (torch tries
``cuda.bindings``); ``attempts_from_project`` keeps only the attempts made by files of this repository.
"""
import os
import subprocess
import sys
from typing import Dict, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SITECUSTOMIZE = '''
import os
import sys

_BLOCKED = tuple(name for name in os.environ.get("ECA_TEST_BLOCKED", "").split(",") if name)


def _importer():
    frame = sys._getframe(2)
    while frame is not None and (frame.f_code.co_filename.startswith("<") or
                                 frame.f_code.co_filename == __file__):
        frame = frame.f_back
    return frame.f_code.co_filename if frame is not None else "?"


class _Blocker:
    def find_spec(self, fullname, path=None, target=None):
        top = fullname.split(".")[0]
        if top in _BLOCKED:
            sys.stderr.write("blocked import: {} from {}\\n".format(fullname, _importer()))
            raise ImportError("{} is blocked in this test".format(fullname), name=fullname)
        return None


sys.meta_path.insert(0, _Blocker())
'''


def blocked_env(tmp_dir: str, blocked: Sequence[str], extra_path: Optional[str] = None) -> Dict[str, str]:
    site_dir = os.path.join(str(tmp_dir), "blocker_site")
    os.makedirs(site_dir, exist_ok=True)
    with open(os.path.join(site_dir, "sitecustomize.py"), "w") as handle:
        handle.write(_SITECUSTOMIZE)
    env = dict(os.environ)
    env["ECA_TEST_BLOCKED"] = ",".join(blocked)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (site_dir, extra_path or ROOT) if p)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_blocked(args: Sequence[str], tmp_dir: str, blocked: Sequence[str], cwd: Optional[str] = None,
                timeout: float = 120, extra_path: Optional[str] = None) -> subprocess.CompletedProcess:
    """``python ARGS`` with ``blocked`` unimportable; cwd defaults to the repository root."""
    env = blocked_env(tmp_dir, blocked, extra_path if extra_path is not None else (cwd or ROOT))
    return subprocess.run([sys.executable] + list(args), cwd=cwd or ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def attempts_from_project(stderr: str, root: str = ROOT):
    """The ``blocked import`` lines whose importing file belongs to the repository (not to site-packages)."""
    lines = [line for line in stderr.splitlines() if line.startswith("blocked import: ")]
    return [line for line in lines if " from " + root + os.sep in line and os.sep + "site-packages" + os.sep
            not in line and os.sep + ".venv" + os.sep not in line]
