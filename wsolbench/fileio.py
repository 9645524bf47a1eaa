"""Atomic file writing: nothing a user already has is lost or left half-written.

Every output goes to a temporary sibling first and is renamed into place, so a run killed
mid-write leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from wsolbench.errors import WsolbenchError

# Temporary files older than this process cannot be its own: a killed writer left them.
_PROCESS_START = time.time()


def _clear_stale_temps(path: Path) -> None:
    """Remove `.<name>.*.tmp` siblings of `path` left by a writer that was killed (kill -9
    skips the cleanup below): created before this process started, so not ours."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            if stale.stat().st_mtime < _PROCESS_START - 1.0:
                stale.unlink()
        except FileNotFoundError:  # another process cleared it first
            pass


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clear_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: Path | str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_save(path: Path | str, save: Callable[[Path], None]) -> None:
    """Call `save(tmp_path)` (e.g. `lambda p: torch.save(obj, p)`) and rename into place."""
    with atomic_path(path) as tmp:
        save(tmp)


@contextlib.contextmanager
def atomic_directory(path: Path | str) -> Iterator[Path]:
    """Build a whole directory in a temporary sibling and rename it into place at the end.

    A generator killed midway leaves only a `.tmp-*` folder, which the next call removes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        if path.exists():  # another process finished first: keep theirs, identical by seed
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def file_lock(path: Path | str) -> Iterator[None]:
    """Hold an exclusive inter-process lock on `path` (created if missing) for the block.

    POSIX `flock`: released by the kernel when the holder dies, so a killed job never leaves
    a stale lock. (Not reliable on NFS; keep `results/` on a local or lock-aware filesystem.)
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def sha256_file(path: Path | str) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def require_checkpoint(path: Path | str) -> Path:
    """`path` if it is a file, else the one-line error of every command given a missing
    checkpoint. Free of torch, so commands check the path before importing it."""
    path = Path(path)
    if not path.is_file():
        raise WsolbenchError(f"checkpoint not found: {path}")
    return path
