"""The bundle's layout as the device reads it: the manifest's name and schema, and the class-names file.

bundling.bundle writes these files on the host; deploy.check, deploy.infer and deploy.bench read them on the device.
"""
import os
from typing import Dict, Optional

from .schema import MapOf, load_checked_json

# Every bundle carries this file; `--force` replaces only a folder (or tarball) that has it, so a mistyped
# -o (".", "~", the folder the models came from) can never be emptied.
MANIFEST = "eca-deploy-bundle.json"
# files: path inside the bundle -> sha256 of every file deploy.check binds (reference.npz records them too)
MANIFEST_SCHEMA = {"producer": str, "models": [str], "data_files?": [str], "files?": MapOf(str)}
CLASS_NAMES_FILE = "labels.txt"


def read_manifest(bundle_dir: str) -> Optional[Dict[str, object]]:
    """The bundle's manifest, or None for a folder without one; UserError naming the field of a damaged one."""
    path = os.path.join(bundle_dir, MANIFEST)
    if not os.path.lexists(path):
        return None
    return load_checked_json(path, MANIFEST_SCHEMA, "bundle manifest")
