"""TS-CAM and TRT on timm ViTs: the math of docs/methods.md §1–2 on small models."""

import pytest
import torch

from wsolbench.methods.trt import TRT, TRTConfig, masked_token_softmax, select_tokens
from wsolbench.methods.tscam import TSCAM, TSCAMConfig
from wsolbench.attention import capture_attention, capture_class_attention
from wsolbench.method import read_state_dict


def tiny(cls, cfg_cls, size=32, model="vit_synth", **kw):
    torch.manual_seed(0)
    return cls(cfg_cls(model=model, image_size=size, resize_size=size, **kw), 4).eval()


def manual_attentions(vit, images):
    """Softmax attention of every block, recomputed from the qkv weights by hand."""
    x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(images))))
    out = []
    for block in vit.blocks:
        a = block.attn
        b, n, _ = x.shape
        qkv = a.qkv(block.norm1(x)).reshape(b, n, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4)
        out.append(((qkv[0] * a.scale) @ qkv[1].transpose(-2, -1)).softmax(-1))
        x = block(x)
    return out


def test_attention_capture_matches_hand_computation_and_releases_hooks():
    model = tiny(TSCAM, TSCAMConfig)
    images = torch.randn(2, 3, 32, 32)
    blocks = list(model.vit.blocks)
    with torch.no_grad(), capture_attention(blocks) as captured:
        model.vit.forward_features(images)
    expected = manual_attentions(model.vit, images)
    assert len(captured) == len(blocks)
    for got, want in zip(captured, expected):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got.sum(-1), torch.ones_like(got.sum(-1)))
    assert all(not b.attn.attn_drop._forward_hooks for b in blocks)
    assert all(b.attn.fused_attn == blocks[0].attn.fused_attn for b in blocks)


def test_class_row_capture_keeps_fused_attention_and_matches_the_full_maps():
    model = tiny(TSCAM, TSCAMConfig)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), capture_class_attention(model.vit.blocks, 1) as rows:
        assert all(b.attn.fused_attn for b in model.vit.blocks)
        model.vit.forward_features(images)
    for row, full in zip(rows, manual_attentions(model.vit, images)):
        torch.testing.assert_close(row, full[:, :, 0, 1:].mean(1), atol=1e-6, rtol=1e-5)
    assert all(not b.attn.qkv._forward_hooks for b in model.vit.blocks)


def test_repeated_localize_keeps_no_tensors_alive():
    import gc

    model = tiny(TRT, TRTConfig)
    images, labels = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])

    def live_tensors() -> int:
        gc.collect()
        return sum(torch.is_tensor(o) for o in gc.get_objects())

    model.localize(images, labels)
    before = live_tensors()
    for _ in range(10):
        model.localize(images, labels)
    assert live_tensors() <= before + 2


def test_hooks_are_released_when_the_forward_fails():
    model = tiny(TSCAM, TSCAMConfig)
    with pytest.raises(RuntimeError), capture_attention(model.vit.blocks):
        model.vit.forward_features(torch.randn(1, 5, 32, 32))  # wrong channel count
    assert all(not b.attn.attn_drop._forward_hooks for b in model.vit.blocks)


