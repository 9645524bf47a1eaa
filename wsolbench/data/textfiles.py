"""Line-oriented annotation files, parsed with the file and line named in every error."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from PIL import Image

from wsolbench.errors import InputFileError


def read_rows(path: Path, n_fields: int, sep: str | None, *, min_fields: int | None = None
              ) -> Iterator[tuple[int, list[str]]]:
    """Yield `(line_number, fields)` for every non-blank line of `path`.

    Args:
        path: the file; a missing file is an `InputFileError`.
        n_fields: the number of fields a line must have (or the maximum, with `min_fields`).
        sep: the separator (`None` = any whitespace, as the CUB files use).
        min_fields: accept lines with `min_fields..n_fields` fields.
    """
    if not path.is_file():
        raise InputFileError(path, "file not found")
    lo = n_fields if min_fields is None else min_fields
    with path.open("rb") as handle:
        for number, raw_bytes in enumerate(handle, start=1):
            try:
                raw = raw_bytes.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputFileError(path, f"not UTF-8 text (byte {raw_bytes[exc.start]:#04x} "
                                           f"at column {exc.start + 1})", number) from None
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split(sep) if sep else line.split()
            if not lo <= len(fields) <= n_fields:
                want = n_fields if lo == n_fields else f"{lo} to {n_fields}"
                raise InputFileError(path, f"expected {want} fields, got {len(fields)}: {line!r}",
                                     number)
            yield number, fields


def parse(value: str, kind: Callable, path: Path, line: int, what: str):
    """Convert one field, turning a ValueError into an error naming file, line and field."""
    try:
        return kind(value)
    except ValueError:
        raise InputFileError(path, f"{what} must be {kind.__name__}, got {value!r}", line) from None


def image_size(path: Path, referenced_from: Path, line: int) -> tuple[int, int]:
    """`(W, H)` of an image from its header; a missing or corrupt file names where it was listed."""
    try:
        with Image.open(path) as img:
            img.verify()  # reads the whole structure: catches truncated/corrupt files early
        with Image.open(path) as img:
            return img.size
    except FileNotFoundError:
        raise InputFileError(referenced_from, f"image file not found: {path}", line) from None
    except Exception as exc:  # PIL raises many types for corrupt files
        raise InputFileError(referenced_from, f"unreadable image {path}: {exc}", line) from None
