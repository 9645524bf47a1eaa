"""`synth-cub`: the embedded, procedurally generated WSOL dataset (docs/synthetic-data.md).

Every image holds one "bird": a large textured body with a tail, shared by all classes, and a
small head disc whose hue decides the class, so the discriminative part is a small fraction
of the object (partial activation). A weak class tint on the body and a background style that
matches the class 60% of the time give the classifier secondary evidence outside the head, as
real birds and habitats do. Backgrounds are chromatic clutter with body-textured distractor
fragments, so neither colour saliency nor a centre prior localizes the object.

The dataset is written to disk in the exact CUB-200-2011 archive layout (plus CUBV2-like
train-fullsup images with wsolevaluation metadata, and foreground/head masks), so that the
real readers are exercised end to end. Same config -> identical bytes: each image draws from
its own `SeedSequence((stream, seed, split, index))`, so the worker count does not change
anything; `stream` is a number derived from the dataset's name, so two synthetic datasets
never share an image's background or clutter (real datasets do not share images either).
"""

from __future__ import annotations

import colorsys
import hashlib
import io
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from wsolbench.data.cub import read_cub
from wsolbench.data.metadata import read_metadata, write_metadata
from wsolbench.data.records import Record, WSOLData
from wsolbench.errors import WsolbenchError
from wsolbench.fileio import atomic_directory, file_lock

GENERATOR_VERSION = 6  # 6: per-dataset random streams, hue_offset
SPLITS = ("train", "test", "fullsup")