def test_tscam_map_is_attention_times_semantic_map():
    """localize() and map_factors (what benchmarks/map_factors.py scores): A* recomputed from
    the qkv weights, S_c from the conv head; the map is their product, bit for bit."""
    model = tiny(TSCAM, TSCAMConfig)
    images, labels = torch.randn(2, 3, 32, 32), torch.tensor([1, 3])
    with torch.no_grad():
        out = model.localize(images, labels)
        factors = model.map_factors(images, labels)
        attn = manual_attentions(model.vit, images)
        agnostic = sum(a[:, :, 0, 1:].mean(1) for a in attn).reshape(2, 4, 4)
        semantic = model.semantic_maps(images)[torch.arange(2), labels]
    torch.testing.assert_close(out.maps, agnostic * semantic, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.logits, model(images), atol=1e-5, rtol=1e-5)
    assert set(factors) == {"attention", "semantic", "map"}
    torch.testing.assert_close(factors["attention"], agnostic, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(factors["semantic"], semantic, atol=0, rtol=0)
    assert torch.equal(factors["map"], out.maps)
    assert torch.equal(factors["map"], factors["attention"] * factors["semantic"])


@pytest.mark.parametrize("stage1_map", [False, True])
def test_trt_map_factors_are_the_refined_attention_and_the_cam_branch(stage1_map):
    """TRT's factors: the refined attention (from m, the selection and lambda of one pass)
    and M_C of the label; with stage1_map the map is the attention alone."""
    model = tiny(TRT, TRTConfig, thresh=0.6, stage1_map=stage1_map)
    images, labels = torch.randn(3, 3, 32, 32), torch.tensor([0, 2, 3])
    with torch.no_grad():
        factors = model.map_factors(images, labels)
        r = model._run(images, with_cam=True)
        refined = model.refined_attention(r["m"], r["keep"], r["lam"],
                                          renormalize=stage1_map).reshape(3, 4, 4)
        maps = model.localize(images, labels).maps
    torch.testing.assert_close(factors["attention"], refined, atol=0, rtol=0)
    assert torch.equal(factors["map"], maps)
    if stage1_map:
        assert set(factors) == {"attention", "map"}
        assert torch.equal(factors["map"], factors["attention"])
    else:
        assert set(factors) == {"attention", "semantic", "map"}
        torch.testing.assert_close(factors["semantic"], r["cam"][torch.arange(3), labels],
                                   atol=0, rtol=0)
        assert torch.equal(factors["map"], factors["attention"] * factors["semantic"])


def test_a_method_without_factors_returns_its_map():
    from wsolbench.methods.cam import CAM, CAMConfig

    torch.manual_seed(0)
    model = CAM(CAMConfig(image_size=32, resize_size=32), 4).eval()
    images, labels = torch.randn(2, 3, 32, 32), torch.tensor([1, 2])
    with torch.no_grad():
        factors = model.map_factors(images, labels)
        assert set(factors) == {"map"}
        assert torch.equal(factors["map"], model.localize(images, labels).maps)


@pytest.mark.parametrize("cls,cfg", [(TSCAM, TSCAMConfig), (TRT, TRTConfig)])
@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("model,patch", [("vit_synth", 8), ("vit_synth_p4", 4)])
def test_two_image_sizes_give_the_model_token_grid(cls, cfg, size, model, patch):
    model = tiny(cls, cfg, size=size, model=model)
    out = model.localize(torch.randn(2, 3, size, size), torch.tensor([0, 3]))
    grid = size // patch
    assert out.maps.shape == (2, grid, grid) and out.logits.shape == (2, 4)
    assert torch.isfinite(out.maps).all()


def test_token_selection_rule():
    m = torch.tensor([[0.4, 0.1, 0.3, 0.2]])
    # sorted 0.4, 0.3, 0.2, 0.1 -> cumsum 0.4, 0.7, 0.9, 1.0: < 0.6 keeps only the first
    assert select_tokens(m, 0.6).tolist() == [[True, False, False, False]]
    # the token that crosses the threshold is excluded; 0.9 < 0.95 keeps three
    assert select_tokens(m, 0.95).tolist() == [[True, False, True, True]]
    # the top token alone holds >= thresh: nothing is selected
    assert select_tokens(torch.tensor([[0.7, 0.2, 0.1]]), 0.6).tolist() == [[False] * 3]


def test_masked_softmax_and_refined_attention():
    keep = torch.tensor([[True, False, True, False]])
    scores = torch.tensor([[50.0, 80.0, 49.0, -3.0]])  # large values: stable without overflow
    lam = masked_token_softmax(scores, keep)
    assert lam[0, 1] == 0 and lam[0, 3] == 0
    torch.testing.assert_close(lam.sum(), torch.tensor(1.0))
    m = torch.tensor([[0.4, 0.1, 0.3, 0.2]])
    refined = TRT.refined_attention(m, keep, lam, renormalize=False)
    torch.testing.assert_close(refined.sum(), torch.tensor(1.0))
    assert refined[0, 1] == m[0, 1] and refined[0, 3] == m[0, 3]
    empty = torch.zeros_like(keep)
    zero = masked_token_softmax(scores, empty)
    assert (zero == 0).all()  # empty selection: lambda = 0, no NaN
    for renorm in (False, True):
        torch.testing.assert_close(TRT.refined_attention(m, empty, zero, renorm), m)


def test_trt_preliminary_attention_sums_to_one_and_selection_is_used():
    model = tiny(TRT, TRTConfig, thresh=0.6)
    with torch.no_grad():
        r = model._run(torch.randn(3, 3, 32, 32), with_cam=True)
    torch.testing.assert_close(r["m"].sum(1), torch.ones(3))
    assert (r["lam"][~r["keep"]] == 0).all()
    torch.testing.assert_close(r["lam"].sum(1), torch.ones(3), atol=1e-4, rtol=0)


def test_trt_token_selection_keeps_the_tokens_of_the_hand_computed_attention():
    """token_selection (what benchmarks/trt_selection.py counts) = the threshold rule on m
    recomputed by hand: class-token rows of the first L-1 blocks, head mean, sum, L1."""
    model = tiny(TRT, TRTConfig, thresh=0.6)
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        rows = [a[:, :, 0, 1:].mean(1) for a in manual_attentions(model.vit, images)[:-1]]
    m = torch.stack(rows).sum(0)
    m = m / m.sum(1, keepdim=True)
    keep = model.token_selection(images)
    assert keep.shape == (3, 16) and keep.dtype == torch.bool
    assert torch.equal(keep, select_tokens(m, 0.6))
    assert ((m * keep).sum(1) < 0.6).all()


def test_trt_stage_two_trains_only_the_cam_branch():
    model = tiny(TRT, TRTConfig)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = list(model.begin_stage("cam"))
    model.set_train_mode("cam")
    assert not model.vit.training and model.cam_tr.training
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    loss = torch.nn.functional.cross_entropy(
        model.training_logits(torch.randn(4, 3, 32, 32), "cam"), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    optimizer.step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("cam_") for k in changed)
    stage1 = set(n for n, p in model.named_parameters()
                 if p in set(model.begin_stage("tpsm")))
    assert stage1 and not any(n.startswith("cam_") for n in stage1)


def test_deit_weights_round_trip_and_init_copies_the_last_block(tmp_path):
    source = tiny(TSCAM, TSCAMConfig)
    torch.save({k.removeprefix("vit."): v for k, v in source.state_dict().items()
                if k.startswith("vit.")}, tmp_path / "deit.pth")
    state = read_state_dict(tmp_path / "deit.pth")
    target = tiny(TRT, TRTConfig)
    torch.manual_seed(5)
    target.load_pretrained(state)
    last = len(target.vit.blocks) - 1
    torch.testing.assert_close(target.vit.blocks[0].attn.qkv.weight,
                               source.vit.blocks[0].attn.qkv.weight)
    torch.testing.assert_close(target.score_layer.attn.qkv.weight,
                               source.vit.blocks[last].attn.qkv.weight)
    torch.testing.assert_close(target.cam_norm.weight, source.vit.norm.weight)


def test_token_centres_in_boxes_by_hand():
    """grid_cells_in_boxes, the on-object test of benchmarks/trt_selection.py and
    map_factors.py. 4x4 grid on a 64x32 (W x H) image: token centres at x = 8, 24, 40, 56 and y = 4, 12, 20, 28. Box A (0, 0, 15, 7) covers
    [0, 16) x [0, 8): token (0, 0) only; box B (40, 20, 40, 20) covers [40, 41) x [20, 21):
    token (2, 2) (centre (40, 20)); the second image has no box at all."""
    from pathlib import Path

    import numpy as np

    from wsolbench.boxes import grid_cells_in_boxes
    from wsolbench.data.records import Record

    boxes = np.array([[0, 0, 15, 7], [40, 20, 40, 20]], dtype=np.int64)
    records = [Record("a.png", Path("a.png"), 0, (64, 32), boxes),
               Record("b.png", Path("b.png"), 0, (64, 32), np.zeros((0, 4), np.int64))]
    inside = grid_cells_in_boxes(records, (4, 4))
    expected = np.zeros((2, 16), bool)
    expected[0, [0 * 4 + 0, 2 * 4 + 2]] = True
    assert np.array_equal(inside, expected)


def test_trt_selection_reads_a_real_data_run_from_its_data_root(tmp_path, cub_root):
    """A CUB run records no generator config (its `dataset_info` is empty, as the runner
    writes it for real data): its test split is read from --data-root."""
    import numpy as np

    from wsolbench.data.cub import CUBDataset

    resolved = {"dataset": "cub", "dataset_info": {}}
    from wsolbench.runner import run_test_split

    records, num_classes = run_test_split(resolved, cub_root)
    expected = CUBDataset.load(cub_root)
    assert num_classes == expected.num_classes == 2
    assert [r.image_id for r in records] == [r.image_id for r in expected.test]
    assert all(np.array_equal(a.boxes, b.boxes) for a, b in zip(records, expected.test))


def _benchmark_script(name):
    """benchmarks/<name>.py as a module (benchmarks/ is not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


@pytest.mark.parametrize("evidence", ["on_object", "off_object"])
def test_the_locality_probe_finds_class_evidence_where_it_was_planted(evidence):
    """benchmarks/token_locality.py's probe on planted grids: the class is written (a one-hot
    channel) into the tokens of a random 2x2 'object' of a 4x4 grid, or into every other
    token; the probe must classify perfectly and its map must follow the planted tokens."""
    import numpy as np

    script = _benchmark_script("token_locality")
    rng = torch.Generator().manual_seed(0)

    def planted(n):
        labels = torch.arange(n) % 3
        grids = 0.05 * torch.randn(n, 6, 4, 4, generator=rng)
        inside = torch.zeros(n, 4, 4, dtype=torch.bool)
        corners = torch.randint(0, 3, (n, 2), generator=rng)
        for i, (r, c) in enumerate(corners.tolist()):
            inside[i, r:r + 2, c:c + 2] = True
        where = inside if evidence == "on_object" else ~inside
        grids[torch.arange(n), labels] += where.float()
        return grids, labels, inside.reshape(n, 16).numpy()

    train, train_labels, _ = planted(90)
    test, test_labels, inside = planted(30)
    accuracy, maps = script.probe(train, train_labels, test, test_labels, 3, epochs=40)
    placed = script.placement(maps, inside)
    assert accuracy == 100.0 and placed["box_tokens_%"] == 25.0
    # The 3x3 head spreads evidence one token around it: measured 62.8 % and 15.6 % of the
    # mass in the 2x2 boxes (25 % for a map blind to the image), peaks in them 100 % and 3.3 %.
    if evidence == "on_object":
        assert placed["mass_in_box_%"] > 50 and placed["peak_in_box_%"] >= 90
    else:
        assert placed["mass_in_box_%"] < 20 and placed["peak_in_box_%"] <= 10
    assert maps.shape == (30, 4, 4) and np.isfinite(maps).all()
