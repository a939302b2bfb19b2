"""The bundle's layout as the device reads it: the manifest's name and schema, and the class-names file.

bundling.bundle writes these files on the host; deploy.check, deploy.infer and deploy.bench read them on the device.
"""
import os
from typing import Dict, List, Optional

from .errors import UserError
from .schema import MapOf, load_checked_json

# Every bundle carries this file; `--force` replaces only a folder (or tarball) that has it, so a mistyped
# -o (".", "~", the folder the models came from) can never be emptied.
MANIFEST = "eca-deploy-bundle.json"
# files: path inside the bundle -> sha256 of every file deploy.check binds (reference.npz records them too)
MANIFEST_SCHEMA = {"producer": str, "models": [str], "data_files?": [str], "files?": MapOf(str)}
CLASS_NAMES_FILE = "labels.txt"
REFERENCE_FILE = "reference.npz"   # the proof deploy.check reads (deploy.reference defines its format)


def read_manifest(bundle_dir: str) -> Optional[Dict[str, object]]:
    """The bundle's manifest, or None for a folder without one; UserError naming the field of a damaged one."""
    path = os.path.join(bundle_dir, MANIFEST)
    if not os.path.lexists(path):
        return None
    return load_checked_json(path, MANIFEST_SCHEMA, "bundle manifest")


def bundle_members(bundle_dir: str) -> List[str]:
    """The files of a bundle the device reads (the manifest, the reference, the labels, every listed model with
    its sidecar and external data), as paths: inputs that no command run in the bundle may overwrite. [] for a
    folder without a manifest, or with a damaged one (the command that reads it says what is wrong)."""
    try:
        manifest = read_manifest(bundle_dir)
    except UserError:
        return []
    if manifest is None:
        return []
    names = [MANIFEST, REFERENCE_FILE, CLASS_NAMES_FILE] + list(manifest.get("data_files", []))
    for model in manifest["models"]:
        names += [model, model + ".json"]
    return [os.path.normpath(os.path.join(bundle_dir, name)) for name in names
            if os.path.lexists(os.path.join(bundle_dir, name))]
