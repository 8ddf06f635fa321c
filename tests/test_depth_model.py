"""The depth tasks' backbone output norm (``output_norm``): the paper's SwinV2 reads its last stage through a new
LayerNorm (models/swin_transformer_v2.py ``norm3``; the pre-trained ``norm`` is not loaded), at the head's lr under its
layer-decay optimizer (models/optimizer.py ``get_num_layer_for_swin``: "else -> num_max_layer - 1")."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmark import checkpoint, registry
from benchmark.backbone import MIMBackbone
from benchmark.errors import BenchmarkError
from tasks.base import RunContext
from tasks.depth.adapter import NYUDepth
from tests.conftest import TINY_SWIN, make_ckpt

TINY_VIT16 = ("vit_tiny_patch16_224", {"depth": 1, "embed_dim": 32, "num_heads": 1})


@pytest.fixture(scope="module")
def swin_ckpt(tmp_path_factory) -> Path:
    """A Swin checkpoint whose final norm is far from a new LayerNorm's (weight 1, bias 0)."""
    sd, meta = checkpoint.create_random(TINY_SWIN[0], dict(TINY_SWIN[1]), seed=0)
    g = torch.Generator().manual_seed(0)
    sd["norm.weight"] = 2.0 + torch.rand(sd["norm.weight"].shape, generator=g)
    sd["norm.bias"] = 1.0 + torch.rand(sd["norm.bias"].shape, generator=g)
    return checkpoint.save_canonical(tmp_path_factory.mktemp("depth_ckpt") / "swin.pth", sd, meta)


@pytest.fixture(scope="module")
def vit_ckpt(tmp_path_factory) -> Path:
    return make_ckpt(tmp_path_factory.mktemp("depth_ckpt") / "vit.pth", TINY_VIT16)


def _is_fresh(norm: torch.nn.LayerNorm) -> bool:
    return bool(torch.equal(norm.weight, torch.ones_like(norm.weight))
                and torch.equal(norm.bias, torch.zeros_like(norm.bias)))


def test_fresh_output_norm_resets_only_the_final_norm_and_survives_reloads(swin_ckpt):
    state = checkpoint.load_canonical(swin_ckpt).state_dict
    kept = MIMBackbone(str(swin_ckpt), out_indices=(3,))
    assert torch.equal(kept.trunk.norm.weight, state["norm.weight"])  # default: the pre-trained norm
    fresh = MIMBackbone(str(swin_ckpt), out_indices=(3,), fresh_output_norm=True)
    assert _is_fresh(fresh.trunk.norm)
    fresh.init_weights()  # the Runner re-copies the checkpoint: the norm stays new
    assert _is_fresh(fresh.trunk.norm)
    for name, value in fresh.trunk.state_dict().items():  # everything else is the checkpoint's
        if not name.startswith("norm.") and name in state:
            assert torch.equal(value, state[name]), name
    x = torch.randn(1, 3, 64, 64)
    assert not torch.allclose(kept(x)[0], fresh(x)[0])


def test_fresh_output_norm_needs_swin_and_its_last_stage(swin_ckpt, vit_ckpt):
    with pytest.raises(BenchmarkError, match="fresh_output_norm"):
        MIMBackbone(str(vit_ckpt), out_indices=(2,), fresh_output_norm=True)
    with pytest.raises(BenchmarkError, match="fresh_output_norm"):
        MIMBackbone(str(swin_ckpt), out_indices=(1, 2), fresh_output_norm=True)


def _depth(ckpt: Path, tmp_path: Path, preset: str, **overrides) -> NYUDepth:
    spec = registry.load_specs()["nyu_depth"]
    params = NYUDepth.resolve_params(spec, preset, overrides)
    ctx = RunContext(spec=spec, ckpt=ckpt, ckpt_sha256="", data_root=tmp_path, preset=preset, params=params, seed=0,
                     subset=0, work_dir=tmp_path, cache_dir=tmp_path)
    return NYUDepth(ctx)


def test_paper_preset_gives_swin_a_fresh_norm_at_the_head_lr(swin_ckpt, tmp_path):
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS, init_default_scope

    from tasks import openmmlab as mm

    task = _depth(swin_ckpt, tmp_path, "paper")
    assert task.p["output_norm"] == "fresh" and task.p["swin_merge_own_layer"] is True
    cfg = task.model()
    assert cfg["backbone"]["fresh_output_norm"] is True
    init_default_scope("mmseg")
    task.register()
    from mmengine.config import ConfigDict

    model = MODELS.build(ConfigDict(cfg))
    model.init_weights()
    assert _is_fresh(model.backbone.trunk.norm)
    plan = mm.Plan(world=1, per_process_batch=24, total_batch=24, max_iters=10, iters_per_epoch=1, lr=5e-4,
                   min_lr=3e-5, warmup_iters=0)
    optim = build_optim_wrapper(model, mm.optim_wrapper(task.p, plan, "cpu"))
    norm_groups = [g for g in optim.optimizer.param_groups
                   if any(p is model.backbone.trunk.norm.weight for p in g["params"])]
    assert len(norm_groups) == 1 and norm_groups[0]["lr_scale"] == 1.0 and norm_groups[0]["weight_decay"] == 0.0


def test_other_presets_and_families_keep_the_pretrained_norm(swin_ckpt, vit_ckpt, tmp_path):
    assert "fresh_output_norm" not in _depth(swin_ckpt, tmp_path, "ci").model()["backbone"]
    assert "fresh_output_norm" not in _depth(swin_ckpt, tmp_path, "paper", output_norm="pretrained").model()["backbone"]
    vit = _depth(vit_ckpt, tmp_path, "paper")  # no official ViT depth code: the pre-trained final norm
    assert vit.p["output_norm"] is None and "fresh_output_norm" not in vit.model()["backbone"]
    with pytest.raises(BenchmarkError, match="output_norm"):
        _depth(vit_ckpt, tmp_path, "paper", output_norm="fresh").model()
