"""Torch view of a split: decoded, transformed images with labels and record indices.

Transforms are derived from the method's config (image size, mean/std), the way timm derives
them from a model's `pretrained_cfg`. Test images are resized to a square without cropping,
as both official repositories and wsolevaluation do, so a map covers the whole image.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import transforms as T

from wsolbench.data.images import load_rgb
from wsolbench.data.records import Record
from wsolbench.errors import WsolbenchError
from wsolbench.method_config import TRAIN_TRANSFORMS


def build_transform(train: bool, image_size: int, resize_size: int, mean: Sequence[float],
                    std: Sequence[float], recipe: str = "resize_crop_flip"):
    """Test: square resize only (no crop). Train, by `recipe`:

    - `resize_crop_flip`: square resize -> random crop -> flip (CUB; TS-CAM on ILSVRC too);
    - `timm_randaug`: TRT's ILSVRC pipeline, timm's RandomResizedCrop(0.8-1, bicubic), flip,
      RandAugment m9/mstd0.5/inc1, RandomErasing p=0.25 per-pixel (docs/methods.md §4).
    """
    if recipe not in TRAIN_TRANSFORMS:
        raise WsolbenchError(f"train_transform must be one of {', '.join(TRAIN_TRANSFORMS)}, "
                             f"got {recipe!r}")
    normalize = [T.ToTensor(), T.Normalize(mean, std)]
    if train and recipe == "timm_randaug":
        from timm.data import create_transform

        _allow_zero_bit_posterize()
        return create_transform(input_size=image_size, is_training=True, scale=(0.8, 1.0),
                                color_jitter=0.4, auto_augment="rand-m9-mstd0.5-inc1",
                                interpolation="bicubic", re_prob=0.25, re_mode="pixel",
                                re_count=1, mean=tuple(mean), std=tuple(std))
    if train:
        return T.Compose([T.Resize((resize_size, resize_size)), T.RandomCrop(image_size),
                          T.RandomHorizontalFlip(), *normalize])
    return T.Compose([T.Resize((image_size, image_size)), *normalize])


def _posterize(img, bits_to_keep, **_):
    """timm's posterize op, with PIL's behaviour of the official recipe's time kept for 0
    bits: a black image. PIL >= 10 raises instead, and timm's RandAugment (magnitude 9, std
    0.5, `inc1`) asks for 0 bits whenever a drawn magnitude reaches 10 (about 2 % of its
    posterize calls), which stopped TRT's ILSVRC training at a random step."""
    from PIL import ImageOps

    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return img.point(lambda _: 0)
    return ImageOps.posterize(img, bits_to_keep)


def _allow_zero_bit_posterize() -> None:
    """Route timm's three posterize ops through `_posterize` (their table is read when a
    RandAugment is built, so this precedes `create_transform`)."""
    from timm.data import auto_augment

    for name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
        auto_augment.NAME_TO_OP[name] = _posterize


def _item_seed(epoch_seed: int, index: int) -> int:
    return (epoch_seed * 1_000_003 + index * 7_919) % 2**31


class RecordDataset(Dataset):
    """Items are `(image [3, S, S], label, index)`; the index points back into `records`.

    Keys are plain indices or `(index, epoch_seed)` pairs (what `EpochShardSampler` yields in
    training). With a pair, python/numpy/torch are seeded from `(epoch_seed, index)` before
    the transform, so an image's augmentation depends only on the epoch and the image: not on
    the batch it lands in, the DataLoader worker, or the number of DDP ranks.
    """

    def __init__(self, records: Sequence[Record], transform: T.Compose) -> None:
        self.records = list(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        if isinstance(key, tuple):
            index, epoch_seed = key
            seed = _item_seed(epoch_seed, index)
            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)
        else:
            index = key
        record = self.records[index]
        try:
            image = load_rgb(record.path)
        except Exception as exc:  # corrupt or vanished file: name it, not PIL's internals
            raise WsolbenchError(f"{record.path}: cannot decode image {record.image_id!r}: {exc}"
                                 ) from None
        return self.transform(image), record.label, index
