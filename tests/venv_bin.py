"""Locate command-line tools that the project's dev extra installs into the virtualenv."""

import shutil
import sys
from pathlib import Path


def venv_binary(name: str, install_hint: str) -> str:
    """Path of ``name``: next to this interpreter (the venv's bin/) first, else on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name!r} not found: {install_hint}")
    return found
