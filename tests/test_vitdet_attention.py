"""ViTDet window attention + decomposed rel-pos (benchmark.vitdet_attention) against a written-out reference."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

from benchmark.backbone import MIMBackbone
from benchmark.errors import BenchmarkError
from benchmark.layer_decay import layer_decay_param_groups
from benchmark.vitdet_attention import (
    apply_window_attention,
    default_global_blocks,
    window_features,
    window_partition,
    window_unpartition,
)
from tests.conftest import TINY_SWIN, make_ckpt

WINDOW, GLOBAL, TABLE = 4, (1, 3), 12  # 10x12 token grid: the windows pad 10 -> 12 rows


def _table(rel_pos: torch.Tensor, length: int) -> torch.Tensor:
    """The (length, C) table: linearly resampled (align_corners=False) when its length differs."""
    if rel_pos.shape[0] == length:
        return rel_pos
    return F.interpolate(rel_pos.t()[None], size=length, mode="linear")[0].t()


def _ref_attention(attn, x: torch.Tensor) -> torch.Tensor:
    """One (h, w, C) map (already norm1-ed) through ViTDet attention, every logit written out."""
    h, w, c = x.shape
    ws = attn.window_size
    nh, hd = attn.num_heads, attn.head_dim
    if ws:
        hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
        xp = torch.zeros(hp, wp, c)
        xp[:h, :w] = x
        windows = [(i, j, ws, ws) for i in range(0, hp, ws) for j in range(0, wp, ws)]
    else:
        hp, wp, xp = h, w, x
        windows = [(0, 0, h, w)]
    out = torch.zeros(hp, wp, c)
    for i0, j0, sh, sw in windows:
        tok = xp[i0:i0 + sh, j0:j0 + sw].reshape(-1, c)
        q, k, v = (attn.qkv(tok).reshape(-1, 3, nh, hd)[:, t].transpose(0, 1) for t in range(3))  # (nh, n, hd)
        rh, rw = _table(attn.rel_pos_h, 2 * sh - 1), _table(attn.rel_pos_w, 2 * sw - 1)
        logits = torch.empty(nh, sh * sw, sh * sw)
        for a in range(sh * sw):
            qa, qb = divmod(a, sw)
            for b in range(sh * sw):
                ka, kb = divmod(b, sw)
                rel = q[:, a] @ rh[qa - ka + sh - 1] + q[:, a] @ rw[qb - kb + sw - 1]
                logits[:, a, b] = (q[:, a] * attn.scale * k[:, b]).sum(-1) + rel
        o = (logits.softmax(-1) @ v).transpose(0, 1).reshape(-1, nh * hd)
        out[i0:i0 + sh, j0:j0 + sw] = attn.proj(o).reshape(sh, sw, c)
    return out[:h, :w]


def _ref_features(trunk, img: torch.Tensor) -> torch.Tensor:
    b, _, hh, ww = img.shape
    h, w = hh // 16, ww // 16
    t = trunk._pos_embed(trunk.patch_embed(img))[:, trunk.num_prefix_tokens:]  # pos-embed at the grid, no cls
    outs = []
    for n in range(b):
        x = t[n].reshape(h, w, -1)
        for blk in trunk.blocks:
            x = x + _ref_attention(blk.attn, blk.norm1(x))
            x = x + blk.mlp(blk.norm2(x))
        outs.append(trunk.norm(x).permute(2, 0, 1))
    return torch.stack(outs)


@pytest.fixture(scope="module")
def trunk():
    torch.manual_seed(0)
    m = timm.create_model("vit_tiny_patch16_224", depth=4, embed_dim=64, num_heads=2, num_classes=0,
                          dynamic_img_size=True).eval()
    apply_window_attention(m, WINDOW, GLOBAL, True, TABLE)
    with torch.no_grad():
        for blk in m.blocks:  # random rel-pos tables (they start at zero)
            blk.attn.rel_pos_h.normal_(0, 0.5)
            blk.attn.rel_pos_w.normal_(0, 0.5)
    return m


@pytest.mark.parametrize("fused", [True, False])
def test_window_attention_matches_written_out_reference(trunk, fused):
    assert [blk.attn.window_size for blk in trunk.blocks] == [4, 0, 4, 0]
    assert tuple(trunk.blocks[0].attn.rel_pos_h.shape) == (7, 32)
    assert tuple(trunk.blocks[1].attn.rel_pos_w.shape) == (23, 32)
    for blk in trunk.blocks:
        blk.attn.fused_attn = fused
    img = torch.randn(2, 3, 160, 192)  # 10 x 12 tokens
    with torch.no_grad():
        got = window_features(trunk, img)
        want = _ref_features(trunk, img)
    assert got.shape == (2, 64, 10, 12)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_partition_round_trip_and_global_blocks():
    x = torch.randn(2, 10, 7, 3)
    win, padded = window_partition(x, 4)
    assert win.shape == (2 * 3 * 2, 4, 4, 3) and padded == (12, 8)
    assert torch.equal(window_unpartition(win, 4, padded, (10, 7)), x)
    assert default_global_blocks(12) == (2, 5, 8, 11)
    assert default_global_blocks(24) == (5, 11, 17, 23)
    assert default_global_blocks(32) == (7, 15, 23, 31)


def test_mim_backbone_window_attention(tmp_path):
    ckpt = make_ckpt(tmp_path / "vit.pth", ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 4, "depth": 4,
                                                                     "embed_dim": 64, "num_heads": 2}))
    bb = MIMBackbone(str(ckpt), out_channels=16,
                     window_attention=dict(window_size=5, global_blocks=[1, 3], img_size=64))
    assert bb.coverage.complete
    assert bb.window_attention == dict(window_size=5, global_blocks=[1, 3], rel_pos=True, img_size=64)
    attn = [blk.attn for blk in bb.trunk.blocks]
    assert [a.window_size for a in attn] == [5, 0, 5, 0]
    assert tuple(attn[0].rel_pos_h.shape) == (9, 32) and tuple(attn[3].rel_pos_h.shape) == (31, 32)
    assert not bb.trunk.cls_token.requires_grad
    with torch.no_grad():
        attn[0].rel_pos_h.fill_(0.25)
    bb.init_weights()  # re-copies the checkpoint, keeps the new tables
    assert bb.coverage.complete and float(attn[0].rel_pos_h[0, 0]) == 0.25

    outs = bb(torch.randn(2, 3, 48, 40))  # padded to 64 x 64: a 16 x 16 grid, windows of 5 padded to 20
    assert [tuple(o.shape) for o in outs] == [(2, 16, 12, 10), (2, 16, 6, 5), (2, 16, 3, 3), (2, 16, 2, 2)]
    sum(o.float().pow(2).mean() for o in outs).backward()
    assert all(a.rel_pos_h.grad is not None and a.rel_pos_w.grad is not None for a in attn)
    assert bb.trunk.blocks[0].attn.qkv.weight.grad is not None and bb.trunk.cls_token.grad is None

    # optimizer: the tables take their block's layer id and the base weight decay (detectron2 / mmdet ViTDet)
    groups = layer_decay_param_groups(bb, base_lr=1.0, weight_decay=0.1, layer_decay=0.5)
    where = {id(p): g for g in groups for p in g["params"]}
    qkv = bb.trunk.blocks[1].attn.qkv.weight
    for p in (attn[1].rel_pos_h, attn[1].rel_pos_w):
        assert where[id(p)]["lr_scale"] == where[id(qkv)]["lr_scale"] == 0.5 ** 3
        assert where[id(p)]["weight_decay"] == 0.1
    assert id(bb.trunk.cls_token) not in where


def test_window_attention_refused_elsewhere(tmp_path):
    swin = make_ckpt(tmp_path / "swin.pth", TINY_SWIN)
    with pytest.raises(BenchmarkError, match="plain ViT"):
        MIMBackbone(str(swin), window_attention={})
    vit = make_ckpt(tmp_path / "vit.pth")
    with pytest.raises(BenchmarkError, match="feature_blocks"):
        MIMBackbone(str(vit), feature_blocks=[0, 1], window_attention={})
    with pytest.raises(BenchmarkError, match="does not take"):
        MIMBackbone(str(vit), window_attention={"window": 7})
