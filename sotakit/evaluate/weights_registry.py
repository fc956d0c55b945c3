"""The local registry of named weights: ``build_model("resnet18", weights="fmnist-v2")`` finds them here.

A folder of weights files named ``NAME.safetensors`` under the sotakit home directory:
``$SOTAKIT_HOME``, else ``$XDG_DATA_HOME/sotakit``, else ``~/.local/share/sotakit`` (the XDG base
directory spec's data home). Files are only ever copied in by `sotakit weights add`: never a download.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def sotakit_home() -> Path:
    """Where sotakit keeps user data (the weights registry)."""
    if os.environ.get("SOTAKIT_HOME"):
        return Path(os.environ["SOTAKIT_HOME"])
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "sotakit"


def registry_dir() -> Path:
    return sotakit_home() / "weights"


def registered_path(name: str) -> Path | None:
    """The file registered under ``name``, or None."""
    if not NAME_RE.match(name):
        return None
    path = registry_dir() / f"{name}.safetensors"
    return path if path.is_file() else None


def list_registered() -> list[tuple[str, Path]]:
    """(name, file) of every registered weights file, sorted by name."""
    folder = registry_dir()
    if not folder.is_dir():
        return []
    return sorted((p.name[:-len(".safetensors")], p) for p in folder.glob("*.safetensors"))


def add_weights(name: str, file: str | Path, *, replace: bool = False) -> Path:
    """Copy a verified weights file into the registry under ``name``; refuses a damaged file, a bad name
    and (unless ``replace``) a name already taken."""
    from .weights import WEIGHTS_FILE, Weights
    file = Path(file) / WEIGHTS_FILE if Path(file).is_dir() else Path(file)
    if not NAME_RE.match(name):
        raise ValueError(f"weights name {name!r}: use letters, digits, '.', '_' and '-' (e.g. fmnist-v2)")
    w = Weights.from_file(file)
    w.get_state_dict()  # verifies the tensors against their hash before anything is copied
    dest = registry_dir() / f"{name}.safetensors"
    if dest.exists() and not replace:
        raise ValueError(f"weights {name!r} exist already ({dest}); remove them first with "
                         f"`sotakit weights remove {name}`")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copyfile(file, tmp)
    tmp.replace(dest)
    return dest


def remove_weights(name: str) -> Path:
    """Delete the weights registered under ``name``; ValueError naming the registered ones when unknown."""
    path = registered_path(name)
    if path is None:
        names = ", ".join(n for n, _ in list_registered()) or "none"
        raise ValueError(f"no weights named {name!r} in {registry_dir()} (registered: {names})")
    path.unlink()
    return path