@dataclass(frozen=True)
class SynthConfig:
    """Every knob of the generator; recorded with each run and hashed into the folder name."""

    seed: int = 0
    # Which dataset's random stream images draw from (its name): synth-cub and
    # synth-imagenet images must be independent draws, not the same backgrounds.
    stream: str = "synth-cub"
    image_size: int = 64
    num_classes: int = 10
    train_per_class: int = 400
    test_per_class: int = 100
    fullsup_per_class: int = 10
    object_area: tuple[float, float] = (0.06, 0.29)  # GT box / image area, log-uniform
    aspect: tuple[float, float] = (0.45, 0.6)  # body minor/major axis
    max_rotation_deg: float = 35.0
    border_prob: float = 0.3  # objects cut by an image border
    head_fraction: float = 0.22  # nominal head / object area; ~0.18 drawn (borders clip)
    min_head_radius: float = 2.5
    hue_jitter_deg: float = 8.0
    eye: bool = True  # a dark eye on the head: a local pattern no clutter shape has
    body_tint: float = 0.5  # weaker class cue spread over the whole body
    stripe_depth: float = 0.12  # body texture contrast (high values make local contrast win)
    body_saturation: tuple[float, float] = (0.1, 0.5)  # muted plumage: the tint shows
    background_correlation: float = 0.6  # P(background style = the image's class)
    distractors: tuple[int, int] = (1, 3)  # body-textured fragments without a head
    distractor_scale: tuple[float, float] = (0.35, 0.6)
    clutter_shapes: tuple[int, int] = (4, 8)
    clutter_size: tuple[float, float] = (0.08, 0.25)  # semi-axes / image size: never head-sized
    # Background and clutter span muted to vivid, so neither a muted body nor a vivid head is
    # the only region of its kind (saturation maps must not localize the object).
    clutter_saturation: tuple[float, float] = (0.1, 0.9)
    pixel_noise: float = 0.04
    jpeg_quality: int = 92
    # synth-imagenet: several body shapes (class = shape x head hue) and multi-instance images
    shapes: tuple[str, ...] = ("ellipse",)
    multi_instance_prob: float = 0.0
    max_instances: int = 3
    # Head hues shifted by this fraction of a hue step: the pretraining corpus's classes
    # sit between the benchmark's hues (other classes, as ImageNet's are not CUB's).
    hue_offset: float = 0.0

    def __post_init__(self) -> None:
        """Refuse knobs the generator cannot honour, naming the key (before any drawing)."""
        for key in ("num_classes", "train_per_class", "test_per_class", "fullsup_per_class",
                    "max_instances"):
            if getattr(self, key) < 1:
                raise WsolbenchError(f"synthetic data: {key} must be >= 1, got "
                                     f"{getattr(self, key)}")
        if self.num_classes < 2:
            raise WsolbenchError("synthetic data: num_classes must be >= 2 (a classifier needs "
                                 "two classes)")
        if self.image_size < 16:
            raise WsolbenchError(f"synthetic data: image_size must be >= 16 px (objects, heads "
                                 f"and eyes need room), got {self.image_size}")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type.startswith("tuple[") and f.name != "shapes":
                if len(value) != 2 or value[0] > value[1]:
                    raise WsolbenchError(f"synthetic data: {f.name} is a range (low, high), "
                                         f"got {value!r}; write --data-set {f.name}=low,high")
        for key in ("border_prob", "background_correlation", "multi_instance_prob",
                    "head_fraction", "body_tint"):
            if not 0 <= getattr(self, key) <= 1:
                raise WsolbenchError(f"synthetic data: {key} must lie in [0, 1], got "
                                     f"{getattr(self, key)}")
        if not 1 <= self.jpeg_quality <= 100:
            raise WsolbenchError(f"synthetic data: jpeg_quality must lie in 1..100, got "
                                 f"{self.jpeg_quality}")

    def digest(self) -> str:
        blob = json.dumps({"v": GENERATOR_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    def count(self, split: str) -> int:
        return {"train": self.train_per_class, "test": self.test_per_class,
                "fullsup": self.fullsup_per_class}[split] * self.num_classes


@dataclass(frozen=True)
class Rendered:
    """One generated image with exact ground truth (all arrays `[S, S]` or `[S, S, 3]`)."""

    image: np.ndarray  # uint8 RGB
    mask: np.ndarray  # bool, the object(s)
    head: np.ndarray  # bool, the discriminative part(s)
    boxes: tuple[tuple[int, int, int, int], ...]  # inclusive tight box of each visible instance
    instances: tuple[np.ndarray, ...] = ()  # bool, the visible part of each, as `boxes`


# ----------------------------------------------------------------------------- rendering


def stream_number(stream: str) -> int:
    """A dataset name as a 64-bit SeedSequence entropy word (stable across Pythons)."""
    return int.from_bytes(hashlib.sha256(stream.encode()).digest()[:8], "little")


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.asarray(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32)


def _class_hue(c: int, n: int, n_shapes: int = 1, offset: float = 0.0) -> float:
    """Head hue of class c: classes cycle through the shapes, then through the hues."""
    return (c // n_shapes + offset) / math.ceil(n / n_shapes)


def _background_hue(c: int, n: int) -> float:
    # Offset by half a class step so a background never shares its class's head hue.
    return (c + 0.5) / n


class _Canvas:
    """Pixel-centre coordinates of an S x S image, shared by every shape drawn on it."""

    def __init__(self, size: int) -> None:
        self.size = size
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
        self.xs, self.ys = xs, ys

    def frame(self, cx: float, cy: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
        """Coordinates `(u, v)` along and across an axis through `(cx, cy)` at `angle`."""
        dx, dy = self.xs - cx, self.ys - cy
        c, s = math.cos(angle), math.sin(angle)
        return dx * c + dy * s, -dx * s + dy * c

    def ellipse(self, cx, cy, a, b, angle) -> np.ndarray:
        u, v = self.frame(cx, cy, angle)
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0

    def disc(self, cx, cy, r) -> np.ndarray:
        return (self.xs - cx) ** 2 + (self.ys - cy) ** 2 <= r * r

    def rect(self, cx, cy, hw, hh, angle) -> np.ndarray:
        u, v = self.frame(cx, cy, angle)
        return (np.abs(u) <= hw) & (np.abs(v) <= hh)


def _stripes(canvas: _Canvas, cx, cy, angle, period, phase, depth: float) -> np.ndarray:
    """The body texture shared by all birds and by the distractors: bands across the axis."""
    u, _ = canvas.frame(cx, cy, angle)
    return (1.0 - depth + depth * np.sin(2 * math.pi * u / period + phase)).astype(np.float32)


def _paint(img: np.ndarray, mask: np.ndarray, rgb: np.ndarray, shade: np.ndarray | None = None
           ) -> None:
    color = rgb[None, None, :] * (shade[..., None] if shade is not None else 1.0)
    np.copyto(img, np.broadcast_to(color, img.shape), where=mask[..., None])


def _body_color(rng: np.random.Generator, cfg: SynthConfig, tint_class: int) -> np.ndarray:
    # A muted base (like plumage) so the weak class tint is visible over the whole body.
    base = _hsv(rng.random(), rng.uniform(*cfg.body_saturation), rng.uniform(0.45, 0.85))
    tint = _hsv(_class_hue(tint_class, cfg.num_classes, len(cfg.shapes), cfg.hue_offset),
                0.9, 0.9)
    return (1 - cfg.body_tint) * base + cfg.body_tint * tint


def _background(rng: np.random.Generator, cfg: SynthConfig, canvas: _Canvas, label: int
                ) -> np.ndarray:
    """Chromatic low-frequency field plus flat clutter shapes, styled by a (correlated) class."""
    n, size = cfg.num_classes, cfg.image_size
    style = label if rng.random() < cfg.background_correlation else int(rng.integers(n))
    hue0 = _background_hue(style, n)
    sat_lo, sat_hi = cfg.clutter_saturation
    coarse = np.stack([
        np.stack([_hsv(hue0 + rng.normal(0, 0.08), rng.uniform(sat_lo, sat_hi),
                       rng.uniform(0.35, 0.85)) for _ in range(4)]) for _ in range(4)])
    img = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    for _ in range(rng.integers(cfg.clutter_shapes[0], cfg.clutter_shapes[1] + 1)):
        cx, cy = rng.uniform(0, size, 2)
        w, h = rng.uniform(*cfg.clutter_size, 2) * size
        angle = rng.uniform(0, math.pi)
        shape = canvas.ellipse(cx, cy, w, h, angle) if rng.random() < 0.5 else \
            canvas.rect(cx, cy, w, h / 2, angle)
        _paint(img, shape, _hsv(hue0 + rng.normal(0, 0.15), rng.uniform(sat_lo, sat_hi),
                                rng.uniform(0.3, 0.9)))
    return img


def _bird(rng: np.random.Generator, cfg: SynthConfig, canvas: _Canvas, scale: float, aspect: float,
          cx: float, cy: float, angle: float, facing: int, shape: str
          ) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Masks of the body+tail and of the head; returns (body_mask, head_mask, head_centre)."""
    a, b = scale, scale * aspect
    if shape == "ellipse":
        body = canvas.ellipse(cx, cy, a, b, angle)
    elif shape == "rect":
        body = canvas.rect(cx, cy, 0.9 * a, 0.9 * b, angle)
    elif shape == "diamond":
        u, v = canvas.frame(cx, cy, angle)
        body = np.abs(u) / a + np.abs(v) / b <= 1.0
    else:
        raise ValueError(f"unknown synth shape {shape!r}; expected ellipse, rect or diamond")
    u, v = canvas.frame(cx, cy, angle)
    u = u * facing  # +u points to the head
    tail = (u <= -0.75 * a) & (u >= -1.45 * a) & (np.abs(v) <= 0.35 * b + 0.6 * (-u - 0.75 * a))
    body_area = math.pi * a * b * 1.15
    r_head = max(cfg.min_head_radius, math.sqrt(cfg.head_fraction * body_area / math.pi))
    hx = cx + facing * math.cos(angle) * (a + 0.35 * r_head)
    hy = cy + facing * math.sin(angle) * (a + 0.35 * r_head)
    head = canvas.disc(hx, hy, r_head)
    return (body | tail) & ~head, head, (hx, hy)


def render(cfg: SynthConfig, label: int, rng: np.random.Generator,
           canvas: _Canvas | None = None) -> Rendered:
    """Draw one image of class `label` with its exact object and head masks."""
    size = cfg.image_size
    canvas = canvas or _Canvas(size)
    img = _background(rng, cfg, canvas, label)

    # Distractors first, so the object may occlude them: body texture, random tint, no head.
    for _ in range(rng.integers(cfg.distractors[0], cfg.distractors[1] + 1)):
        area = math.exp(rng.uniform(*np.log(cfg.object_area))) * rng.uniform(*cfg.distractor_scale)
        a = size * math.sqrt(area / 3.0)
        dx, dy, ang = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(-math.pi, math.pi)
        frag = canvas.ellipse(dx, dy, a, a * rng.uniform(*cfg.aspect), ang)
        _paint(img, frag, _body_color(rng, cfg, int(rng.integers(cfg.num_classes))),
               _stripes(canvas, dx, dy, ang, rng.uniform(0.35, 0.6) * a, rng.uniform(0, 6.3),
                        cfg.stripe_depth))

    n_instances = 1
    if cfg.multi_instance_prob > 0 and rng.random() < cfg.multi_instance_prob:
        n_instances = int(rng.integers(2, cfg.max_instances + 1))
    shape = cfg.shapes[label % len(cfg.shapes)]
    drawn = [_draw_object(rng, cfg, canvas, img, label, shape, 1.0 if n_instances == 1 else 0.7)
             for _ in range(n_instances)]

    img = img + rng.normal(0, cfg.pixel_noise, img.shape).astype(np.float32)
    image = (img.clip(0, 1) * 255 + 0.5).astype(np.uint8)
    # Later instances occlude earlier ones: each GT box is the tight box of what is visible.
    covered = np.zeros((size, size), bool)
    mask, head, boxes, instances = np.zeros_like(covered), np.zeros_like(covered), [], []
    for obj, obj_head in reversed(drawn):
        visible = obj & ~covered
        covered |= obj
        if visible.any():
            ys, xs = np.nonzero(visible)
            boxes.append((int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())))
            instances.append(visible)
            mask |= visible
            head |= obj_head & visible
    return Rendered(image=image, mask=mask, head=head, boxes=tuple(reversed(boxes)),
                    instances=tuple(reversed(instances)))


def _draw_object(rng: np.random.Generator, cfg: SynthConfig, canvas: _Canvas, img: np.ndarray,
                 label: int, shape: str, scale_factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Paint one instance (body, head, eye) into `img`; returns its (object, head) masks."""
    size = cfg.image_size
    # Log-uniform box area, free orientation, uniform placement, some cut by a border.
    for _attempt in range(20):
        area = math.exp(rng.uniform(*np.log(cfg.object_area)))
        aspect = rng.uniform(*cfg.aspect)
        scale = scale_factor * size * math.sqrt(area / (8.0 * aspect))  # mean GT area ~15%
        angle = math.radians(rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg))
        facing = 1 if rng.random() < 0.5 else -1
        half_w, half_h = 1.45 * scale, 1.45 * scale * max(aspect, abs(math.sin(angle)))
        if rng.random() < cfg.border_prob:  # push the object across one border
            cx, cy = rng.uniform(half_w, size - half_w), rng.uniform(half_h, size - half_h)
            side = int(rng.integers(4))
            cut = rng.uniform(0.1, 0.4)
            if side == 0:
                cx = half_w * (1 - 2 * cut)
            elif side == 1:
                cx = size - half_w * (1 - 2 * cut)
            elif side == 2:
                cy = half_h * (1 - 2 * cut)
            else:
                cy = size - half_h * (1 - 2 * cut)
        else:
            cx = rng.uniform(min(half_w, size / 2), max(size - half_w, size / 2))
            cy = rng.uniform(min(half_h, size / 2), max(size - half_h, size / 2))
        body, head, (hx, hy) = _bird(rng, cfg, canvas, scale, aspect, cx, cy, angle, facing,
                                     shape)
        if 1 <= hx < size - 1 and 1 <= hy < size - 1 and head.sum() >= 9:
            break  # the head (the class evidence) must be visible
    period = rng.uniform(0.35, 0.6) * scale
    _paint(img, body, _body_color(rng, cfg, label),
           _stripes(canvas, cx, cy, angle, period, rng.uniform(0, 6.3), cfg.stripe_depth))
    head_rgb = _hsv(_class_hue(label, cfg.num_classes, len(cfg.shapes), cfg.hue_offset)
                    + rng.normal(0, cfg.hue_jitter_deg / 360.0),
                    rng.uniform(0.75, 1.0), rng.uniform(0.75, 1.0))
    _paint(img, head, head_rgb)
    if cfg.eye:
        r_eye = max(0.8, 0.3 * math.sqrt(head.sum() / math.pi))
        _paint(img, canvas.disc(hx, hy, r_eye) & head, np.zeros(3, np.float32))
    return body | head, head


# ----------------------------------------------------------------------------- writing


def class_names(cfg: SynthConfig) -> tuple[str, ...]:
    return tuple(f"{c + 1:03d}.Synthbird_{c + 1:03d}" for c in range(cfg.num_classes))


def _png_bytes(mask: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buf, format="PNG")
    return buf.getvalue()


def wnids(cfg: SynthConfig) -> tuple[str, ...]:
    """WordNet-id-like folder names whose sorted order is the label order."""
    return tuple(f"n{c:08d}" for c in range(cfg.num_classes))


OPENIMAGES_SPLITS = {"train": "train", "fullsup": "val", "test": "test"}


def openimages_classes(cfg: SynthConfig) -> tuple[str, ...]:
    """Folder names like OpenImages' `/m/...` ids (sorted order = label order)."""
    return tuple(f"m{c:05d}" for c in range(cfg.num_classes))


def _image_rel(cfg: SynthConfig, layout: str, split: str, index: int, label: int) -> str:
    """Image path relative to the split's image folder (= the record's image id)."""
    if layout == "openimages":  # wsolevaluation's OpenImages30k: <split>/<class>/<id>.jpg
        return f"{OPENIMAGES_SPLITS[split]}/{openimages_classes(cfg)[label]}/{index:08x}.jpg"
    if layout == "cub":
        return f"{class_names(cfg)[label]}/Synthbird_{split}_{index:05d}.jpg"
    if split == "train":
        wnid = wnids(cfg)[label]
        return f"{wnid}/{wnid}_{index}.JPEG"
    if split == "test":  # flat ILSVRC-2012 val layout, boxes in per-image XML
        return f"val/ILSVRC2012_val_{index + 1:08d}.JPEG"
    return f"val2/{label}/{index}.jpeg"  # ImageNetV2-style train-fullsup (wsolevaluation ids)


def _split_dirs(root: Path, split: str, layout: str) -> tuple[Path, Path, Path]:
    """(images, object masks, head masks) folders of a split, as the readers expect them."""
    if layout == "openimages":  # masks sit beside the images (wsolevaluation's mask_root)
        return root / "OpenImages", root / "OpenImages", root / "heads"
    if layout == "ilsvrc":
        image_root = root / "train" if split == "train" else root
        return image_root, root / "segmentations" / split, root / "heads" / split
    if split == "fullsup":
        return root / "CUBV2", root / "CUBV2_segmentations", root / "CUBV2_heads"
    return root / "CUB_200_2011" / "images", root / "segmentations", root / "heads"


def _voc_xml(filename: str, size: int, wnid: str, boxes) -> str:
    objects = "".join(
        f"<object><name>{wnid}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
        f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>" for x0, y0, x1, y1 in boxes)
    return (f"<annotation><folder>val</folder><filename>{filename}</filename><size>"
            f"<width>{size}</width><height>{size}</height><depth>3</depth></size>{objects}"
            "</annotation>\n")


_PARENT_PID: int | None = None


def _exit_with(parent_pid: int) -> None:
    """Pool initializer: remember the generating process, whose death ends this worker."""
    global _PARENT_PID
    _PARENT_PID = parent_pid


def _render_chunk(args: tuple[SynthConfig, str, str, int, int, str]) -> list[tuple]:
    """Render and write images `[start, stop)` of one split; returns their annotations."""
    cfg, layout, split, start, stop, out = args
    out_dir, canvas, rows = Path(out), _Canvas(cfg.image_size), []
    split_key = SPLITS.index(split)
    image_dir, mask_dir, head_dir = _split_dirs(out_dir, split, layout)
    for index in range(start, stop):
        if _PARENT_PID is not None and os.getppid() != _PARENT_PID:
            os._exit(1)  # the generator was killed: stop writing into its abandoned folder
        label = index % cfg.num_classes
        rng = np.random.default_rng(np.random.SeedSequence(
            [stream_number(cfg.stream), cfg.seed, split_key, index]))
        sample = render(cfg, label, rng, canvas)
        rel = _image_rel(cfg, layout, split, index, label)
        png_rel = Path(rel).with_suffix(".png")
        for path in (image_dir / rel, mask_dir / png_rel, head_dir / png_rel):
            path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        # 4:4:4 chroma: 4:2:0 subsampling would smear the small head's hue (the class cue).
        Image.fromarray(sample.image).save(buf, format="JPEG", quality=cfg.jpeg_quality,
                                           subsampling=0)
        (image_dir / rel).write_bytes(buf.getvalue())
        (head_dir / png_rel).write_bytes(_png_bytes(sample.head))
        if layout == "openimages":
            rows.append((split, index, rel, label, sample.boxes,
                         *_write_openimages_masks(cfg, mask_dir, rel, label, sample)))
            continue
        (mask_dir / png_rel).write_bytes(_png_bytes(sample.mask))
        if layout == "ilsvrc" and split == "test":
            xml = out_dir / "val_boxes" / f"{Path(rel).stem}.xml"
            xml.parent.mkdir(parents=True, exist_ok=True)
            xml.write_text(_voc_xml(Path(rel).name, cfg.image_size, wnids(cfg)[label],
                                    sample.boxes))
        rows.append((split, index, rel, label, sample.boxes))
    return rows


def _write_openimages_masks(cfg: SynthConfig, mask_dir: Path, rel: str, label: int,
                            sample: Rendered) -> tuple[tuple[str, ...], str]:
    """Instance masks and the ignore region, as OpenImages30k annotates them: a mask for
    every instance but the last of a multi-instance image, whose box becomes the ignore
    region (OpenImages ignores the boxes of instances nobody segmented); every image names
    an ignore PNG, empty when nothing is ignored. Returns the paths relative to `mask_dir`."""
    stem = Path(rel).with_suffix("")
    cls = openimages_classes(cfg)[label]
    annotated = sample.instances[:-1] if len(sample.instances) > 1 else sample.instances
    names = tuple(f"{stem}_{cls}_{k}.png" for k in range(len(annotated)))
    for name, instance in zip(names, annotated):
        (mask_dir / name).write_bytes(_png_bytes(instance))
    ignore = np.zeros_like(sample.mask)
    for x0, y0, x1, y1 in sample.boxes[len(annotated):]:
        ignore[y0:y1 + 1, x0:x1 + 1] = True
    ignore_name = f"{stem}_ignore.png"
    (mask_dir / ignore_name).write_bytes(_png_bytes(ignore))
    return names, ignore_name


def generate(cfg: SynthConfig, out: Path | str, workers: int = 2, layout: str = "cub") -> Path:
    """Write the dataset into `out` in the CUB or ILSVRC layout (atomically: the folder
    appears only when complete)."""
    if layout == "cub" and cfg.multi_instance_prob > 0:
        raise WsolbenchError("the CUB layout holds one box per image: multi_instance_prob must "
                             "be 0 for synth-cub")
    out = Path(out)
    with atomic_directory(out) as tmp:
        jobs = []
        for split in SPLITS:
            n = cfg.count(split)
            step = max(1, math.ceil(n / (4 * max(workers, 1))))
            jobs += [(cfg, layout, split, s, min(n, s + step), str(tmp))
                     for s in range(0, n, step)]
        if workers > 1:
            # spawn, not fork: a forked worker would share the caller's dataset lock (flock
            # belongs to the open file, which fork duplicates) and, if the caller is killed,
            # hold it forever, so every later run of this dataset would hang.
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn"),
                                     initializer=_exit_with, initargs=(os.getpid(),)) as pool:
                rows = [r for chunk in pool.map(_render_chunk, jobs) for r in chunk]
        else:
            rows = [r for job in jobs for r in _render_chunk(job)]
        if layout == "cub":
            _write_cub_annotations(cfg, tmp, rows)
        elif layout == "openimages":
            _write_openimages_annotations(cfg, tmp, rows)
        else:
            _write_ilsvrc_annotations(cfg, tmp, rows)
        (tmp / "synth.json").write_text(json.dumps(
            {"generator_version": GENERATOR_VERSION, "layout": layout, "config": asdict(cfg)},
            indent=2) + "\n")
    return out


def _fullsup_metadata(cfg: SynthConfig, root: Path, image_root: Path, rows: list[tuple],
                      folder: Path) -> None:
    size = cfg.image_size
    fullsup = [Record(image_id=rel, path=image_root / rel, label=label, size=(size, size),
                      boxes=np.asarray(boxes, dtype=np.int64))
               for split, _i, rel, label, boxes in rows if split == "fullsup"]
    write_metadata(folder, fullsup)


def _write_cub_annotations(cfg: SynthConfig, root: Path, rows: list[tuple]) -> None:
    cub = root / "CUB_200_2011"
    names = class_names(cfg)
    (cub / "classes.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(names)))
    cub_rows = [r for r in rows if r[0] != "fullsup"]
    lines: dict[str, list[str]] = {k: [] for k in ("images", "labels", "split", "boxes")}
    for image_id, (split, _i, rel, label, boxes) in enumerate(cub_rows, start=1):
        (x0, y0, x1, y1), = boxes
        lines["images"].append(f"{image_id} {rel}")
        lines["labels"].append(f"{image_id} {label + 1}")
        lines["split"].append(f"{image_id} {int(split == 'train')}")
        # CUB stores x y w h with x + w = the inclusive right edge (docs/protocols.md §2.1).
        lines["boxes"].append(f"{image_id} {x0:.1f} {y0:.1f} {x1 - x0:.1f} {y1 - y0:.1f}")
    for key, file in (("images", "images.txt"), ("labels", "image_class_labels.txt"),
                      ("split", "train_test_split.txt"), ("boxes", "bounding_boxes.txt")):
        (cub / file).write_text("\n".join(lines[key]) + "\n")
    (cub / "README").write_text("synth-cub: procedurally generated by wsolbench in the "
                                "CUB-200-2011 layout. Not real data.\n")
    _fullsup_metadata(cfg, root, root / "CUBV2", rows, root / "metadata" / "CUB" / "val")


def _write_ilsvrc_annotations(cfg: SynthConfig, root: Path, rows: list[tuple]) -> None:
    (root / "LOC_synset_mapping.txt").write_text(
        "".join(f"{w} synthetic class {i}\n" for i, w in enumerate(wnids(cfg))))
    _fullsup_metadata(cfg, root, root, rows, root / "metadata" / "ILSVRC" / "val")


def _write_openimages_annotations(cfg: SynthConfig, root: Path, rows: list[tuple]) -> None:
    """wsolevaluation's metadata/OpenImages/{train,val,test} (masks form for val and test)."""
    images, size = root / "OpenImages", cfg.image_size
    for split, folder in OPENIMAGES_SPLITS.items():
        records = [Record(image_id=rel, path=images / rel, label=label, size=(size, size),
                          boxes=np.zeros((0, 4), np.int64),
                          mask_paths=tuple(images / m for m in masks),
                          ignore_path=images / ignore)
                   for s, _i, rel, label, _b, masks, ignore in rows if s == split]
        write_metadata(root / "metadata" / "OpenImages" / folder, records,
                       mask_root=None if split == "train" else images)


# ----------------------------------------------------------------------------- plugin


def default_data_dir() -> Path:
    return Path("results") / "data"


class SynthCUBDataset:
    """The embedded default: generated on first use into `results/data/synth-cub-<hash>/`."""

    name = "synth-cub"
    family = "synth"  # which method presets apply (`WSOLMethod.default_presets`)
    config_class = SynthConfig
    layout = "cub"

    @classmethod
    def root_for(cls, cfg: SynthConfig, data_dir: Path | str | None = None) -> Path:
        return Path(data_dir or default_data_dir()) / f"{cls.name}-{cfg.digest()}"

    @classmethod
    def generated(cls, root: Path | str | None, config: SynthConfig | None,
                  workers: int) -> tuple[SynthConfig, Path]:
        """The config and the folder of this dataset, generated on first use."""
        cfg = config or cls.config_class()
        return cfg, _ensure_generated(cls.root_for(cfg, root), cfg, workers, cls.layout)

    @classmethod
    def load(cls, root: Path | str | None = None, *, config: SynthConfig | None = None,
             workers: int = 2, **_ignored) -> WSOLData:
        cfg, path = cls.generated(root, config, workers)
        names, train, test = read_cub(path)
        fullsup = read_metadata(path / "metadata" / "CUB" / "val", path / "CUBV2",
                                mask_root=path / "CUBV2_segmentations")
        return WSOLData(
            name=cls.name, class_names=names, root=path, info={"synth": asdict(cfg)},
            train=_with_heads(train, path / "heads"), test=_with_heads(test, path / "heads"),
            fullsup=_with_heads(fullsup, path / "CUBV2_heads"))


def _ensure_generated(path: Path, cfg: SynthConfig, workers: int, layout: str) -> Path:
    if not (path / "synth.json").is_file():
        # Parallel jobs (the workflow, several `wsolbench run`) may ask for the same dataset:
        # one generates, the others wait and then read it.
        with file_lock(path.parent / f".{path.name}.lock"):
            if not (path / "synth.json").is_file():
                generate(cfg, path, workers=workers, layout=layout)
    stored = json.loads((path / "synth.json").read_text())
    if stored.get("generator_version") != GENERATOR_VERSION:
        raise WsolbenchError(f"{path} was written by another generator version; delete it")
    return path


@dataclass(frozen=True)
class SynthImageNetConfig(SynthConfig):
    """synth-imagenet: 30 classes (3 body shapes x 10 head hues), a quarter of the images with
    2-3 instances of their class (several GT boxes), smaller splits per class."""

    stream: str = "synth-imagenet"
    num_classes: int = 30
    train_per_class: int = 150
    test_per_class: int = 30
    fullsup_per_class: int = 4
    shapes: tuple[str, ...] = ("ellipse", "rect", "diamond")
    multi_instance_prob: float = 0.25


@dataclass(frozen=True)
class SynthOpenImagesConfig(SynthImageNetConfig):
    """synth-openimages: synth-imagenet's classes, its own images."""

    stream: str = "synth-openimages"


@dataclass(frozen=True)
class SynthPretrainConfig(SynthImageNetConfig):
    """synth-pretrain: the corpus synthetic backbones are pretrained on (ImageNet's role for
    CUB): 24 classes of its own (rect and diamond bodies x 12 head hues placed between the
    benchmark's hues), several instances in a quarter of the images, its own images."""

    stream: str = "synth-pretrain"
    num_classes: int = 24
    train_per_class: int = 600
    test_per_class: int = 50
    fullsup_per_class: int = 2
    shapes: tuple[str, ...] = ("rect", "diamond")
    hue_offset: float = 0.5
    multi_instance_prob: float = 0.25
    background_correlation: float = 0.3


class SynthImageNetDataset(SynthCUBDataset):
    """Generated in the ILSVRC layout (wnid folders, flat val + VOC XML, ImageNetV2-style
    train-fullsup metadata) and read back with the real ILSVRC readers."""

    name = "synth-imagenet"
    config_class = SynthImageNetConfig
    layout = "ilsvrc"

    @classmethod
    def load(cls, root: Path | str | None = None, *, config: SynthConfig | None = None,
             workers: int = 2, **_ignored) -> WSOLData:
        from wsolbench.data.ilsvrc import load_ilsvrc

        cfg, path = cls.generated(root, config, workers)
        data = load_ilsvrc(path, cls.name)

        def attach(records: tuple[Record, ...], split: str) -> tuple[Record, ...]:
            png = [Path(r.image_id).with_suffix(".png") for r in records]
            return tuple(replace(r, mask_paths=(path / "segmentations" / split / p,),
                                 part_mask_path=path / "heads" / split / p)
                         for r, p in zip(records, png))

        return replace(data, info={"synth": asdict(cfg)}, test=attach(data.test, "test"),
                       fullsup=attach(data.fullsup, "fullsup"))


def _with_heads(records: tuple[Record, ...], head_dir: Path) -> tuple[Record, ...]:
    return tuple(replace(r, part_mask_path=head_dir / Path(r.image_id).with_suffix(".png"))
                 for r in records)


class SynthOpenImagesDataset(SynthCUBDataset):
    """Generated in wsolevaluation's OpenImages30k layout (instance masks, ignore regions,
    metadata in the masks form) and read back with the real OpenImages reader: PxAP with
    ignore masks end to end."""

    name = "synth-openimages"
    config_class = SynthOpenImagesConfig
    layout = "openimages"

    @classmethod
    def load(cls, root: Path | str | None = None, *, config: SynthConfig | None = None,
             workers: int = 2, **_ignored) -> WSOLData:
        from wsolbench.data.openimages import load_openimages

        cfg, path = cls.generated(root, config, workers)
        data = load_openimages(path, cls.name)
        heads = path / "heads"
        return replace(data, info={"synth": asdict(cfg)}, train=_with_heads(data.train, heads),
                       test=_with_heads(data.test, heads),
                       fullsup=_with_heads(data.fullsup, heads))


class SynthPretrainDataset(SynthImageNetDataset):
    """The pretraining corpus (`wsolbench pretrain`), in the ILSVRC layout (several
    instances per image)."""

    name = "synth-pretrain"
    config_class = SynthPretrainConfig
