"""Tracker models (tasks.tracking.model): one-stream (OSTrack) on ViT / BEiT, two-stream (SwinTrack) on Swin;
shapes, weights, BEiT bias across grids, decoding, losses against hand-computed values, learnability. Tiny CPU
models."""

from __future__ import annotations

import copy
import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from timm.models import beit as timm_beit

from benchmark.backbone import _resized_rel_pos_bias
from benchmark.checkpoint import create_random, load_canonical, save_canonical
from benchmark.errors import BenchmarkError
from benchmark.layer_decay import layer_decay_param_groups, trunk_layer_ids
from tasks.tracking.model import (
    OneStreamTracker,
    TwoStreamTracker,
    box_cxcywh_to_xyxy,
    box_iou_giou,
    build_tracker,
    candidate_elimination,
    ce_keep_rate,
    ce_template_token,
    centernet_focal_loss,
    gaussian_heatmap,
    joint_rel_pos_bias,
    positive_cells,
    varifocal_loss,
)
from tests.conftest import TINY_SWIN, TINY_VIT

BEIT = "beit_base_patch16_224"
SPECS = {
    "vit": TINY_VIT,
    # SimMIM's ViT: no absolute pos-embed, one relative-position bias shared by all blocks
    "beit_shared": (BEIT, dict(img_size=32, patch_size=4, embed_dim=32, depth=2, num_heads=2, use_abs_pos_emb=False,
                               use_rel_pos_bias=False, use_shared_rel_pos_bias=True)),
    # per-block tables and an absolute pos-embed
    "beit_block": (BEIT, dict(img_size=32, patch_size=4, embed_dim=32, depth=2, num_heads=2, use_abs_pos_emb=True)),
    "swin": TINY_SWIN,
    "swinv2": ("swinv2_tiny_window8_256", dict(TINY_SWIN[1])),
}
# (template, search): G = 8 for the 4-px-patch ViTs (the native grid), 4 for Swin's stride-16 stage 3
SIZES = {"vit": (16, 32), "beit_shared": (16, 32), "beit_block": (16, 32), "swin": (32, 64), "swinv2": (32, 64)}
SMALL = dict(head_channels=32, fusion_dim=32, fusion_layers=2, fusion_heads=4, fusion_drop_path=0.0)
GT = torch.tensor([[0.45, 0.55, 0.30, 0.25], [0.60, 0.40, 0.20, 0.35]])


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("trk")
    out = {}
    for name, (arch, kwargs) in SPECS.items():
        sd, meta = create_random(arch, dict(kwargs), seed=3)
        out[name] = str(save_canonical(root / f"{name}.pth", sd, meta))
    sd, meta = create_random("resnet18", {})
    out["resnet"] = str(save_canonical(root / "resnet.pth", sd, meta))
    sd, meta = create_random("eva02_tiny_patch14_224", dict(img_size=32, patch_size=4, embed_dim=32, depth=1,
                                                            num_heads=2))
    out["eva02"] = str(save_canonical(root / "eva02.pth", sd, meta))
    return out


def _build(ckpts, name, **kw):
    t, s = SIZES[name]
    return build_tracker(ckpts[name], template_size=kw.pop("template_size", t), search_size=kw.pop("search_size", s),
                         **{**SMALL, **kw})


def _inputs(model, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 3, model.template_size, model.template_size, generator=g),
            torch.randn(batch, 3, model.search_size, model.search_size, generator=g))


def _total(losses):
    return sum(v for k, v in losses.items() if k.startswith("loss"))


# ---------------------------------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("name", list(SPECS))
def test_forward_loss_decode_shapes_and_gradients(ckpts, name):
    model = _build(ckpts, name)
    two = name.startswith("swin")
    assert isinstance(model, TwoStreamTracker if two else OneStreamTracker)
    g = model.feat_size
    assert g == (4 if two else 8) and model.template_feat_size == g // 2
    out = model(*_inputs(model))
    assert out["score"].shape == (2, 1, g, g)
    if two:
        assert out["box"].shape == (2, 4, g, g)
    else:
        assert out["size"].shape == out["offset"].shape == (2, 2, g, g)
    losses = model.loss(out, GT)
    assert set(losses) == ({"loss_varifocal", "loss_giou", "iou"} if two else
                           {"loss_focal", "loss_giou", "loss_l1", "iou"})
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    assert 0 <= losses["iou"] <= 1 and not losses["iou"].requires_grad
    boxes, scores = model.decode(out, model.hann_window())
    assert boxes.shape == (2, 4) and scores.shape == (2,) and ((scores > 0) & (scores < 1)).all()
    _total(losses).backward()
    # every parameter learns (no unused parameter under DDP): trunk, position embeddings, head
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, no_grad
    assert model.trunk.patch_embed.proj.weight.grad.abs().sum() > 0
    if name in ("vit", "beit_block"):
        assert model.trunk.pos_embed_template.grad.abs().sum() > 0
        assert model.trunk.pos_embed_search.grad.abs().sum() > 0
    tables = [p for n, p in model.trunk.named_parameters() if "relative_position_bias_table" in n]
    assert all(p.grad.abs().sum() > 0 for p in tables)
    copy.deepcopy(model)
    pickle.loads(pickle.dumps(model))  # EMA and workers copy models


