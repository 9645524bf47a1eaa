"""ILSVRC-2012 (ImageNet-1k) in its common on-disk layouts (docs/protocols.md §1, §2.2).

- train: `train/<wnid>/*.JPEG`; label = index of the wnid in sorted order (torchvision
  ImageFolder order, as wsolevaluation uses) — *not* the devkit's ILSVRC2012_ID.
- val (the WSOL test split): `val/*.JPEG` or `val/<wnid>/*.JPEG`, with one PASCAL-VOC XML per
  image (`<size>`, one `<object>` per instance with `<name>` wnid and integer `<bndbox>`),
  in `val_boxes/` (the unpacked ILSVRC2012_bbox_val_v3) or beside the image. Every box is
  kept, in file order, as `(xmin, ymin, xmax, ymax)` inclusive, no offset applied.
- train-fullsup: ImageNetV2 in wsolevaluation's metadata (`metadata/ILSVRC/val`, ids such as
  `val2/0/0.jpeg` relative to the root).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from wsolbench.data.metadata import read_fullsup
from wsolbench.data.records import Record, WSOLData
from wsolbench.errors import InputFileError, WsolbenchError

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def read_train(train_dir: Path) -> tuple[tuple[str, ...], tuple[Record, ...]]:
    """Class wnids (sorted) and weakly labelled train records (no size or box needed)."""
    if not train_dir.is_dir():
        raise WsolbenchError(f"ILSVRC train folder not found: {train_dir}")
    classes = tuple(sorted(d.name for d in train_dir.iterdir() if d.is_dir()))
    if not classes:
        raise WsolbenchError(f"{train_dir}: no class folders (expected train/<wnid>/*.JPEG)")
    records = []
    for label, wnid in enumerate(classes):
        for path in _images(train_dir / wnid):
            records.append(Record(image_id=str(path.relative_to(train_dir)), path=path,
                                  label=label, size=(0, 0), boxes=np.zeros((0, 4), np.int64)))
    return classes, tuple(records)


def _int(node: ET.Element, tag: str, xml: Path) -> int:
    child = node.find(tag)
    if child is None or child.text is None:
        raise InputFileError(xml, f"missing <{tag}>")
    try:
        return int(float(child.text))
    except ValueError:
        raise InputFileError(xml, f"<{tag}> must be a number, got {child.text!r}") from None


def read_voc_xml(xml: Path) -> tuple[tuple[int, int], list[str], np.ndarray]:
    """`(W, H)`, object wnids and boxes `[n, 4]` (inclusive, file order) of one XML."""
    if not xml.is_file():
        raise InputFileError(xml, "box annotation not found")
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as exc:
        raise InputFileError(xml, f"not valid XML ({exc})") from None
    size = root.find("size")
    if size is None:
        raise InputFileError(xml, "missing <size>")
    w, h = _int(size, "width", xml), _int(size, "height", xml)
    names, boxes = [], []
    for k, obj in enumerate(root.iter("object"), start=1):
        name, box = obj.find("name"), obj.find("bndbox")
        if name is None or box is None:
            raise InputFileError(xml, f"object {k} lacks <name> or <bndbox>")
        coords = tuple(_int(box, t, xml) for t in ("xmin", "ymin", "xmax", "ymax"))
        x0, y0, x1, y1 = coords
        if not (0 <= x0 <= x1 <= w - 1 and 0 <= y0 <= y1 <= h - 1):
            raise InputFileError(xml, f"object {k}: box {coords} lies outside the {w}x{h} "
                                      "<size> (inclusive coordinates must be <= W-1, H-1)")
        names.append((name.text or "").strip())
        boxes.append(coords)
    if not boxes:
        raise InputFileError(xml, "no <object>")
    return (w, h), names, np.asarray(boxes, dtype=np.int64)


def read_val(root: Path, val_dir: Path, xml_dir: Path | None, classes: tuple[str, ...]
             ) -> tuple[Record, ...]:
    """Validation images with every XML box; ids are relative to `root` (`val/...JPEG`)."""
    if not val_dir.is_dir():
        raise WsolbenchError(f"ILSVRC val folder not found: {val_dir}")
    index = {w: i for i, w in enumerate(classes)}
    seen: dict[str, Path] = {}
    records = []
    for path in _images(val_dir):
        if path.stem in seen:
            raise WsolbenchError(f"duplicate image id {path.stem!r}: {seen[path.stem]} and {path}")
        seen[path.stem] = path
        xml = (xml_dir or path.parent) / f"{path.stem}.xml"
        size, names, boxes = read_voc_xml(xml)
        folder = path.parent.name if path.parent != val_dir else None
        wnid = names[0]
        if any(n != wnid for n in names):
            raise InputFileError(xml, f"objects name different classes: {sorted(set(names))}")
        if folder is not None and folder != wnid:
            raise InputFileError(xml, f"<name> {wnid} disagrees with the image's class folder "
                                      f"{folder}")
        if wnid not in index:
            raise InputFileError(xml, f"wnid {wnid} is not a class of the train folders")
        records.append(Record(image_id=str(path.relative_to(root)), path=path,
                              label=index[wnid], size=size, boxes=boxes))
    return tuple(records)


def load_ilsvrc(root: Path, name: str, fullsup_metadata: Path | None = None,
                fullsup_images: Path | None = None) -> WSOLData:
    root = Path(root)
    if not root.is_dir():
        raise WsolbenchError(f"dataset root not found: {root}")
    classes, train = read_train(root / "train")
    xml_dir = root / "val_boxes" if (root / "val_boxes").is_dir() else None
    test = read_val(root, root / "val", xml_dir, classes)
    fullsup = read_fullsup(root / "metadata" / "ILSVRC" / "val", root, fullsup_metadata,
                           fullsup_images)
    return WSOLData(name=name, class_names=classes, train=train, test=test, fullsup=fullsup,
                    root=root)


class ILSVRCDataset:
    """Real ILSVRC-2012 (`--data-root` holds `train/`, `val/` and optionally `val_boxes/`)."""

    name = "ilsvrc"
    family = "ilsvrc"  # which method presets apply (`WSOLMethod.default_presets`)

    @classmethod
    def load(cls, root: Path | str | None, *, fullsup_metadata: Path | str | None = None,
             fullsup_images: Path | str | None = None) -> WSOLData:
        if root is None:
            raise WsolbenchError("dataset 'ilsvrc' needs --data-root: the folder holding "
                                 "train/<wnid>/ and val/ (with val_boxes/ XMLs)")
        return load_ilsvrc(Path(root), cls.name, fullsup_metadata, fullsup_images)
