"""MIMBackbone(feature_blocks=...) and ade20k_seg's `vit_neck=feature2pyramid` (mmseg's BEiT / MAE UperNet design).

The block maps are checked against the timm trunk run block by block by hand (and, for BEiT at a non-native grid,
against the simple-pyramid path's own block outputs, whose rel-pos resampling test_backbone checks); the adapter's
model config is built into a full mmseg EncoderDecoder that trains one step.
"""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

from benchmark.checkpoint import load_canonical
from benchmark.errors import BenchmarkError
from benchmark.feature2pyramid import default_feature_blocks, feature2pyramid_rescales
from tests.conftest import TINY_SWIN, make_ckpt

TINY_VIT4 = ("vit_tiny_patch16_224", {"depth": 4, "embed_dim": 64, "num_heads": 2})
TINY_BEIT4 = ("beit_base_patch16_224", {"depth": 4, "embed_dim": 64, "num_heads": 2})


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("f2p")
    return {"vit": make_ckpt(d / "vit.pth", TINY_VIT4), "beit": make_ckpt(d / "beit.pth", TINY_BEIT4),
            "swin": make_ckpt(d / "swin.pth", TINY_SWIN)}


def test_default_blocks_are_mmsegs():
    # upernet_mae.py / upernet_beit.py (ViT-B) and beit-large_upernet_8xb1-amp-160k_ade20k-640x640.py (ViT-L)
    assert default_feature_blocks(12) == (3, 5, 7, 11)
    assert default_feature_blocks(24) == (7, 11, 15, 23)
    assert default_feature_blocks(4) == (0, 1, 2, 3)
    assert feature2pyramid_rescales(16) == [4, 2, 1, 0.5] and feature2pyramid_rescales(8) == [2, 1, 0.5, 0.25]
    with pytest.raises(BenchmarkError):
        feature2pyramid_rescales(14)


def _by_hand(ckpt, x: torch.Tensor) -> list[torch.Tensor]:
    """Every block's raw output (class token dropped) of a timm ViT run block by block, input zero-padded to 16."""
    ck = load_canonical(ckpt)
    m = timm.create_model(ck.meta["arch"], pretrained=False, num_classes=0, dynamic_img_size=True,
                          **ck.meta["kwargs"])
    m.load_state_dict(ck.state_dict, strict=False)
    m.eval()
    h, w = x.shape[-2:]
    x = F.pad(x, (0, (-w) % 16, 0, (-h) % 16))
    gh, gw = x.shape[-2] // 16, x.shape[-1] // 16
    t = m.norm_pre(m._pos_embed(m.patch_embed(x)))
    outs = []
    for blk in m.blocks:
        t = blk(t)
        outs.append(t[:, 1:].reshape(x.shape[0], gh, gw, -1).permute(0, 3, 1, 2))
    return outs


def test_vit_block_maps_equal_the_trunk_by_hand(ckpts):
    from benchmark.backbone import MIMBackbone

    bb = MIMBackbone(str(ckpts["vit"]), feature_blocks=(0, 1, 2, 3)).eval()
    assert bb.strides == [16] * 4 and bb.out_channels == [64] * 4 and bb.pyramid is None
    assert isinstance(bb.trunk.norm, torch.nn.Identity)  # final norm unused (mmseg final_norm=False): pruned
    torch.manual_seed(0)
    for h, w in ((64, 48), (50, 70)):
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            got, ref = bb(x), _by_hand(ckpts["vit"], x)
        assert len(got) == 4
        for g, r in zip(got, ref):
            assert g.shape == (2, 64, -(-h // 16), -(-w // 16))
            torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)
    # order and repeats as given; blocks after the last one pruned
    bb2 = MIMBackbone(str(ckpts["vit"]), feature_blocks=(1, 0, 1)).eval()
    assert len(bb2.trunk.blocks) == 2
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        got, ref = bb2(x), _by_hand(ckpts["vit"], x)
    for g, r in zip(got, (ref[1], ref[0], ref[1])):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)


