"""benchmark.analysis.capture (attention hooks on timm ViT / Swin) and `benchmark analyze` end to end."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from benchmark import checkpoint
from benchmark.analysis import capture
from benchmark.errors import BenchmarkError
from tests.conftest import TINY_SWIN, run_cli

# a Swin whose first stage has a shifted-window block (16x16 tokens, window 4 -> shift 2) and 2 heads everywhere
SHIFTED_SWIN = ("swin_tiny_patch4_window7_224", {"img_size": 64, "window_size": 4, "depths": (2, 1, 1, 1),
                                                 "embed_dim": 32, "num_heads": (2, 2, 2, 4)})


def _model(arch_kwargs, seed: int = 0):
    sd, meta = checkpoint.create_random(arch_kwargs[0], dict(arch_kwargs[1]), seed=seed)
    model = checkpoint.build_model(meta)
    model.load_state_dict(sd)
    model.mim_meta = meta
    return model.eval()


def _images(model, n: int = 3, seed: int = 0) -> torch.Tensor:
    size = model.mim_meta["img_size"]
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _inputs_of(module):
    """Forward pre-hook recording (args, kwargs) of every call of ``module``."""
    calls = []
    handle = module.register_forward_pre_hook(lambda m, a, k: calls.append((a, dict(k))), with_kwargs=True)
    return calls, handle


@torch.no_grad()
def test_vit_hook_equals_manual_attention(tiny_vit_ckpt):
    model = checkpoint.load_backbone(tiny_vit_ckpt).eval()
    x = _images(model)
    blk = model.blocks[1]
    calls, h = _inputs_of(blk.attn)
    with capture.capture_attention(model) as buf:
        model.forward_features(x)
    h.remove()
    assert len(buf) == 2 and [len(b) for b in buf] == [1, 1]
    tokens = calls[0][0][0]                                              # (B, N, C), after norm1
    attn = blk.attn
    B, N, _ = tokens.shape
    qkv = attn.qkv(tokens).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k = qkv[0], qkv[1]
    manual = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(-1)
    got = buf[1][0]
    assert got.shape == (3, 2, 65, 65)                                   # CLS + 8x8 patches, 2 heads
    torch.testing.assert_close(got, manual, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.sum(-1), torch.ones(3, 2, 65))


@torch.no_grad()
def test_swin_hook_equals_manual_attention_with_bias_and_shift_mask():
    model = _model(SHIFTED_SWIN)
    layers = capture.attention_layers(model)
    assert [l.name for l in layers][:2] == ["layers.0.blocks.0", "layers.0.blocks.1"]
    assert not layers[0].shifted and layers[1].shifted
    x = _images(model, n=2)
    blk = model.layers[0].blocks[1]
    calls, h = _inputs_of(blk.attn)
    with capture.capture_attention(model) as buf:
        model.forward_features(x)
    h.remove()
    (args, kwargs), = calls
    windows, mask = args[0], kwargs.get("mask", args[1] if len(args) > 1 else None)
    assert mask is not None and (mask != 0).any()                       # a shifted block gets the -100 mask
    attn = blk.attn
    Bw, N, _ = windows.shape
    n_win = mask.shape[0]
    assert (Bw, N, n_win) == (2 * 16, 16, 16)                           # 2 images x 4x4 windows of 4x4 tokens
    qkv = attn.qkv(windows).reshape(Bw, N, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = qkv[0], qkv[1]
    logits = (q * attn.scale) @ k.transpose(-2, -1) + attn._get_rel_pos_bias()
    logits = (logits.view(-1, n_win, attn.num_heads, N, N) + mask[None, :, None]).view(-1, attn.num_heads, N, N)
    manual = logits.softmax(-1)
    got = buf[1][0]
    assert got.shape == (Bw, 2, N, N)
    torch.testing.assert_close(got, manual, rtol=1e-5, atol=1e-6)
    # the masked pairs (different sub-regions of a rolled window) carry ~0 attention: window-local distances hold
    masked = (mask != 0).repeat(2, 1, 1)[:, None].expand_as(got)
    assert got[masked].max() < 1e-30


def test_fused_attn_restored_and_output_unchanged(tiny_vit_ckpt):
    for model in (checkpoint.load_backbone(tiny_vit_ckpt).eval(), _model(SHIFTED_SWIN)):
        mods = [l.attn for l in capture.attention_layers(model)]
        mods[0].fused_attn = True                                         # fused outside (timm's ViT default)
        before = [m.fused_attn for m in mods]
        x = _images(model)
        with torch.no_grad():
            ref = model(x)
            with capture.capture_attention(model) as buf:
                assert not any(m.fused_attn for m in mods)
                inside = model(x)
            after = model(x)
        assert [m.fused_attn for m in mods] == before
        assert all(len(b) == 1 for b in buf)                             # one record per layer, then no more hooks
        assert all(not m.attn_drop._forward_hooks and not m._forward_pre_hooks for m in mods)
        assert torch.equal(ref, after)                                   # the normal forward is untouched
        torch.testing.assert_close(inside, ref, rtol=1e-4, atol=1e-5)   # unfused = fused up to float rounding


def test_layer_stats_and_block_features_shapes(tiny_vit_ckpt, tiny_swin_ckpt):
    vit = checkpoint.load_backbone(tiny_vit_ckpt)
    x = _images(vit, n=4)
    st = capture.layer_stats(vit, x)
    assert st["layers"] == ["blocks.0", "blocks.1"] and st["heads"] == [2, 2] and st["count"] == 4
    for key in capture.STATS:
        assert len(st[key]) == 2 and all(v.shape == (2,) and v.dtype == torch.float64 for v in st[key])
    # per-image values summed: streaming two half batches gives the same sums
    a, b = capture.layer_stats(vit, x[:2]), capture.layer_stats(vit, x[2:])
    for key in capture.STATS:
        for full, p, q in zip(st[key], a[key], b[key]):
            torch.testing.assert_close(full, p + q, rtol=1e-5, atol=1e-8)
    max_dist = 4 * 7 * math.sqrt(2)                                      # 8x8 patches of 4 px
    assert all(0 < v.max() / 4 < max_dist for v in st["distance"])
    assert all(v.max() / 4 <= math.log(64) + 1e-6 for v in st["entropy"])   # CLS dropped: 64 keys
    feats = capture.block_features(vit, x)
    assert [tuple(f.shape) for f in feats] == [(4, 64), (4, 64)]

    swin = checkpoint.load_backbone(tiny_swin_ckpt)
    st = capture.layer_stats(swin, _images(swin, n=2))
    assert st["heads"] == list(TINY_SWIN[1]["num_heads"]) and st["count"] == 2
    assert [tuple(v.shape) for v in st["distance"]] == [(1,), (2,), (2,), (4,)]
    assert torch.isnan(st["diversity"][0]).all()                         # one head: no diversity
    assert all(torch.isfinite(v).all() for v in st["diversity"][1:] + st["distance"] + st["entropy"])
    # window-local distances are bounded by the window's extent at the stage's effective patch (4 * 2^s px)
    for s, v in enumerate(st["distance"]):
        win = capture.attention_layers(swin)[s].window[0]
        assert (v / 2).max() <= (win - 1) * math.sqrt(2) * 4 * 2 ** s
    feats = capture.block_features(swin, _images(swin, n=2))
    assert [tuple(f.shape) for f in feats] == [(2, 32), (2, 64), (2, 128), (2, 256)]


def test_module_without_attention_is_a_clear_error():
    with pytest.raises(BenchmarkError, match="no attention layers") as exc:
        capture.layer_stats(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), torch.randn(1, 3, 8, 8))
    assert "ViT or Swin" in exc.value.fix


def test_analyze_cli_end_to_end(tmp_path, tiny_vit_ckpt, tiny_swin_ckpt):
    out = tmp_path / "an"
    res = run_cli("analyze", "--ckpt", tiny_vit_ckpt, "--ckpt", tiny_swin_ckpt, "--name", "vit", "--name", "swin",
                  "--data", "mini", "--num-images", "32", "--batch-size", "12", "--out", out)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == str(out / "report.md")
    stems = ["attention_distance", "attention_entropy", "head_diversity", "cka_vit", "cka_swin", "cka_vit_vs_swin",
             "avgdist"]
    for stem in stems:
        assert (out / f"{stem}.csv").stat().st_size > 0 and (out / f"{stem}.png").stat().st_size > 1000, stem
    report = (out / "report.md").read_text()
    assert all(f"({stem}.png)" in report for stem in stems)
    dist = pd.read_csv(out / "attention_distance.csv")
    assert list(dist.columns) == ["model", "layer", "head", "value"]
    assert len(dist) == 2 * 2 + (1 + 2 + 2 + 4) and dist.value.notna().all()
    cka = pd.read_csv(out / "cka_swin.csv", index_col=0).to_numpy()
    assert cka.shape == (4, 4) and np.allclose(np.diag(cka), 1) and np.allclose(cka, cka.T)
    assert pd.read_csv(out / "cka_vit_vs_swin.csv", index_col=0).shape == (2, 4)
    avg = pd.read_csv(out / "avgdist.csv")
    assert set(avg.ratio) == {0.1, 0.3, 0.5, 0.7, 0.9} and set(avg.mask_patch) == {4, 8, 16, 32}  # 32 px, patch 4


def _one_error(res) -> str:
    lines = res.stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert res.returncode == 2 and len(errors) == 1 and not any("Traceback" in ln for ln in lines), res.stderr
    return errors[0]


def test_analyze_bad_inputs(tmp_path, tiny_vit_ckpt):
    from PIL import Image

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    err = _one_error(run_cli("analyze", "--ckpt", tiny_vit_ckpt, "--images", empty, "--out", tmp_path / "o1"))
    assert "no images" in err and str(empty) in err

    few = tmp_path / "few"
    for i in range(3):
        Image.fromarray(np.full((40, 50, 3), 60 * i, np.uint8)).save(_mkparent(few / "sub" / f"{i}.png"))
    err = _one_error(run_cli("analyze", "--ckpt", tiny_vit_ckpt, "--images", few, "--num-images", "8",
                             "--out", tmp_path / "o2"))
    assert "3 images" in err and "--num-images" in err

    sd, meta = checkpoint.create_random("resnet10t", {})
    conv = checkpoint.save_canonical(tmp_path / "resnet.pth", sd, meta)
    err = _one_error(run_cli("analyze", "--ckpt", conv, "--data", "mini", "--num-images", "8",
                             "--out", tmp_path / "o3"))
    assert "no attention layers (arch resnet10t)" in err and "ViT or Swin" in err and str(conv) in err


def _mkparent(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