def test_wrong_input_size_is_a_clear_error(ckpts):
    model = _build(ckpts, "vit")
    with pytest.raises(BenchmarkError, match="search crop has shape"):
        model(torch.randn(1, 3, 16, 16), torch.randn(1, 3, 48, 48))


def test_drop_path_reaches_the_trunk(ckpts):
    model = _build(ckpts, "vit", drop_path=0.2)
    assert model.trunk.blocks[-1].drop_path1.drop_prob == pytest.approx(0.2)


# ---------------------------------------------------------------------------------------------------- weights

def test_one_stream_position_embeddings_and_trunk_weights(ckpts):
    ref = load_canonical(ckpts["vit"]).state_dict
    model = _build(ckpts, "vit")
    trunk = model.trunk
    patch_pos = ref["pos_embed"][:, 1:]  # the class token's entry is dropped with the token
    # the search grid is the native one: the pre-trained embedding itself; the template grid is resampled
    torch.testing.assert_close(trunk.pos_embed_search.data, patch_pos, rtol=0, atol=0)
    torch.testing.assert_close(trunk.pos_embed_template.data,
                               resample_abs_pos_embed(patch_pos, new_size=[4, 4], old_size=[8, 8],
                                                      num_prefix_tokens=0), rtol=0, atol=0)
    own = trunk.state_dict()
    for k, v in own.items():
        if k in ref:
            torch.testing.assert_close(v, ref[k], rtol=0, atol=0, msg=k)
    assert set(own) - set(ref) == {"pos_embed_template", "pos_embed_search"}
    assert set(ref) - set(own) == {"cls_token", "pos_embed"}
    # layer decay: the new embeddings sit in the stem, as the pre-trained one did; the head is the head
    layer_map, head = trunk_layer_ids(trunk)
    assert layer_map["pos_embed_template"] == layer_map["pos_embed_search"] == layer_map["patch_embed.proj.weight"]
    groups = layer_decay_param_groups(model, 1e-3, 0.05, 0.5)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    assert scale[id(trunk.pos_embed_search)] == pytest.approx(0.5 ** 3)  # 2 blocks: stem is 3 steps below the head
    assert scale[id(model.head.score[-1].weight)] == 1.0


@pytest.mark.parametrize("name", ["swin", "swinv2"])
def test_two_stream_trunk_weights_equal_checkpoint(ckpts, name):
    ref = load_canonical(ckpts[name]).state_dict
    model = _build(ckpts, name)
    own = model.trunk.state_dict()
    assert own and set(own) <= set(ref)
    for k, v in own.items():
        torch.testing.assert_close(v, ref[k], rtol=0, atol=0, msg=k)
    # only the stages after stage 3 and the final norm are pruned
    assert all(k.startswith(("layers.3.", "norm.")) for k in set(ref) - set(own))


def test_two_stream_shares_the_trunk_between_streams(ckpts):
    """Template and search run through the same trunk: a template equal to the search gives equal stage-3 maps."""
    model = _build(ckpts, "swin", template_size=64).eval()
    seen = []
    model.backbone_norm.register_forward_hook(lambda m, a, o: seen.append(o))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        model(x, x)
    torch.testing.assert_close(seen[0], seen[1])


# ---------------------------------------------------------------------------------------------------- BEiT bias

