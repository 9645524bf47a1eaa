"""Torch view of a split: decoded, transformed images with labels and record indices.

Transforms are derived from the method's config (image size, mean/std), the way timm derives
them from a model's `pretrained_cfg`. Test images are resized to a square without cropping,
as both official repositories and wsolevaluation do, so a map covers the whole image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

from wsolbench.data.records import Record
from wsolbench.errors import WsolbenchError


def build_transform(train: bool, image_size: int, resize_size: int, mean: Sequence[float],
                    std: Sequence[float]) -> T.Compose:
    """Train: square resize -> random crop -> flip (CUB recipe); test: square resize only."""
    normalize = [T.ToTensor(), T.Normalize(mean, std)]
    if train:
        return T.Compose([T.Resize((resize_size, resize_size)), T.RandomCrop(image_size),
                          T.RandomHorizontalFlip(), *normalize])
    return T.Compose([T.Resize((image_size, image_size)), *normalize])


class RecordDataset(Dataset):
    """Items are `(image [3, S, S], label, index)`; the index points back into `records`."""

    def __init__(self, records: Sequence[Record], transform: T.Compose) -> None:
        self.records = list(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        record = self.records[index]
        try:
            with Image.open(record.path) as img:
                image = img.convert("RGB")
        except Exception as exc:  # corrupt or vanished file: name it, not PIL's internals
            raise WsolbenchError(f"{record.path}: cannot decode image {record.image_id!r}: {exc}"
                                 ) from None
        return self.transform(image), record.label, index
