"""Stopping on Ctrl-C or SIGTERM without losing the request (docs/design.md §5).

`install()` (the CLI's entry point calls it) makes SIGINT and SIGTERM raise
KeyboardInterrupt at once, as Python's own Ctrl-C handler does, so a run marks its MLflow
run KILLED and keeps its last finished epoch. The handler also records the signal: an
exception raised where Python cannot pass it on — inside a finalizer, or in library code
that catches BaseException — is lost, and the process would carry on to the end. Loops
that run for long (training and prediction batches) call `check()`, which raises it again.
Writes to the MLflow store run inside `deferred()`: an interrupt in the middle of a SQLite
commit leaves the store locked for the rest of the process, so the run could not even be
marked KILLED; there the request waits for the next `check()` (a second signal does not).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

_received: list[int] = []
_deferring = 0


def _raise(signum: int, frame) -> None:
    _received.append(signum)
    if not _deferring or len(_received) > 1:
        raise KeyboardInterrupt


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold a first stop request back for the block (it is raised at the next `check()`)."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1


def install() -> None:
    """Handle SIGINT and SIGTERM (scancel, a batch time limit) as one interrupt."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise)


def check() -> None:
    """Raise KeyboardInterrupt if a stop was requested (again, if it was swallowed)."""
    if _received:
        raise KeyboardInterrupt


def requested_by() -> int | None:
    """The first stop signal received, or None."""
    return _received[0] if _received else None