def _manual_beit_attention(attn, x, bias):
    """timm BEiT attention written out, with ``bias`` (heads, N, N) added to the logits."""
    b, n, c = x.shape
    qkv_bias = torch.cat([attn.q_bias, torch.zeros_like(attn.q_bias), attn.v_bias]) if attn.q_bias is not None \
        else None
    q, k, v = F.linear(x, attn.qkv.weight, qkv_bias).reshape(b, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    weights = ((q * attn.scale) @ k.transpose(-2, -1) + bias).softmax(-1)
    return attn.proj((weights @ v).transpose(1, 2).reshape(b, n, c))


@pytest.mark.parametrize("name", ["beit_shared", "beit_block"])
@pytest.mark.parametrize("search", [32, 48])  # the native grid (8) and another one (12)
def test_beit_bias_within_grids_resampled_and_zero_across(ckpts, name, search):
    model = _build(ckpts, name, search_size=search).eval()
    trunk = model.trunk
    gz, gx = 4, search // 4
    nz, nx = gz * gz, gx * gx
    if name == "beit_shared":
        table, window = trunk.rel_pos_bias.relative_position_bias_table, trunk.rel_pos_bias.window_size
    else:
        attn = trunk.blocks[1].attn
        table, window = attn.relative_position_bias_table, attn.window_size
    bias = joint_rel_pos_bias(table, window, (gz, gz), (gx, gx))
    assert bias.shape == (2, nz + nx, nz + nx)
    # within each grid: the single-image bias of that grid (benchmark.backbone's resampled table, class token out)
    torch.testing.assert_close(bias[:, :nz, :nz], _resized_rel_pos_bias(table, window, (gz, gz))[:, 1:, 1:])
    torch.testing.assert_close(bias[:, nz:, nz:], _resized_rel_pos_bias(table, window, (gx, gx))[:, 1:, 1:])
    if search == 32:  # native grid: exactly the pre-trained bias, as timm computes it
        native = trunk.rel_pos_bias() if name == "beit_shared" else timm_beit.Attention._get_rel_pos_bias(attn)[0]
        torch.testing.assert_close(bias[:, nz:, nz:], native[:, 1:, 1:], rtol=0, atol=0)
    # across the grids: zero
    assert not bias[:, :nz, nz:].any() and not bias[:, nz:, :nz].any()

    # the trunk really attends with it: the shared bias each block receives, and each block's own attention
    received = []
    for blk in trunk.blocks:
        blk.register_forward_pre_hook(lambda m, a, kw: received.append(kw.get("shared_rel_pos_bias")),
                                      with_kwargs=True)
    x = torch.randn(2, nz + nx, 32)
    with torch.no_grad():
        model(*_inputs(model))
        for blk, shared in zip(trunk.blocks, received):
            if name == "beit_shared":
                torch.testing.assert_close(shared, bias)
                expected = bias
            else:
                assert shared is None
                expected = joint_rel_pos_bias(blk.attn.relative_position_bias_table, blk.attn.window_size,
                                              (gz, gz), (gx, gx))
            torch.testing.assert_close(blk.attn(x, shared_rel_pos_bias=shared),
                                       _manual_beit_attention(blk.attn, x, expected), atol=1e-5, rtol=1e-5)


def test_beit_joint_forward_equals_a_written_out_trunk(ckpts):
    """The search features of the tracker equal a trunk written out by hand: patch tokens of both crops (no class
    token), every block attending with the block-diagonal bias (template grid / native search grid, zero across),
    the last LayerNorm per token."""
    model = _build(ckpts, "beit_shared").eval()
    t = model.trunk
    z_img, x_img = _inputs(model, batch=1)
    seen = {}
    model.head.score.register_forward_pre_hook(lambda m, a: seen.setdefault("feat", a[0]))
    with torch.no_grad():
        model(z_img, x_img)
        z, x = t.patch_embed(z_img), t.patch_embed(x_img)
        h = torch.cat([z, x], 1)
        table, window = t.rel_pos_bias.relative_position_bias_table, t.rel_pos_bias.window_size
        bias = torch.zeros(2, 80, 80)
        bias[:, :16, :16] = _resized_rel_pos_bias(table, window, (4, 4))[:, 1:, 1:]
        bias[:, 16:, 16:] = t.rel_pos_bias()[:, 1:, 1:]
        for blk in t.blocks:
            h = h + blk.gamma_1 * _manual_beit_attention(blk.attn, blk.norm1(h), bias)  # BEiT's layer scale
            h = h + blk.gamma_2 * blk.mlp(blk.norm2(h))
        h = t.fc_norm(h)  # the mean-pooling BEiT's last LayerNorm, per token
        ref = h[:, 16:].transpose(1, 2).reshape(1, -1, 8, 8)
    torch.testing.assert_close(seen["feat"], ref, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------- decoding

def test_one_stream_decode_planted_peak_and_window(ckpts):
    model = _build(ckpts, "vit")
    g = model.feat_size
    score = torch.full((1, 1, g, g), -5.0)
    score[0, 0, 2, 5] = 3.0  # row 2, column 5
    offset = torch.zeros(1, 2, g, g)
    offset[0, :, 2, 5] = torch.tensor([0.25, 0.75])
    size = torch.full((1, 2, g, g), 0.5)
    size[0, :, 2, 5] = torch.tensor([0.3, 0.4])
    out = {"score": score, "offset": offset, "size": size}
    boxes, scores = model.decode(out)
    torch.testing.assert_close(boxes, torch.tensor([[(5 + 0.25) / 8, (2 + 0.75) / 8, 0.3, 0.4]]))
    torch.testing.assert_close(scores, torch.sigmoid(torch.tensor([3.0])))
    # a slightly weaker peak at the centre wins once the Hann window multiplies the map (OSTrack)
    score[0, 0, 0, 0] = 3.5
    score[0, 0, 4, 4] = 3.0
    assert model.decode(out)[0][0, :2].tolist() == [0.0, 0.0]
    window = model.hann_window()
    assert window.shape == (g, g) and window.min() > 0  # OSTrack's centred window has no zeros
    boxes, scores = model.decode(out, window)
    torch.testing.assert_close(boxes[0, :2], torch.tensor([4 / 8, 4 / 8]))
    torch.testing.assert_close(scores, torch.sigmoid(torch.tensor([3.0])))  # the cell's own score, unwindowed
    # the blend rule on request: weight 0 is no window, weight 1 is the window's argmax
    assert model.decode(out, window, window_rule="blend", window_weight=0.0)[0][0, :2].tolist() == [0.0, 0.0]


def test_two_stream_decode_planted_peak_and_blend_window(ckpts):
    model = _build(ckpts, "swin", search_size=128)
    g = model.feat_size
    assert g == 8
    score = torch.full((1, 1, g, g), -5.0)
    box = torch.rand(1, 4, g, g)
    box[0, :, 6, 1] = torch.tensor([0.2, 0.8, 0.1, 0.15])
    score[0, 0, 6, 1] = 2.0
    out = {"score": score, "box": box}
    boxes, _ = model.decode(out)
    torch.testing.assert_close(boxes, torch.tensor([[0.2, 0.8, 0.1, 0.15]]))
    score[0, 0, 0, 7] = 3.0  # corner: the window is 0 there (torch.hann_window, periodic=False)
    score[0, 0, 3, 4] = 1.5
    box[0, :, 3, 4] = torch.tensor([0.5, 0.45, 0.3, 0.3])
    window = model.hann_window()
    assert window[0, 7] == 0 and window.max() < 1
    assert model.decode(out)[0][0, :2].tolist() == pytest.approx([box[0, 0, 0, 7].item(), box[0, 1, 0, 7].item()])
    boxes, scores = model.decode(out, window)  # 0.51 * score + 0.49 * window (SwinTrack)
    torch.testing.assert_close(boxes, torch.tensor([[0.5, 0.45, 0.3, 0.3]]))
    torch.testing.assert_close(scores, torch.sigmoid(torch.tensor([1.5])))
    expected = 0.51 * torch.sigmoid(score[0, 0]) + 0.49 * window
    assert expected.argmax() == 3 * g + 4


# ---------------------------------------------------------------------------------------------------- losses

def test_focal_loss_hand_computed():
    pred = torch.tensor([[0.9, 0.2], [0.1, 0.5]])
    target = torch.tensor([[1.0, 0.5], [0.0, 0.0]])
    pos = math.log(0.9) * 0.1 ** 2
    neg = math.log(0.8) * 0.2 ** 2 * 0.5 ** 4 + math.log(0.9) * 0.1 ** 2 + math.log(0.5) * 0.5 ** 2
    assert centernet_focal_loss(pred, target).item() == pytest.approx(-(pos + neg), rel=1e-6)
    # no peak: divided by 1
    assert centernet_focal_loss(pred, torch.zeros(2, 2)).item() == pytest.approx(
        -(math.log(0.1) * 0.81 + math.log(0.8) * 0.04 + math.log(0.9) * 0.01 + math.log(0.5) * 0.25), rel=1e-6)


def test_giou_hand_computed():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 3.0, 1.0]])
    iou, giou = box_iou_giou(a, b)
    torch.testing.assert_close(iou, torch.tensor([1 / 7, 0.0]))
    torch.testing.assert_close(giou, torch.tensor([1 / 7 - 2 / 9, -1 / 3]))


