"""CUB-200-2011 from the official archive layout (docs/protocols.md §2.1).

`CUB_200_2011/` holds `images/<NNN.Class_Name>/<file>.jpg`, `classes.txt`, `images.txt`,
`image_class_labels.txt`, `train_test_split.txt` and `bounding_boxes.txt`; ids are 1-based
and files space-separated; boxes are `x y w h` floats. Boxes are converted exactly as
wsolevaluation's metadata holds them: `(x, y, x + w, y + h)`, with an end that reaches the
image border (`x + w == W`) clipped to `W - 1` (the shipped metadata never has `x1 == W`).
The `paper` protocol's boxes follow the official TS-CAM/TRT conversion instead
(`official_box`; docs/recipes.md).

The held-out train-fullsup split (CUBV2, 5 images per class) is not in the archive; it is
read from wsolevaluation's metadata format (`metadata/CUB/val`) when given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsolbench.data.metadata import read_fullsup
from wsolbench.data.records import Record, WSOLData
from wsolbench.data.textfiles import image_size, parse, read_rows
from wsolbench.errors import InputFileError, WsolbenchError

CUB_FILES = ("classes.txt", "images.txt", "image_class_labels.txt", "train_test_split.txt",
             "bounding_boxes.txt")


def find_cub_root(root: Path) -> Path:
    """Accept either the folder that contains `CUB_200_2011/` or that folder itself."""
    for candidate in (root / "CUB_200_2011", root):
        if (candidate / "images.txt").is_file():
            return candidate
    if not root.exists():
        raise WsolbenchError(f"dataset root not found: {root}")
    raise WsolbenchError(f"{root} is not a CUB-200-2011 folder: no images.txt in it or in "
                         f"{root / 'CUB_200_2011'}")


def read_cub(root: Path | str) -> tuple[tuple[str, ...], tuple[Record, ...], tuple[Record, ...]]:
    """Read the official archive into `(class_names, train_records, test_records)`."""
    cub = find_cub_root(Path(root))
    classes_file, images_file, labels_file, split_file, boxes_file = (cub / f for f in CUB_FILES)

    class_names = _read_classes(classes_file)
    images: dict[int, tuple[str, int]] = {}
    for line, (raw_id, rel) in read_rows(images_file, 2, None):
        image_id = parse(raw_id, int, images_file, line, "image id")
        if image_id in images:
            raise InputFileError(images_file, f"duplicate image id {image_id}", line)
        images[image_id] = (rel, line)

    labels = _per_image(labels_file, images, images_file, lambda v, f, ln: parse(
        v[0], int, f, ln, "class id"))
    is_train = _per_image(split_file, images, images_file, lambda v, f, ln: parse(
        v[0], int, f, ln, "is_train"))
    raw_boxes = _per_image(boxes_file, images, images_file, lambda v, f, ln: tuple(
        parse(x, float, f, ln, name) for x, name in zip(v, ("x", "y", "width", "height"))), 5)
    masks_dir = _find_segmentations(cub)

    train, test = [], []
    for image_id, (rel, line) in sorted(images.items()):
        class_id = labels[image_id][0]
        if not 1 <= class_id <= len(class_names):
            raise InputFileError(labels_file, f"class id {class_id} outside 1..{len(class_names)}",
                                 labels[image_id][1])
        path = cub / "images" / rel
        size = image_size(path, images_file, line)
        box = _convert_box(*raw_boxes[image_id][0], size, boxes_file, raw_boxes[image_id][1])
        mask = masks_dir / Path(rel).with_suffix(".png") if masks_dir else None
        record = Record(image_id=rel, path=path, label=class_id - 1, size=size,
                        boxes=np.asarray([box], dtype=np.int64),
                        mask_paths=(mask,) if mask is not None and mask.is_file() else (),
                        official_boxes=np.asarray([official_box(*raw_boxes[image_id][0])],
                                                  dtype=np.int64))
        flag, flag_line = is_train[image_id]
        if flag not in (0, 1):
            raise InputFileError(split_file, f"is_train must be 0 or 1, got {flag}", flag_line)
        (train if flag == 1 else test).append(record)
    return class_names, tuple(train), tuple(test)


def _read_classes(path: Path) -> tuple[str, ...]:
    names: dict[int, str] = {}
    for line, (raw_id, name) in read_rows(path, 2, None):
        class_id = parse(raw_id, int, path, line, "class id")
        if class_id in names:
            raise InputFileError(path, f"duplicate class id {class_id}", line)
        names[class_id] = name
    if sorted(names) != list(range(1, len(names) + 1)):
        raise InputFileError(path, "class ids must be 1..C without gaps (1-based)")
    return tuple(names[i] for i in sorted(names))


def _per_image(path: Path, images: dict[int, tuple[str, int]], images_file: Path, convert,
               n_fields: int = 2) -> dict[int, tuple]:
    """`{image_id: (value, line)}` for a file keyed by image id; ids must match images.txt."""
    out: dict[int, tuple] = {}
    for line, fields in read_rows(path, n_fields, None):
        image_id = parse(fields[0], int, path, line, "image id")
        if image_id not in images:
            raise InputFileError(path, f"image id {image_id} is not in {images_file.name}", line)
        if image_id in out:
            raise InputFileError(path, f"duplicate image id {image_id}", line)
        out[image_id] = (convert(fields[1:], path, line), line)
    missing = sorted(set(images) - set(out))
    if missing:
        first = missing[0]
        raise InputFileError(images_file, f"image id {first} has no line in {path.name}"
                             + (f" ({len(missing)} ids missing)" if len(missing) > 1 else ""),
                             images[first][1])
    return out


def _convert_box(x: float, y: float, w: float, h: float, size: tuple[int, int], path: Path,
                 line: int) -> tuple[int, int, int, int]:
    width, height = size
    if w <= 0 or h <= 0:
        raise InputFileError(path, f"box x={x} y={y} w={w} h={h} has zero or negative "
                                   "width or height", line)
    if x < 0 or y < 0 or x + w > width or y + h > height:
        raise InputFileError(path, f"box x={x} y={y} w={w} h={h} lies outside the "
                                   f"{width}x{height} image", line)
    x0, y0 = int(x), int(y)
    return x0, y0, min(int(x + w), width - 1), min(int(y + h), height - 1)


def official_box(x: float, y: float, w: float, h: float) -> tuple[int, int, int, int]:
    """The box the TS-CAM/TRT `CUBDataset` scales: `int()` of each of x, y, w, h first,
    then `(x, y, x + w, y + h)`; the end may equal the image width (their scaling clips at
    `frame - 1` afterwards). wsolevaluation's conversion (`_convert_box`) differs by one
    pixel on some boxes: `int(x + w)` and a clip to `W - 1` before scaling."""
    x0, y0, width, height = int(x), int(y), int(w), int(h)
    return x0, y0, x0 + width, y0 + height


def _find_segmentations(cub: Path) -> Path | None:
    """CUB's segmentation masks ship separately; look beside and inside the archive folder."""
    for candidate in (cub / "segmentations", cub.parent / "segmentations"):
        if candidate.is_dir():
            return candidate
    return None


class CUBDataset:
    """The real CUB-200-2011 (`--data-root` = the folder holding `CUB_200_2011/`).

    The train-fullsup split (CUBV2) comes from wsolevaluation's metadata: by default
    `<root>/metadata/CUB/val` with images under `<root>/CUBV2`, or the paths given.
    """

    name = "cub"
    family = "cub"  # which method presets apply (`WSOLMethod.default_presets`)

    @classmethod
    def load(cls, root: Path | str | None, *, fullsup_metadata: Path | str | None = None,
             fullsup_images: Path | str | None = None) -> WSOLData:
        if root is None:
            raise WsolbenchError("dataset 'cub' needs --data-root: the folder holding "
                                 "CUB_200_2011/ (the official archive, unpacked)")
        root = Path(root)
        class_names, train, test = read_cub(root)
        fullsup = read_fullsup(root / "metadata" / "CUB" / "val", root / "CUBV2",
                               fullsup_metadata, fullsup_images)
        return WSOLData(name=cls.name, class_names=class_names, train=train, test=test,
                        fullsup=fullsup, root=root)
