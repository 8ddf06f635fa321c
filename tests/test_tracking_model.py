"""Tracker models (tasks.tracking.model): one-stream (OSTrack) on ViT / BEiT, two-stream (SwinTrack) on Swin;
shapes, weights, BEiT bias across grids, decoding, losses against hand-computed values, learnability. Tiny CPU
models."""

from __future__ import annotations

import copy
import math
import pickle

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


@pytest.mark.parametrize("name", ["vit", "beit_block", "swin"])
def test_gradient_checkpointing_gives_the_same_outputs(ckpts, name):
    model = _build(ckpts, name).eval()
    inputs = _inputs(model)
    ref = model(*inputs)
    model.trunk.set_grad_checkpointing(True)
    out = model(*inputs)
    for k in ref:
        torch.testing.assert_close(out[k], ref[k])
    _total(model.loss(out, GT)).backward()
    assert model.trunk.patch_embed.proj.weight.grad is not None