def test_gaussian_target_peaks_at_the_centre():
    # 8x8 map; a box of 0.5 x 0.5 is 4 x 4 cells: CornerNet radius (OSTrack's formula) 1.09 -> 1, sigma 0.5
    heat = gaussian_heatmap(torch.tensor([[0.40, 0.70, 0.5, 0.5]]), 8)[0]
    assert heat.shape == (8, 8) and heat.eq(1).sum() == 1
    assert heat[6, 3] == 1  # row round(0.70 * 8) = 6, column round(0.40 * 8) = 3
    assert heat[6, 4].item() == pytest.approx(math.exp(-2), rel=1e-6)
    assert heat[5, 2].item() == pytest.approx(math.exp(-4), rel=1e-6)
    assert heat[6, 5] == 0 and heat[4, 3] == 0  # outside the radius
    # a tiny box: radius 0, the peak alone; a centre on the border stays on the map
    tiny = gaussian_heatmap(torch.tensor([[0.999, 0.0, 0.01, 0.01]]), 8)[0]
    assert tiny.sum() == 1 and tiny[0, 7] == 1


def test_swintrack_targets_and_varifocal_hand_computed():
    pos = positive_cells(torch.tensor([[0.5, 0.5, 0.5, 0.25]]), 4)[0]  # x 0.25..0.75, y 0.375..0.625
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[1:3, 1:4] = True  # floor(0.25*4)=1 .. floor(0.75*4)=3; floor(1.5)=1 .. floor(2.5)=2
    assert torch.equal(pos, expected)
    logits = torch.tensor([0.0, 2.0, -1.0])
    target = torch.tensor([0.6, 0.0, 0.0])
    p = torch.sigmoid(logits)
    expected = torch.stack([-(0.6 * torch.log(p[0]) + 0.4 * torch.log(1 - p[0])) * 0.6,
                            -torch.log(1 - p[1]) * 0.75 * p[1] ** 2, -torch.log(1 - p[2]) * 0.75 * p[2] ** 2])
    torch.testing.assert_close(varifocal_loss(logits, target), expected)


def test_two_stream_loss_matches_its_definition(ckpts):
    model = _build(ckpts, "swin", search_size=128)
    g = model.feat_size
    torch.manual_seed(0)
    out = {"score": torch.randn(1, 1, g, g), "box": torch.rand(1, 4, g, g) * 0.5 + 0.25}
    gt = torch.tensor([[0.5, 0.5, 0.3, 0.3]])
    losses = model.loss(out, gt)
    pos = positive_cells(gt, g)[0]
    cells = out["box"][0].permute(1, 2, 0)[pos]
    iou, giou = box_iou_giou(box_cxcywh_to_xyxy(cells), box_cxcywh_to_xyxy(gt.expand_as(cells)))
    quality = torch.zeros(g, g)
    quality[pos] = iou
    cls = varifocal_loss(out["score"][0, 0], quality).sum() / pos.sum()
    w = torch.sigmoid(out["score"][0, 0])[pos]
    torch.testing.assert_close(losses["loss_varifocal"], 1.5 * cls)
    torch.testing.assert_close(losses["loss_giou"], 1.5 * ((1 - giou) * w).sum() / w.sum())


