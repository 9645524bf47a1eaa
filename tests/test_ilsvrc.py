"""ILSVRC readers on fixtures in the exact layouts; synth-imagenet; multi-box matching."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsolbench.protocols.loc_acc import LocAcc
from wsolbench.protocols.maxboxacc import MaxBoxAccV2
from wsolbench.data.ilsvrc import ILSVRCDataset, read_voc_xml
from wsolbench.errors import InputFileError, WsolbenchError
from wsolbench.protocol import EvalBatch

WNIDS = ["n01440764", "n01443537", "n01751748"]


def voc(path: Path, width: int, height: int, objects) -> None:
    body = "".join(f"""
    <object>
        <name>{name}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>
        <bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox>
    </object>""" for name, (x0, y0, x1, y1) in objects)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""<annotation>
    <folder>val</folder>
    <filename>{path.stem}</filename>
    <source><database>ILSVRC_2012</database></source>
    <size><width>{width}</width><height>{height}</height><depth>3</depth></size>
    <segmented>0</segmented>{body}
</annotation>
""")


def image(path: Path, size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size).save(path, format="JPEG")


def write_ilsvrc(root: Path, nested_val: bool = False) -> Path:
    for wnid in reversed(WNIDS):  # creation order must not matter: labels follow sorted wnids
        for k in range(2):
            image(root / "train" / wnid / f"{wnid}_{k}.JPEG")
    val = [("ILSVRC2012_val_00000001", "n01751748", [(11, 8, 31, 19)]),
           ("ILSVRC2012_val_00000002", "n01440764", [(0, 0, 9, 9), (20, 10, 39, 29)])]
    for stem, wnid, boxes in val:
        folder = root / "val" / wnid if nested_val else root / "val"
        image(folder / f"{stem}.JPEG")
        voc(root / "val_boxes" / f"{stem}.xml", 40, 30, [(wnid, b) for b in boxes])
    return root


def test_labels_follow_sorted_wnids_and_all_boxes_are_kept(tmp_path):
    data = ILSVRCDataset.load(write_ilsvrc(tmp_path))
    assert data.class_names == tuple(WNIDS)
    assert [r.label for r in data.train] == [0, 0, 1, 1, 2, 2]
    first, second = data.test
    assert first.image_id == "val/ILSVRC2012_val_00000001.JPEG" and first.label == 2
    assert second.boxes.tolist() == [[0, 0, 9, 9], [20, 10, 39, 29]]  # file order, no offset
    assert first.size == (40, 30)


def test_val_in_class_folders(tmp_path):
    data = ILSVRCDataset.load(write_ilsvrc(tmp_path, nested_val=True))
    assert data.test[0].image_id == "val/n01440764/ILSVRC2012_val_00000002.JPEG"
    assert data.test[0].label == 0


def test_fullsup_metadata_with_slashes_in_ids(tmp_path):
    root = write_ilsvrc(tmp_path)
    meta = root / "metadata" / "ILSVRC" / "val"
    meta.mkdir(parents=True)
    image(root / "val2" / "2" / "0.jpeg")
    (meta / "image_ids.txt").write_text("val2/2/0.jpeg")
    (meta / "class_labels.txt").write_text("val2/2/0.jpeg,2")
    (meta / "image_sizes.txt").write_text("val2/2/0.jpeg,40,30")
    (meta / "localization.txt").write_text("val2/2/0.jpeg,1,1,5,5\nval2/2/0.jpeg,6,6,9,9")
    data = ILSVRCDataset.load(root)
    assert data.fullsup[0].path == root / "val2" / "2" / "0.jpeg"
    assert data.fullsup[0].boxes.shape == (2, 4)


