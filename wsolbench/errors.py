"""User-facing errors.

Every problem a user can fix (a bad file, an unknown name, a wrong option) is raised as a
`WsolbenchError`; the CLI prints its message without a traceback and exits with status 2.
"""

from __future__ import annotations

from pathlib import Path


class WsolbenchError(Exception):
    """An error caused by user input, with a message that says where and what to fix."""


class InputFileError(WsolbenchError):
    """A problem in one input file, pinned to the file and (when known) the line."""

    def __init__(self, path: Path | str, message: str, line: int | None = None) -> None:
        self.path = Path(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {message}")
