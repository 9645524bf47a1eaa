"""OpenImages30k as clovaai/wsolevaluation lays it out (docs/evaluate-maps.md).

A wsolevaluation checkout (or a copy of its two folders) holds
`metadata/OpenImages/{train,val,test}/` (image_ids.txt, class_labels.txt, image_sizes.txt,
localization.txt) and the images with their masks under `dataset/OpenImages/` (or
`OpenImages/` directly under the root): `<split>/<class>/<id>.jpg`, instance masks
`<split>/<class>/<id>_<class>_<k>.png` and ignore regions `<split>/<class>/<id>_ignore.png`.
The localization files of val (train-fullsup) and test use the masks form
(`id,mask_path,ignore_path`, paths relative to the image folder, wsolevaluation's
`mask_root`); OpenImages has no boxes, so it is scored with PxAP.
"""

from __future__ import annotations

from pathlib import Path

from wsolbench.data.metadata import read_metadata
from wsolbench.data.records import WSOLData
from wsolbench.errors import WsolbenchError

SPLIT_FOLDERS = {"train": "train", "fullsup": "val", "test": "test"}


def find_image_root(root: Path) -> Path:
    """`<root>/dataset/OpenImages` (a wsolevaluation checkout) or `<root>/OpenImages`."""
    for candidate in (root / "dataset" / "OpenImages", root / "OpenImages"):
        if candidate.is_dir():
            return candidate
    raise WsolbenchError(f"{root}: no OpenImages image folder (looked for "
                         f"{root / 'dataset' / 'OpenImages'} and {root / 'OpenImages'})")


def load_openimages(root: Path | str, name: str = "openimages") -> WSOLData:
    """Read the three splits; class names are the labels' numbers (wsolevaluation ships
    no name file for OpenImages)."""
    root = Path(root)
    if not root.is_dir():
        raise WsolbenchError(f"dataset root not found: {root}")
    images = find_image_root(root)
    metadata = root / "metadata" / "OpenImages"
    splits = {split: read_metadata(metadata / folder, images, mask_root=images,
                                   require_localization=split != "train")
              for split, folder in SPLIT_FOLDERS.items()}
    labels = {r.label for records in splits.values() for r in records}
    if not labels or min(labels) < 0:
        raise WsolbenchError(f"{metadata}: class labels must be integers >= 0")
    class_names = tuple(str(k) for k in range(max(labels) + 1))
    return WSOLData(name=name, class_names=class_names, root=root, **splits)


class OpenImagesDataset:
    """The real OpenImages30k (`--data-root` = a wsolevaluation checkout with its dataset)."""

    name = "openimages"
    family = "openimages"  # which method presets apply (`WSOLMethod.default_presets`)

    @classmethod
    def load(cls, root: Path | str | None, **_ignored) -> WSOLData:
        if root is None:
            raise WsolbenchError("dataset 'openimages' needs --data-root: the folder holding "
                                 "metadata/OpenImages/ and dataset/OpenImages/ (wsolevaluation)")
        return load_openimages(root, cls.name)
