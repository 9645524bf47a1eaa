"""CUB archive and wsolevaluation metadata readers, on fixtures in the exact formats."""

from pathlib import Path

import pytest

from tests.conftest import write_cub
from wsolbench.data.cub import CUBDataset, read_cub
from wsolbench.data.metadata import read_metadata, write_metadata
from wsolbench.errors import InputFileError, WsolbenchError


def test_cub_reader_converts_ids_labels_and_boxes(cub_root: Path):
    names, train, test = read_cub(cub_root)
    assert names == ("001.Black_footed_Albatross_0", "002.Black_footed_Albatross_1")
    assert len(train) == 4 and len(test) == 2  # is_train = k % 2 == 0 with k = 0, 1, 2
    first = train[0]
    assert first.image_id == "001.Black_footed_Albatross_0/Black_Footed_Albatross_000_1.jpg"
    assert first.label == 0 and first.size == (50, 40)
    # bounding_boxes "5.0 4.0 20.0 30.0" -> (x, y, x + w, y + h), as wsolevaluation's metadata
    assert first.boxes.tolist() == [[5, 4, 25, 34]]
    assert train[-1].label == 1  # class id 2 -> label 1 (1-based ids)


def test_cub_accepts_the_archive_folder_itself(cub_root: Path):
    assert len(read_cub(cub_root / "CUB_200_2011")[1]) == 4


def test_cub_box_touching_the_border_is_clipped_to_w_minus_1(tmp_path: Path):
    root = write_cub(tmp_path)
    boxes = root / "CUB_200_2011" / "bounding_boxes.txt"
    lines = boxes.read_text().splitlines()
    lines[0] = "1 10.0 0.0 40.0 40.0"  # x + w = 50 = W, y + h = 40 = H
    boxes.write_text("\n".join(lines) + "\n")
    _, train, _ = read_cub(root)
    assert train[0].boxes.tolist() == [[10, 0, 49, 39]]


@pytest.mark.parametrize("file,line,content,message", [
    ("bounding_boxes.txt", 2, "2 5.0 4.0 twenty 30.0", "width must be float"),
    ("bounding_boxes.txt", 1, "1 5.0 4.0 60.0 30.0", "outside the 50x40 image"),
    ("bounding_boxes.txt", 1, "1 5.0 4.0", "expected 5 fields"),
    ("image_class_labels.txt", 3, "99 1", "image id 99 is not in images.txt"),
    ("train_test_split.txt", 1, "1 7", "is_train must be 0 or 1"),
    ("image_class_labels.txt", 1, "1 9", "class id 9 outside 1..2"),
])
def test_cub_malformed_lines_name_file_and_line(tmp_path, file, line, content, message):
    root = write_cub(tmp_path)
    path = root / "CUB_200_2011" / file
    lines = path.read_text().splitlines()
    lines[line - 1] = content
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputFileError, match=message) as err:
        read_cub(root)
    assert file in str(err.value)


