"""Where an export may write: never over a file, never into a user's non-empty folder
without ``--force``, and through a temp folder so a failure leaves the target as it was."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["export_target", "move_into", "stage_folder"]


def export_target(out_dir: str | Path, force: bool) -> Path:
    """The folder an export may write into: new, empty, or (``force``) non-empty. Refused
    before any work, so an existing file or a user's folder is never overwritten by
    surprise."""
    if out_dir is None or not str(out_dir).strip():
        raise ValueError("--out is empty; name a new folder for the export, e.g. --out winner/")
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; name a new or empty folder instead.")
    if out.is_dir() and not force:
        try:
            present = sorted(p.name for p in out.iterdir())
        except OSError as exc:
            raise ValueError(f"--out {out} cannot be read ({exc.strerror}).") from None
        if present:
            shown = ", ".join(present[:3]) + (", ..." if len(present) > 3 else "")
            raise ValueError(
                f"--out {out} is not empty ({shown}); name a new folder, or pass --force to "
                "replace the export's files there (other files are left alone)."
            )
    return out


def stage_folder(out: Path) -> Path:
    """A temp folder next to ``out`` (same file system, so moving files in is a rename)."""
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".export", dir=parent))
    except OSError as exc:
        raise ValueError(
            f"cannot write the export under {parent} ({exc.strerror or exc}); choose a "
            "writable folder for --out."
        ) from None


def move_into(stage: Path, out: Path) -> None:
    """Put the staged files in place: one rename for a new folder, else file by file."""
    if not out.exists():
        os.replace(stage, out)
        return
    for path in stage.iterdir():
        os.replace(path, out / path.name)
    stage.rmdir()