def test_one_stream_loss_uses_the_box_at_the_predicted_peak(ckpts):
    model = _build(ckpts, "vit")
    g = model.feat_size
    score = torch.full((1, 1, g, g), -4.0)
    score[0, 0, 3, 3] = 4.0  # predicted peak, away from the ground-truth centre cell (4, 4)
    size = torch.full((1, 2, g, g), 0.25)
    offset = torch.zeros(1, 2, g, g)
    offset[0, :, 3, 3] = 1.0  # the box at the peak is centred at (4/8, 4/8): exactly the ground truth
    gt = torch.tensor([[0.5, 0.5, 0.25, 0.25]])
    losses = model.loss({"score": score, "size": size, "offset": offset}, gt)
    assert losses["loss_giou"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["loss_l1"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["iou"].item() == pytest.approx(1.0, abs=1e-6)
    prob = torch.sigmoid(score).clamp(1e-4, 1 - 1e-4)[:, 0]
    torch.testing.assert_close(losses["loss_focal"], centernet_focal_loss(prob, gaussian_heatmap(gt, g)))


# ---------------------------------------------------------------------------------------------------- learning

def _square_pair(model):
    """A bright square on noise in both crops; ground truth: the square in the search crop."""
    g = torch.Generator().manual_seed(1)
    t, s = model.template_size, model.search_size
    template = torch.randn(2, 3, t, t, generator=g) * 0.3
    template[:, :, t // 4:3 * t // 4, t // 4:3 * t // 4] = 2.0
    search = torch.randn(2, 3, s, s, generator=g) * 0.3
    gt = torch.tensor([[0.40, 0.55, 0.25, 0.25], [0.60, 0.40, 0.30, 0.20]])
    for b in range(2):
        cx, cy, w, h = (gt[b] * s).tolist()
        search[b, :, round(cy - h / 2):round(cy + h / 2), round(cx - w / 2):round(cx + w / 2)] = 2.0
    return template, search, gt


@pytest.mark.parametrize("name,steps", [("vit", 30), ("swin", 80)])
def test_a_few_adam_steps_learn_a_fixed_pair(ckpts, name, steps):
    torch.manual_seed(0)
    model = _build(ckpts, name, fusion_layers=1)
    template, search, gt = _square_pair(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for _ in range(steps):
        losses = model.loss(model(template, search), gt)
        loss = _total(losses)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append((loss.item(), losses["iou"].item()))
    first, last = history[0][0], min(h[0] for h in history[-5:])
    assert last < 0.7 * first, history
    assert max(h[1] for h in history[-5:]) > history[0][1] + 0.2, history


# ---------------------------------------------------------------------------------------------------- refusals

def test_build_tracker_refuses_bad_sizes_and_archs(ckpts):
    with pytest.raises(BenchmarkError, match="template_size=18 is not a positive multiple of the patch size"):
        build_tracker(ckpts["vit"], template_size=18, search_size=32)
    with pytest.raises(BenchmarkError, match="search_size=40 is not a positive multiple of the stride"):
        build_tracker(ckpts["swin"], template_size=32, search_size=40)
    with pytest.raises(BenchmarkError, match="cannot drive a tracker"):
        build_tracker(ckpts["resnet"], template_size=32, search_size=64)
    with pytest.raises(BenchmarkError, match="rotary position embedding"):
        build_tracker(ckpts["eva02"], template_size=16, search_size=32)
    with pytest.raises(BenchmarkError, match="multiple of 8"):
        build_tracker(ckpts["vit"], template_size=16, search_size=32, head_channels=12)
    with pytest.raises(BenchmarkError, match="fusion_dim must be a multiple of fusion_heads"):
        build_tracker(ckpts["swin"], template_size=32, search_size=64, fusion_dim=30, fusion_heads=4)


@pytest.mark.parametrize("name,ce", [("vit", False), ("beit_block", False), ("swin", False), ("vit", True),
                                     ("beit_block", True)])
def test_gradient_checkpointing_gives_the_same_outputs(ckpts, name, ce):
    """Also with candidate elimination: the kept tokens' bias rows are gathered inside the checkpointed blocks."""
    model = _build(ckpts, name, **(dict(ce_layers=[0], ce_keep_ratio=0.7) if ce else {})).eval()
    inputs = _inputs(model)
    ref = model(*inputs)
    model.trunk.set_grad_checkpointing(True)
    out = model(*inputs)
    for k in ref:
        torch.testing.assert_close(out[k], ref[k])
    _total(model.loss(out, GT)).backward()
    assert model.trunk.patch_embed.proj.weight.grad is not None
    tables = [p for n, p in model.trunk.named_parameters() if "relative_position_bias_table" in n]
    assert all(p.grad is not None for p in tables)


# ---------------------------------------------------------------------------------------- candidate elimination

def test_ce_keep_rate_follows_ostracks_schedule():
    # GOT-10k: CE_START_EPOCH 20, CE_WARM_EPOCH 50, keep 0.7; epochs count from 1
    for epoch in (1, 19, 20):  # epoch 20 is the cosine's start: rate 1, nothing removed yet
        assert ce_keep_rate(epoch, 20, 50, 0.7) == 1.0
    assert ce_keep_rate(21, 20, 50, 0.7) == pytest.approx(0.7 + 0.3 * (math.cos(math.pi / 50) + 1) / 2)
    assert ce_keep_rate(45, 20, 50, 0.7) == pytest.approx(0.85)  # half way
    assert ce_keep_rate(70, 20, 50, 0.7) == ce_keep_rate(100, 20, 50, 0.7) == 0.7
    rates = [ce_keep_rate(e, 20, 50, 0.7) for e in range(1, 101)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))  # never rises
    assert ce_keep_rate(60, 20, 80, 0.7) == pytest.approx(0.85)  # LaSOT: warm 80 epochs
    assert ce_keep_rate(5, 5, 0, 0.7) == 0.7 and ce_keep_rate(4, 5, 0, 0.7) == 1.0  # no warm-up: a step


def test_ce_template_token_is_ostracks_centre_point():
    # OSTrack's CTR_POINT: slice(3, 4) for 7x7 and 8x8 templates, slice(5, 6) for 12x12, slice(6, 7) for 14x14
    assert [ce_template_token(g) for g in (7, 8, 12, 14)] == [3 * 7 + 3, 3 * 8 + 3, 5 * 12 + 5, 6 * 14 + 6]


def test_candidate_elimination_keeps_the_best_in_score_order():
    g = torch.Generator().manual_seed(0)
    nz, n, c = 4, 10, 3
    h = torch.randn(2, nz + n, c, generator=g)
    scores = torch.rand(2, n, generator=g)
    out, kept, removed = candidate_elimination(h, scores, nz, 0.7)
    assert kept.shape == (2, 7) and removed.shape == (2, 3)  # ceil(0.7 * 10)
    for b in range(2):
        order = scores[b].argsort(descending=True)
        assert kept[b].tolist() == order[:7].tolist() and removed[b].tolist() == order[7:].tolist()
        torch.testing.assert_close(out[b, nz:], h[b, nz + kept[b]], rtol=0, atol=0)
    torch.testing.assert_close(out[:, :nz], h[:, :nz], rtol=0, atol=0)  # the template stays, in place
    # a second elimination speaks in grid indices: ceil(0.7 * 7) = 5 of the kept ones stay
    scores2 = torch.rand(2, 7, generator=g)
    out2, kept2, removed2 = candidate_elimination(out, scores2, nz, 0.7, kept)
    assert kept2.shape == (2, 5) and removed2.shape == (2, 2)
    for b in range(2):
        order = scores2[b].argsort(descending=True)
        assert kept2[b].tolist() == kept[b, order[:5]].tolist()
        assert sorted(kept2[b].tolist() + removed2[b].tolist() + removed[b].tolist()) == list(range(n))
        torch.testing.assert_close(out2[b, nz:], h[b, nz + kept2[b]], rtol=0, atol=0)
    # a rate that keeps every token changes nothing
    same, idx, gone = candidate_elimination(h, scores, nz, 0.999)
    assert same is h and idx is None and gone is None


def _reference_ce_features(model, z_img, x_img, ce_layers, keep, bias_of=None):
    """The one-stream trunk with candidate elimination written out: every block's attention in full, the centre
    template token's row (mean over heads) ranks the search tokens after the block, the kept ones go on sorted by
    it, and the removed ones are zeros at their cells after the final norm. ``bias_of(blk)``: a BEiT block's joint
    bias (heads, N, N) over the original tokens, gathered here per sample for the tokens still present."""
    t = model.trunk
    z, x = model._tokens(z_img), model._tokens(x_img)
    if model.has_abs_pos:
        z, x = z + t.pos_embed_template, x + t.pos_embed_search
    h = torch.cat([z, x], 1)
    nz, c = z.shape[1], ce_template_token(model.template_feat_size)
    b = h.shape[0]
    tokens = torch.arange(h.shape[1]).expand(b, -1)
    for i, blk in enumerate(t.blocks):
        attn = blk.attn
        xn = blk.norm1(h)
        qkv_bias = None
        if getattr(attn, "q_bias", None) is not None:
            qkv_bias = torch.cat([attn.q_bias, torch.zeros_like(attn.q_bias), attn.v_bias])
        elif attn.qkv.bias is not None:
            qkv_bias = attn.qkv.bias
        q, k, v = F.linear(xn, attn.qkv.weight, qkv_bias).reshape(b, h.shape[1], 3, attn.num_heads, -1).permute(
            2, 0, 3, 1, 4)
        logits = (q * attn.scale) @ k.transpose(-2, -1)
        if bias_of is not None:
            full = bias_of(blk)
            logits = logits + torch.stack([full[:, tok][:, :, tok] for tok in tokens])
        weights = logits.softmax(-1)
        a = attn.proj((weights @ v).transpose(1, 2).reshape(b, h.shape[1], -1))
        gamma_1 = getattr(blk, "gamma_1", None)
        h = h + (gamma_1 * a if gamma_1 is not None else blk.ls1(a))
        m = blk.mlp(blk.norm2(h))
        gamma_2 = getattr(blk, "gamma_2", None)
        h = h + (gamma_2 * m if gamma_2 is not None else blk.ls2(m))
        if i in ce_layers:
            n = h.shape[1] - nz
            n_keep = math.ceil(keep * n)
            score = weights[:, :, c, nz:].mean(1)  # (B, n)
            order = score.argsort(dim=1, descending=True)[:, :n_keep]
            h = torch.cat([h[:, :nz], torch.stack([h[j, nz + order[j]] for j in range(b)])], 1)
            tokens = torch.cat([tokens[:, :nz], torch.stack([tokens[j, nz + order[j]] for j in range(b)])], 1)
    h = getattr(t, model._final_norm)(h)
    out = torch.zeros(b, model.feat_size ** 2, h.shape[-1])
    for j in range(b):
        out[j, tokens[j, nz:] - nz] = h[j, nz:]
    return out.transpose(1, 2).reshape(b, -1, model.feat_size, model.feat_size), tokens[:, nz:] - nz


def test_one_stream_ce_equals_a_written_out_elimination(ckpts):
    model = _build(ckpts, "vit", ce_layers=[0, 1], ce_keep_ratio=0.7).eval()
    assert model.ce_layers == (0, 1) and model.ce_keep_ratio == 0.7
    z_img, x_img = _inputs(model)
    with torch.no_grad():
        feat, info = model.forward_features(z_img, x_img)
        ref, ref_kept = _reference_ce_features(model, z_img, x_img, (0, 1), 0.7)
    # 64 search tokens -> ceil(0.7 * 64) = 45 -> ceil(0.7 * 45) = 32
    assert [r.shape for r in info["removed"]] == [(2, 19), (2, 13)] and info["kept"].shape == (2, 32)
    assert torch.equal(info["kept"], ref_kept)
    torch.testing.assert_close(feat, ref, atol=1e-5, rtol=1e-5)
    for j in range(2):  # every cell once: kept or removed at one of the eliminations
        cells = torch.cat([info["kept"][j]] + [r[j] for r in info["removed"]])
        assert sorted(cells.tolist()) == list(range(64))
    # removed cells are zeros at their grid position, kept ones are not (the order restored)
    flat = feat.flatten(2)  # (B, C, G*G)
    for j in range(2):
        gone = torch.cat([r[j] for r in info["removed"]])
        assert not flat[j][:, gone].any() and flat[j][:, info["kept"][j]].abs().sum(0).gt(0).all()
    out = model(z_img, x_img)
    assert out["score"].shape == (2, 1, 8, 8) and torch.isfinite(out["score"]).all()


def test_one_stream_ce_off_is_the_plain_forward(ckpts):
    plain = _build(ckpts, "vit").eval()
    assert plain.ce_layers == () and plain.ce_keep_ratio == 1.0
    inputs = _inputs(plain)
    with torch.no_grad():
        ref = plain(*inputs)
        for kw, rate in ((dict(ce_layers=[0, 1], ce_keep_ratio=1.0), None),  # keep ratio 1: off
                         (dict(ce_layers=[0, 1], ce_keep_ratio=0.7), 1.0),  # the schedule's rate 1 (before start)
                         (dict(ce_layers=[0, 1], ce_keep_ratio=0.7), 0.999)):  # ceil(0.999 * 64) = 64
            model = _build(ckpts, "vit", **kw).eval()
            model.load_state_dict(plain.state_dict())  # the same (randomly initialised) head
            out = model(*inputs, ce_keep_rate=rate)
            for k in ref:
                torch.testing.assert_close(out[k], ref[k], rtol=0, atol=0)
            assert model.forward_features(*inputs, ce_keep_rate=rate)[1] == {"kept": None, "removed": []}


def test_one_stream_ce_never_removes_template_tokens(ckpts):
    model = _build(ckpts, "vit", ce_layers=[0], ce_keep_ratio=0.5).eval()
    z_img, x_img = _inputs(model)
    seen = []
    for blk in model.trunk.blocks:
        blk.register_forward_hook(lambda m, a, out: seen.append((a[0], out)))
    with torch.no_grad():
        _, info = model.forward_features(z_img, x_img)
    (_, out0), (in1, _) = seen
    nz = model.template_feat_size ** 2
    assert out0.shape[1] == nz + 64 and in1.shape[1] == nz + 32  # half the search tokens left, no template one
    torch.testing.assert_close(in1[:, :nz], out0[:, :nz], rtol=0, atol=0)  # every template token, in place
    for j in range(2):
        torch.testing.assert_close(in1[j, nz:], out0[j, nz + info["kept"][j]], rtol=0, atol=0)


@pytest.mark.parametrize("name", ["beit_shared", "beit_block"])
def test_beit_ce_gathers_the_relative_position_bias(ckpts, name):
    """The BEiT bias follows the kept tokens: rows and columns of the joint bias picked per sample, in the CE score
    (the centre token's row) and in every later block."""
    model = _build(ckpts, name, ce_layers=[0], ce_keep_ratio=0.6).eval()
    t = model.trunk
    grids = ((4, 4), (8, 8))

    def bias_of(blk):
        if name == "beit_shared":
            return joint_rel_pos_bias(t.rel_pos_bias.relative_position_bias_table, t.rel_pos_bias.window_size, *grids)
        return joint_rel_pos_bias(blk.attn.relative_position_bias_table, blk.attn.window_size, *grids)

    z_img, x_img = _inputs(model)
    with torch.no_grad():
        feat, info = model.forward_features(z_img, x_img)
        ref, ref_kept = _reference_ce_features(model, z_img, x_img, (0,), 0.6, bias_of)
    assert info["kept"].shape == (2, 39) and torch.equal(info["kept"], ref_kept)  # ceil(0.6 * 64)
    torch.testing.assert_close(feat, ref, atol=1e-5, rtol=1e-5)
    # with grad: every parameter (bias tables included) still learns
    _total(model.train().loss(model(z_img, x_img), GT)).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, no_grad


def test_ce_settings_are_checked(ckpts, caplog):
    with pytest.raises(BenchmarkError, match=r"ce_keep_ratio=1.5 is not in \(0, 1\]"):
        _build(ckpts, "vit", ce_layers=[0], ce_keep_ratio=1.5)
    with pytest.raises(BenchmarkError, match="count from 0"):
        _build(ckpts, "vit", ce_layers=[-1], ce_keep_ratio=0.7)
    with caplog.at_level("WARNING"):  # OSTrack eliminates only at blocks that exist
        model = _build(ckpts, "vit", ce_layers=[1, 3, 6, 9], ce_keep_ratio=0.7)
    assert model.ce_layers == (1,) and "[3, 6, 9] are skipped" in caplog.text


def test_tracker_model_trains_with_the_scheduled_keep_rate(ckpts):
    pytest.importorskip("mmengine")
    from tasks.tracking.parts import TrackerModel

    model = TrackerModel(ckpts["vit"], template_size=16, search_size=32, head_channels=32, ce_layers=[0, 1],
                         ce_keep_ratio=0.7, ce_start_epoch=20, ce_warm_epochs=50, ce_epoch_iters=468.75)
    # step s (0-based) is in epoch floor(s / 468.75) + 1 (OSTrack's 60,000 pairs per epoch at batch 128)
    assert model.ce_keep_rate(0) == model.ce_keep_rate(8906) == 1.0  # epochs 1 .. 19
    assert model.ce_keep_rate(8907) == 1.0  # epoch 20: the cosine's start
    assert model.ce_keep_rate(9375) == pytest.approx(ce_keep_rate(21, 20, 50, 0.7))  # epoch 21
    assert 0.99 < model.ce_keep_rate(9375) < 1
    assert model.ce_keep_rate(32812) == 0.7  # epoch 70 on
    rates = []
    model.backbone.register_forward_pre_hook(lambda m, a, kw: rates.append(kw.get("ce_keep_rate")), with_kwargs=True)
    z, x = _inputs(model.backbone)
    model.train_steps.fill_(9375)
    model(list(z), list(x), box=list(GT), mode="loss")
    assert rates[-1] == pytest.approx(ce_keep_rate(21, 20, 50, 0.7)) and int(model.train_steps) == 9376
    model.eval()
    model(z, x, mode="tensor")  # evaluation: the tracker's own rate, 0.7 (OSTrack's test rule)
    assert rates[-1] is None and int(model.train_steps) == 9376


def test_tracking_presets_resolve_candidate_elimination(ckpts, tmp_path):
    """`paper` on a plain ViT: OSTrack's CE (blocks 3, 6, 9, keep 0.7, from epoch 20 over 50 / 80 epochs), the
    schedule in the run's epochs, so a shortened run (`iters`) keeps its shape; `ci` and Swin: none."""
    pytest.importorskip("mmengine")
    from pathlib import Path

    from benchmark import registry
    from tasks.base import RunContext
    from tasks.tracking.adapter import GOT10k, LaSOT

    def model_cfg(cls, preset, ckpt, **overrides):
        spec = registry.get_task(cls.__name__.lower())
        ctx = RunContext(spec=spec, ckpt=Path(ckpt), ckpt_sha256="", data_root=tmp_path, preset=preset,
                         params=cls.resolve_params(spec, preset, overrides), seed=0, subset=0, work_dir=tmp_path,
                         cache_dir=tmp_path)
        return cls(ctx).model()

    ce = ("ce_layers", "ce_keep_ratio", "ce_start_epoch", "ce_warm_epochs", "ce_epoch_iters")
    got = model_cfg(GOT10k, "paper", ckpts["vit"])
    assert tuple(got[k] for k in ce) == ([3, 6, 9], 0.7, 20.0, 50.0, 468.75)  # 46,875 steps of 128 pairs
    lasot = model_cfg(LaSOT, "paper", ckpts["vit"])
    assert tuple(lasot[k] for k in ce) == ([3, 6, 9], 0.7, 20.0, 80.0, 468.75)
    short = model_cfg(GOT10k, "paper", ckpts["vit"], iters=300)
    assert tuple(short[k] for k in ce) == ([3, 6, 9], 0.7, 20.0, 50.0, 3.0)  # 100 epochs of 3 steps
    assert not any(k in model_cfg(GOT10k, "ci", ckpts["vit"]) for k in ce)
    assert not any(k in model_cfg(LaSOT, "paper", ckpts["swin"]) for k in ce)
    with pytest.raises(BenchmarkError, match="ce_keep_ratio=0.0 is not in"):
        model_cfg(GOT10k, "paper", ckpts["vit"], ce_keep_ratio=0.0)


def test_box_update_per_design():
    """OSTrack's clip_box keeps >= 10 px of the box in the image; SwinTrack holds the search centre's corners in
    [0.5, size - 0.5] and keeps the previous box when nothing of the prediction is left in view."""
    from tasks.tracking.parts import clip_box, swintrack_update

    old = np.array([10.0, 10.0, 20.0, 20.0])
    np.testing.assert_allclose(clip_box(np.array([-30.0, 5.0, 35.0, 20.0]), 100, 80), [0, 5, 10, 20])
    np.testing.assert_allclose(swintrack_update(old, np.array([-30.0, 5.0, 35.0, 20.0]), 100, 80),
                               [0.5, 5, 4.5, 20])
    np.testing.assert_allclose(swintrack_update(old, np.array([90.0, 70.0, 30.0, 30.0]), 100, 80),
                               [90, 70, 9.5, 9.5])
    np.testing.assert_allclose(swintrack_update(old, np.array([120.0, 5.0, 10.0, 10.0]), 100, 80), old)