@pytest.mark.parametrize("objects,message", [
    ([("n01440764", (0, 0, 40, 9))], "outside the 40x30 <size>"),
    ([("n01440764", (0, 0, 9, 9)), ("n01751748", (1, 1, 5, 5))], "different classes"),
    ([("n09999999", (0, 0, 9, 9))], "not a class of the train folders"),
])
def test_bad_xml(tmp_path, objects, message):
    root = write_ilsvrc(tmp_path)
    xml = root / "val_boxes" / "ILSVRC2012_val_00000002.xml"
    voc(xml, 40, 30, objects)
    with pytest.raises(InputFileError, match=message) as err:
        ILSVRCDataset.load(root)
    assert "ILSVRC2012_val_00000002.xml" in str(err.value)


def test_xml_name_disagreeing_with_the_class_folder(tmp_path):
    root = write_ilsvrc(tmp_path, nested_val=True)
    voc(root / "val_boxes" / "ILSVRC2012_val_00000002.xml", 40, 30,
        [("n01443537", (0, 0, 9, 9))])
    with pytest.raises(InputFileError, match="disagrees with the image's class folder"):
        ILSVRCDataset.load(root)


def test_missing_xml_duplicate_ids_and_missing_root(tmp_path):
    root = write_ilsvrc(tmp_path / "a")
    (root / "val_boxes" / "ILSVRC2012_val_00000001.xml").unlink()
    with pytest.raises(InputFileError, match="box annotation not found"):
        ILSVRCDataset.load(root)
    root = write_ilsvrc(tmp_path / "b")
    image(root / "val" / "n01440764" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(WsolbenchError, match="duplicate image id"):
        ILSVRCDataset.load(root)
    with pytest.raises(WsolbenchError, match="dataset root not found"):
        ILSVRCDataset.load(tmp_path / "nowhere")


def test_read_voc_xml_returns_size_names_and_boxes(tmp_path):
    voc(tmp_path / "x.xml", 500, 375, [("n01751748", (111, 108, 441, 193))])
    size, names, boxes = read_voc_xml(tmp_path / "x.xml")
    assert size == (500, 375) and names == ["n01751748"]
    assert boxes.tolist() == [[111, 108, 441, 193]]


def test_multi_box_matching_uses_every_box_unless_first_box_only():
    raw = np.zeros((224, 224))
    raw[150:200, 150:200] = 1.0
    boxes = np.array([[0, 0, 40, 40], [150, 150, 199, 199]])
    batch = EvalBatch(["a.JPEG"], [raw], np.array([0]), [boxes], np.array([[224, 224]]),
                      logits=np.array([[1.0, 0.0]]))
    results = {}
    for first in (False, True):
        v2, loc = MaxBoxAccV2(cam_curve_interval=0.1, first_box_only=first), LocAcc(
            first_box_only=first)
        v2.update(batch)
        loc.update(batch)
        results[first] = (v2.compute()["per_iou"]["50"]["max_acc"],
                          loc.compute()["gt_known_loc"])
    assert results[False] == (100.0, 100.0) and results[True] == (0.0, 0.0)


def test_synth_imagenet_layout_and_multi_instance(tmp_path):
    from wsolbench.config import apply_overrides
    from wsolbench.data.synth import SynthImageNetConfig, SynthImageNetDataset

    cfg = apply_overrides(SynthImageNetConfig(), {
        "num_classes": "6", "train_per_class": "2", "test_per_class": "6",
        "fullsup_per_class": "1", "multi_instance_prob": "0.5"})
    data = SynthImageNetDataset.load(tmp_path, config=cfg, workers=1)
    assert data.class_names == tuple(f"n{c:08d}" for c in range(6))
    assert len(data.train) == 12 and len(data.test) == 36 and len(data.fullsup) == 6
    assert any(len(r.boxes) > 1 for r in data.test)
    for r in data.test:
        mask = np.asarray(Image.open(r.mask_paths[0])) > 0
        ys, xs = np.nonzero(mask)
        union = r.boxes.min(0)[:2].tolist() + r.boxes.max(0)[2:].tolist()
        assert union == [xs.min(), ys.min(), xs.max(), ys.max()]
    again = SynthImageNetDataset.load(tmp_path / "again", config=cfg, workers=2)
    for a, b in zip(data.test, again.test):
        assert a.path.read_bytes() == b.path.read_bytes()
