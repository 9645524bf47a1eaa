"""Reader and writer for clovaai/wsolevaluation's metadata format (docs/protocols.md §1).

A split folder holds `image_ids.txt`, `class_labels.txt` (`id,label`), `image_sizes.txt`
(`id,W,H`) and `localization.txt` in one of two forms:
- boxes (CUB, ILSVRC): `id,x0,y0,x1,y1`, inclusive pixels, one line per GT box, several
  lines = several boxes in order;
- masks (OpenImages): `id,mask_path,ignore_path`, one line per instance mask; the image's
  first line names its ignore-region PNG (the others leave it empty). Paths are relative to
  the mask root (wsolevaluation's `mask_root`, by default the image root).
Ids are paths relative to the image root and keep their extension; they may contain `/`
but not `,`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsolbench.data.records import Record
from wsolbench.data.textfiles import parse, read_rows
from wsolbench.errors import InputFileError, WsolbenchError
from wsolbench.fileio import atomic_write_text

METADATA_FILES = ("image_ids.txt", "class_labels.txt", "image_sizes.txt", "localization.txt")


def read_metadata(split_dir: Path | str, image_root: Path | str, *,
                  require_localization: bool = True, mask_root: Path | str | None = None
                  ) -> tuple[Record, ...]:
    """Read one wsolevaluation split folder into records, in `image_ids.txt` order.

    Args:
        split_dir: folder with the four metadata files.
        image_root: folder the ids are relative to.
        require_localization: every image must have a box or a mask (val/test splits).
        mask_root: box form: optional folder of foreground masks named like the ids with a
            `.png` suffix; mask form: the folder its mask paths are relative to (default:
            `image_root`).
    """
    split_dir, image_root = Path(split_dir), Path(image_root)
    if not split_dir.is_dir():
        raise WsolbenchError(f"metadata folder not found: {split_dir}")
    ids_file, labels_file, sizes_file, loc_file = (split_dir / f for f in METADATA_FILES)

    order: list[str] = []
    seen: dict[str, int] = {}
    for line, (image_id,) in read_rows(ids_file, 1, ","):
        if image_id in seen:
            raise InputFileError(ids_file, f"duplicate image id {image_id!r} "
                                           f"(first on line {seen[image_id]})", line)
        seen[image_id] = line
        order.append(image_id)

    labels = _keyed(labels_file, seen, 2, lambda f, ln: parse(f[1], int, labels_file, ln, "label"))
    sizes = _keyed(sizes_file, seen, 3, lambda f, ln: (parse(f[1], int, sizes_file, ln, "width"),
                                                      parse(f[2], int, sizes_file, ln, "height")))
    boxes: dict[str, list[tuple[int, int, int, int]]] = {i: [] for i in order}
    masks: dict[str, list[Path]] = {i: [] for i in order}
    ignores: dict[str, Path | None] = {}
    mask_dir = Path(mask_root) if mask_root else image_root
    form = None
    if loc_file.is_file() or require_localization:
        for line, fields in read_rows(loc_file, 5, ",", min_fields=3):
            image_id = fields[0]
            if image_id not in seen:
                raise InputFileError(loc_file, f"image id {image_id!r} is not in {ids_file.name}",
                                     line)
            line_form = {5: "boxes", 3: "masks"}.get(len(fields))
            if line_form is None or (form is not None and line_form != form):
                raise InputFileError(loc_file, "expected id,x0,y0,x1,y1 (boxes) or "
                                     "id,mask_path,ignore_path (masks) on every line, not a mix",
                                     line)
            form = line_form
            if form == "masks":
                _add_mask(fields, mask_dir, masks, ignores, loc_file, line)
                continue
            box = tuple(parse(v, int, loc_file, line, name)
                        for v, name in zip(fields[1:], ("x0", "y0", "x1", "y1")))
            _check_box(box, sizes.get(image_id), loc_file, line)
            boxes[image_id].append(box)  # type: ignore[arg-type]

    records = []
    for image_id in order:
        for table, file in ((labels, labels_file), (sizes, sizes_file)):
            if image_id not in table:
                raise InputFileError(file, f"image id {image_id!r} (from {ids_file.name} line "
                                           f"{seen[image_id]}) has no line here")
        if require_localization and not boxes[image_id] and not masks[image_id]:
            raise InputFileError(loc_file, f"image id {image_id!r} has no "
                                           f"{'mask' if form == 'masks' else 'box'}")
        if form == "masks":
            mask_paths, ignore = tuple(masks[image_id]), ignores.get(image_id)
        else:
            mask = Path(mask_root) / Path(image_id).with_suffix(".png") if mask_root else None
            mask_paths, ignore = ((mask,) if mask is not None and mask.is_file() else ()), None
        records.append(Record(
            image_id=image_id, path=image_root / image_id, label=labels[image_id],
            size=sizes[image_id], boxes=np.asarray(boxes[image_id], dtype=np.int64).reshape(-1, 4),
            mask_paths=mask_paths, ignore_path=ignore))
    return tuple(records)


def _add_mask(fields: list[str], mask_dir: Path, masks: dict[str, list[Path]],
              ignores: dict[str, Path | None], path: Path, line: int) -> None:
    """One `id,mask_path,ignore_path` line: the image's first line sets its ignore region
    (possibly none); later lines must leave it empty, as wsolevaluation asserts."""
    image_id, mask_path, ignore_path = fields
    if not mask_path:
        raise InputFileError(path, f"image id {image_id!r}: empty mask path", line)
    if masks[image_id] and ignore_path:
        raise InputFileError(path, f"image id {image_id!r}: only its first line may name an "
                                   "ignore mask", line)
    if not masks[image_id]:
        ignores[image_id] = mask_dir / ignore_path if ignore_path else None
    masks[image_id].append(mask_dir / mask_path)


def read_fullsup(default_metadata: Path, default_images: Path,
                 metadata: Path | str | None = None, images: Path | str | None = None
                 ) -> tuple[Record, ...]:
    """The held-out train-fullsup split (CUBV2 / ImageNetV2) in wsolevaluation's format.

    Uses the given folders, else the dataset's defaults; a missing *default* folder means
    "no such split" (empty), a missing *given* folder is an error.
    """
    folder = Path(metadata) if metadata else default_metadata
    if folder.is_dir():
        return read_metadata(folder, Path(images) if images else default_images)
    if metadata:
        raise WsolbenchError(f"train-fullsup metadata folder not found: {folder}")
    return ()


def _keyed(path: Path, known: dict[str, int], n_fields: int, convert) -> dict:
    out: dict = {}
    for line, fields in read_rows(path, n_fields, ","):
        image_id = fields[0]
        if image_id not in known:
            raise InputFileError(path, f"image id {image_id!r} is not in image_ids.txt", line)
        if image_id in out:
            raise InputFileError(path, f"duplicate line for image id {image_id!r}", line)
        out[image_id] = convert(fields, line)
    return out


def _check_box(box: tuple[int, ...], size: tuple[int, int] | None, path: Path, line: int) -> None:
    x0, y0, x1, y1 = box
    if not (0 <= x0 <= x1 and 0 <= y0 <= y1):
        raise InputFileError(path, f"box {box} is not (x0, y0, x1, y1) with 0 <= x0 <= x1, "
                                   "0 <= y0 <= y1", line)
    if size is not None and (x1 > size[0] - 1 or y1 > size[1] - 1):
        raise InputFileError(path, f"box {box} lies outside the {size[0]}x{size[1]} image "
                                   "(inclusive coordinates must be <= W-1, H-1)", line)


def write_metadata(split_dir: Path | str, records: tuple[Record, ...] | list[Record],
                   mask_root: Path | None = None) -> None:
    """Write records in wsolevaluation's exact format (comma-separated, no final newline):
    boxes, or with `mask_root` the mask form (paths relative to `mask_root`)."""
    split_dir = Path(split_dir)
    split_dir.mkdir(parents=True, exist_ok=True)
    ids = [r.image_id for r in records]
    if any("," in i for i in ids):
        raise WsolbenchError("wsolevaluation ids cannot contain ',' (the field separator)")
    atomic_write_text(split_dir / "image_ids.txt", "\n".join(ids))
    atomic_write_text(split_dir / "class_labels.txt",
                      "\n".join(f"{r.image_id},{r.label}" for r in records))
    atomic_write_text(split_dir / "image_sizes.txt",
                      "\n".join(f"{r.image_id},{r.size[0]},{r.size[1]}" for r in records))
    if mask_root is None:
        lines = [f"{r.image_id},{x0},{y0},{x1},{y1}" for r in records
                 for x0, y0, x1, y1 in r.boxes]
    else:
        def rel(path: Path) -> str:
            return Path(path).relative_to(mask_root).as_posix()

        lines = [f"{r.image_id},{rel(m)},"
                 + (rel(r.ignore_path) if k == 0 and r.ignore_path else "")
                 for r in records for k, m in enumerate(r.mask_paths)]
    atomic_write_text(split_dir / "localization.txt", "\n".join(lines))