def test_beit_block_maps_keep_the_rel_pos_resampling(ckpts):
    from benchmark.backbone import MIMBackbone

    bb = MIMBackbone(str(ckpts["beit"]), feature_blocks=(1, 3)).eval()
    simple = MIMBackbone(str(ckpts["beit"])).eval()  # resamples per grid (test_backbone checks that path)
    seen = {}
    for i in (1, 3):
        simple.trunk.blocks[i].register_forward_hook(lambda mod, a, out, i=i: seen.__setitem__(i, out))
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 96)  # a 4x6 grid, not the native 14x14 (and no padding on either path)
    with torch.no_grad():
        got = bb(x)
        simple(x)
    for g, i in zip(got, (1, 3)):
        ref = seen[i][:, 1:].reshape(1, 4, 6, -1).permute(0, 3, 1, 2)
        torch.testing.assert_close(g, ref, rtol=1e-5, atol=1e-5)


def test_swin_refuses_feature_blocks(ckpts):
    from benchmark.backbone import MIMBackbone

    with pytest.raises(BenchmarkError, match="plain ViT"):
        MIMBackbone(str(ckpts["swin"]), feature_blocks=(0, 1))


def _adapter(ckpt, tmp_path, overrides, task: str = "ade20k_seg"):
    from benchmark.registry import get_task, load_adapter, resolve_params
    from tasks.base import RunContext

    spec = get_task(task)
    params = resolve_params(spec, "paper", overrides)
    ctx = RunContext(spec=spec, ckpt=ckpt, ckpt_sha256="", data_root=tmp_path, preset="paper", params=params, seed=0,
                     subset=0, work_dir=tmp_path, cache_dir=tmp_path)
    return load_adapter(spec)(ctx)


def test_paper_model_trains_with_feature2pyramid(ckpts, tmp_path):
    from mmengine.config import ConfigDict
    from mmengine.registry import init_default_scope
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample

    import benchmark.backbone  # noqa: F401 - MIMBackbone in mmengine's registry

    task = _adapter(ckpts["vit"], tmp_path, {"channels": 32, "aux_channels": 16})
    assert task.p["vit_neck"] == "feature2pyramid"
    cfg = task.model()
    assert cfg["backbone"]["feature_blocks"] == (0, 1, 2, 3)
    assert cfg["neck"] == dict(type="Feature2Pyramid", embed_dim=64, rescales=[4, 2, 1, 0.5],
                               norm_cfg=dict(type="BN", requires_grad=True))
    assert cfg["decode_head"]["in_channels"] == [64] * 4
    init_default_scope("mmseg")
    model = MODELS.build(ConfigDict(cfg))
    model.init_weights()
    model.train()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    feats = model.extract_feat(x)
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    samples = []
    for _ in range(2):
        s = SegDataSample(metainfo=dict(img_shape=(64, 64), pad_shape=(64, 64), ori_shape=(64, 64)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, 64, 64)))
        samples.append(s)
    losses = model(x, samples, mode="loss")
    total = sum(v for k, v in losses.items() if "loss" in k)
    total.backward()
    assert torch.isfinite(total)
    neck_bn = model.neck.upsample_4x[1]
    assert isinstance(neck_bn, torch.nn.BatchNorm2d) and neck_bn.weight.grad is not None
    assert model.backbone.trunk.blocks[0].attn.qkv.weight.grad is not None
    # every trainable parameter gets a gradient (DDP runs with find_unused_parameters=False)
    idle = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not idle, idle


def test_simple_stays_the_default(ckpts, tmp_path):
    task = _adapter(ckpts["vit"], tmp_path, {"vit_neck": "simple"})
    cfg = task.model()
    assert "neck" not in cfg and "feature_blocks" not in cfg["backbone"]
    from benchmark.registry import get_task, resolve_params

    assert resolve_params(get_task("ade20k_seg"), "ci")["vit_neck"] == "simple"
    swin = _adapter(ckpts["swin"], tmp_path, {})
    assert swin.p["vit_neck"] is None and "neck" not in swin.model()
    with pytest.raises(BenchmarkError, match="plain ViTs"):
        _adapter(ckpts["swin"], tmp_path, {"vit_neck": "feature2pyramid"}).model()
    # ade20k_m2f (a subclass, no family recipes): the simple pyramid into Mask2Former, as before
    m2f = _adapter(ckpts["vit"], tmp_path, {}, task="ade20k_m2f")
    assert m2f.p["vit_neck"] == "simple"
    cfg = m2f.model()
    assert "neck" not in cfg and cfg["backbone"]["out_indices"] == (0, 1, 2, 3)
    assert cfg["decode_head"]["type"] == "Mask2FormerHead" and cfg["decode_head"]["in_channels"] == [64] * 4