def test_cub_id_missing_from_one_file(tmp_path):
    root = write_cub(tmp_path)
    path = root / "CUB_200_2011" / "bounding_boxes.txt"
    path.write_text("\n".join(path.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(InputFileError, match="image id 6 has no line in bounding_boxes.txt"):
        read_cub(root)


def test_cub_missing_and_corrupt_images(tmp_path):
    root = write_cub(tmp_path)
    images = sorted((root / "CUB_200_2011" / "images").rglob("*.jpg"))
    images[1].write_bytes(b"not a jpeg")
    with pytest.raises(InputFileError, match=r"images.txt:2: unreadable image"):
        read_cub(root)
    images[1].unlink()
    with pytest.raises(InputFileError, match=r"images.txt:2: image file not found"):
        read_cub(root)


def test_cub_missing_root_and_missing_files(tmp_path):
    with pytest.raises(WsolbenchError, match="dataset root not found"):
        CUBDataset.load(tmp_path / "nope")
    with pytest.raises(WsolbenchError, match="needs --data-root"):
        CUBDataset.load(None)
    root = write_cub(tmp_path)
    (root / "CUB_200_2011" / "train_test_split.txt").unlink()
    with pytest.raises(InputFileError, match="train_test_split.txt: file not found"):
        read_cub(root)


def _metadata_fixture(folder: Path) -> Path:
    """wsolevaluation's files exactly: comma-separated, ids with '/', no final newline."""
    folder.mkdir(parents=True)
    ids = ["val/ILSVRC2012_val_00000001.JPEG", "001.Bird/a_1.jpg"]
    (folder / "image_ids.txt").write_text("\n".join(ids))
    (folder / "class_labels.txt").write_text(f"{ids[0]},65\n{ids[1]},0")
    (folder / "image_sizes.txt").write_text(f"{ids[0]},500,375\n{ids[1]},216,136")
    (folder / "localization.txt").write_text(
        f"{ids[0]},111,108,441,193\n{ids[0]},0,0,10,10\n{ids[1]},5,4,215,134")
    return folder


def test_metadata_reader_keeps_all_boxes_in_order(tmp_path):
    records = read_metadata(_metadata_fixture(tmp_path / "test"), tmp_path / "images")
    assert [r.label for r in records] == [65, 0]
    assert records[0].boxes.tolist() == [[111, 108, 441, 193], [0, 0, 10, 10]]
    assert records[0].size == (500, 375)
    assert records[1].path == tmp_path / "images" / "001.Bird" / "a_1.jpg"


def test_metadata_roundtrip_is_byte_identical(tmp_path):
    src = _metadata_fixture(tmp_path / "a")
    write_metadata(tmp_path / "b", read_metadata(src, tmp_path))
    for name in ("image_ids.txt", "class_labels.txt", "image_sizes.txt", "localization.txt"):
        assert (tmp_path / "b" / name).read_bytes() == (src / name).read_bytes()


@pytest.mark.parametrize("file,content,message", [
    ("localization.txt", "x/unknown.jpg,1,1,2,2", "is not in image_ids.txt"),
    ("localization.txt", "001.Bird/a_1.jpg,5,4,216,134", "outside the 216x136 image"),
    ("localization.txt", "001.Bird/a_1.jpg,9,4,5,134", "0 <= x0 <= x1"),
    ("class_labels.txt", "001.Bird/a_1.jpg,zero", "label must be int"),
    ("image_ids.txt", "001.Bird/a_1.jpg", "duplicate image id"),
])
def test_metadata_bad_lines(tmp_path, file, content, message):
    folder = _metadata_fixture(tmp_path / "m")
    path = folder / file
    lines = path.read_text().split("\n")
    if file == "class_labels.txt":  # replace the image's line (a second line is a duplicate)
        lines = lines[:-1]
    path.write_text("\n".join(lines + [content]))
    with pytest.raises(InputFileError, match=message) as err:
        read_metadata(folder, tmp_path)
    assert file in str(err.value)


def test_metadata_image_without_label(tmp_path):
    folder = _metadata_fixture(tmp_path / "m")
    (folder / "class_labels.txt").write_text("val/ILSVRC2012_val_00000001.JPEG,65")
    with pytest.raises(InputFileError, match="'001.Bird/a_1.jpg'.*has no line here"):
        read_metadata(folder, tmp_path)


def test_trt_ilsvrc_randaugment_survives_zero_bit_posterize():
    """timm's `rand-m9-mstd0.5-inc1` asks PIL for 0-bit posterize when a magnitude reaches 10;
    PIL >= 10 raises. The transform must run (0 bits -> black, as the old PIL did)."""
    import random

    import numpy as np
    import torch
    from PIL import Image

    from wsolbench.data.torch_dataset import _posterize, build_transform

    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), np.uint8))
    assert np.asarray(_posterize(image, 0)).max() == 0
    assert np.array_equal(np.asarray(_posterize(image, 8)), np.asarray(image))
    transform = build_transform(True, 32, 36, (0.5,) * 3, (0.25,) * 3, "timm_randaug")
    random.seed(0)
    torch.manual_seed(0)
    for _ in range(2000):  # ~0.3 % of calls draw a 0-bit posterize: hit with near certainty
        assert transform(image).shape == (3, 32, 32)


def test_an_unknown_training_transform_is_refused_not_replaced():
    """`build_transform` knows the names `MethodConfig` accepts (wsolbench.method_config
    TRAIN_TRANSFORMS); any other is an error, not a silent fall-back to resize-crop-flip."""
    from wsolbench.data.torch_dataset import build_transform
    from wsolbench.errors import WsolbenchError
    from wsolbench.method_config import TRAIN_TRANSFORMS

    for recipe in TRAIN_TRANSFORMS:
        assert build_transform(True, 32, 36, (0.5,) * 3, (0.25,) * 3, recipe) is not None
    with pytest.raises(WsolbenchError, match="train_transform must be one of"):
        build_transform(True, 32, 36, (0.5,) * 3, (0.25,) * 3, "randaug")
