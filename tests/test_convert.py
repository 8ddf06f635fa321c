"""benchmark.convert: official SimMIM / mmpretrain (mmseg layout) / timm checkpoints -> canonical format.

Every source checkpoint here is MADE IN THE TEST from a randomly initialised timm model (or a real mmseg backbone)
through an independent inverse key mapping, so a converted checkpoint must reproduce the original features.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import math
import os
import sys
import types

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from benchmark import convert as cv
from benchmark.checkpoint import load_backbone, load_canonical
from benchmark.errors import CheckpointError


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: intra-op threads only add overhead (and stall badly on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --------------------------------------------------------------------------------------------------------------
# A fake yacs, used only while SAVING test checkpoints
# --------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def fake_yacs():
    """Inject a module ``yacs.config`` with a ``CfgNode(dict)`` that keeps state in ``__dict__`` like the real one."""
    yacs = types.ModuleType("yacs")
    config = types.ModuleType("yacs.config")

    class CfgNode(dict):
        def __init__(self, init_dict=None, new_allowed=False):
            init_dict = {k: CfgNode(v) if isinstance(v, dict) else v for k, v in (init_dict or {}).items()}
            super().__init__(init_dict)
            self.__dict__["__immutable__"] = False
            self.__dict__["__deprecated_keys__"] = set()
            self.__dict__["__renamed_keys__"] = {}
            self.__dict__["__new_allowed__"] = new_allowed

        def __getattr__(self, name):
            if name in self:
                return self[name]
            raise AttributeError(name)

        def freeze(self):
            self.__dict__["__immutable__"] = True

    CfgNode.__module__ = "yacs.config"
    CfgNode.__qualname__ = "CfgNode"
    config.CfgNode = CfgNode
    yacs.config = config
    saved = {k: sys.modules.get(k) for k in ("yacs", "yacs.config")}
    sys.modules["yacs"], sys.modules["yacs.config"] = yacs, config
    try:
        yield CfgNode
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def save_official(path, model_sd: dict, config: dict | None, **extra):
    """An official-format ckpt_epoch_N.pth: model + optimizer + scheduler + epoch + pickled yacs CfgNode config."""
    obj = {"model": model_sd,
           "optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(2)}},
                         "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "weight_decay": 0.05, "params": [0]}]},
           "lr_scheduler": {"t_initial": 100, "warmup_lr_init": 5e-7, "base_values": [1e-4]},
           "max_accuracy": 0.0, "epoch": 7, "amp": {"loss_scaler0": {"loss_scale": 65536.0, "unskipped": 3}},
           **extra}
    if config is not None:
        with fake_yacs() as CfgNode:
            cfg = CfgNode(config)
            cfg.freeze()
            obj["config"] = cfg
            torch.save(obj, path)
    else:
        torch.save(obj, path)
    assert "yacs" not in sys.modules and "yacs.config" not in sys.modules   # the loader must not need yacs


def randomize(model: nn.Module, seed: int = 0, scale: float = 0.1) -> nn.Module:
    """Random values everywhere (zero-initialised tables / biases / layer scales included) so a wrong mapping shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("logit_scale"):
                p.copy_(math.log(10) + 0.1 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1 and ("norm" in name) and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(scale * torch.randn(p.shape, generator=g))
    model.eval()                      # (mmseg backbones' train() returns None, so do not chain)
    return model


# --------------------------------------------------------------------------------------------------------------
# Independent re-statements of the official SimMIM buffers (from microsoft/SimMIM models/*.py)
# --------------------------------------------------------------------------------------------------------------


def official_swin_rel_index(ws: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += ws - 1
    rel[:, :, 1] += ws - 1
    rel[:, :, 0] *= 2 * ws - 1
    return rel.sum(-1)


def official_beit_rel_index(ws: int) -> torch.Tensor:
    n = (2 * ws - 1) ** 2 + 3
    idx = torch.zeros((ws * ws + 1,) * 2, dtype=torch.long)
    idx[1:, 1:] = official_swin_rel_index(ws)
    idx[0, 0:] = n - 3
    idx[0:, 0] = n - 2
    idx[0, 0] = n - 1
    return idx


def official_attn_mask(res: int, ws: int, shift: int) -> torch.Tensor:
    img_mask = torch.zeros((1, res, res, 1))
    cnt = 0
    for h in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for w in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img_mask[:, h, w, :] = cnt
            cnt += 1
    win = img_mask.view(1, res // ws, ws, res // ws, ws, 1).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws)
    m = win.unsqueeze(1) - win.unsqueeze(2)
    return m.masked_fill(m != 0, -100.0).masked_fill(m == 0, 0.0)


def official_v2_coords_table(ws: int) -> torch.Tensor:
    h = torch.arange(-(ws - 1), ws, dtype=torch.float32)
    t = torch.stack(torch.meshgrid(h, h, indexing="ij")).permute(1, 2, 0).contiguous().unsqueeze(0)
    t = t / (ws - 1) * 8
    return torch.sign(t) * torch.log2(t.abs() + 1.0) / math.log2(8)


# --------------------------------------------------------------------------------------------------------------
# timm model -> official SimMIM checkpoint (the inverse of what convert does, written independently)
# --------------------------------------------------------------------------------------------------------------

VIT_KW = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, mlp_ratio=4.0)


def tiny_beit(**kw):
    kw = {**VIT_KW, "use_abs_pos_emb": False, "use_rel_pos_bias": False, "use_shared_rel_pos_bias": True,
          "init_values": 0.1, "qkv_bias": True, "use_fc_norm": False, **kw}
    return randomize(timm.create_model("beit_base_patch16_224", num_classes=0, **kw))


def beit_to_official(model) -> dict:
    """BEiT-style SimMIM encoder: same module names as timm's Beit, plus persistent index buffers."""
    sd = {f"encoder.{k}": v.clone() for k, v in model.state_dict().items()}
    grid = model.patch_embed.grid_size[0]
    if model.rel_pos_bias is not None:
        sd["encoder.rel_pos_bias.relative_position_index"] = official_beit_rel_index(grid)
    for i, blk in enumerate(model.blocks):
        if blk.attn.relative_position_bias_table is not None:
            sd[f"encoder.blocks.{i}.attn.relative_position_index"] = official_beit_rel_index(grid)
    c = model.embed_dim
    sd["encoder.mask_token"] = torch.randn(1, 1, c)
    sd["decoder.0.weight"] = torch.randn(16 ** 2 * 3, c, 1, 1)
    sd["decoder.0.bias"] = torch.randn(16 ** 2 * 3)
    return sd


def vit_to_official(model) -> dict:
    """Plain timm ViT (no qkv bias, layer scale) -> SimMIM ViT names (gamma_1/gamma_2)."""
    sd = {}
    for k, v in model.state_dict().items():
        k = k.replace(".ls1.gamma", ".gamma_1").replace(".ls2.gamma", ".gamma_2")
        sd[f"encoder.{k}"] = v.clone()
    sd["encoder.mask_token"] = torch.randn(1, 1, model.embed_dim)
    sd["decoder.0.weight"] = torch.randn(768, model.embed_dim, 1, 1)
    return sd


def vit_config(**vit):
    base = dict(PATCH_SIZE=8, IN_CHANS=3, EMBED_DIM=48, DEPTH=2, NUM_HEADS=3, MLP_RATIO=4, QKV_BIAS=True,
                INIT_VALUES=0.1, USE_APE=False, USE_RPB=False, USE_SHARED_RPB=True, USE_MEAN_POOLING=False)
    return {"MODEL": {"TYPE": "vit", "NAME": "simmim_pretrain", "DROP_PATH_RATE": 0.1, "VIT": {**base, **vit}},
            "DATA": {"IMG_SIZE": 32, "MASK_PATCH_SIZE": 32, "MASK_RATIO": 0.6},
            "TRAIN": {"EPOCHS": 800, "BASE_LR": 1e-4, "OPTIMIZER": {"BETAS": (0.9, 0.999)},
                      "LR_SCHEDULER": {"MULTISTEPS": [700]}}, "AMP_OPT_LEVEL": "O1", "TAG": "t"}


SWIN_KW = dict(img_size=64, patch_size=4, embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=4)


def tiny_swin(v2: bool = False, **kw):
    kw = {**SWIN_KW, **kw}
    name = "swinv2_tiny_window8_256" if v2 else "swin_tiny_patch4_window7_224"
    return randomize(timm.create_model(name, num_classes=0, **kw))


def swin_to_official(model, v2: bool = False) -> dict:
    """timm Swin/SwinV2 -> official: downsample at the END of stage i-1, persistent buffers, mask token, decoder."""
    sd = {}
    for k, v in model.state_dict().items():
        parts = k.split(".")
        if k.startswith("layers.") and parts[2] == "downsample":
            parts[1] = str(int(parts[1]) - 1)
        sd["encoder." + ".".join(parts)] = v.clone()
    grid = model.patch_embed.grid_size[0]
    for i, stage in enumerate(model.layers):
        res = grid // 2 ** i
        for j, _ in enumerate(stage.blocks):
            ws = min(res, stage.blocks[j].window_size[0])
            shift = 0 if (j % 2 == 0 or res <= ws) else ws // 2
            a = f"encoder.layers.{i}.blocks.{j}"
            sd[f"{a}.attn.relative_position_index"] = official_swin_rel_index(ws)
            if v2:
                sd[f"{a}.attn.relative_coords_table"] = official_v2_coords_table(ws)
            if shift:
                sd[f"{a}.attn_mask"] = official_attn_mask(res, ws, shift)
    sd["encoder.mask_token"] = torch.randn(1, 1, model.embed_dim)
    sd["decoder.0.weight"] = torch.randn(32 ** 2 * 3, model.num_features, 1, 1)
    sd["decoder.0.bias"] = torch.randn(32 ** 2 * 3)
    return sd


def swin_config(v2: bool = False, img: int = 64, window: int = 4):
    key = "SWINV2" if v2 else "SWIN"
    s = dict(PATCH_SIZE=4, IN_CHANS=3, EMBED_DIM=16, DEPTHS=[2, 2], NUM_HEADS=[2, 4], WINDOW_SIZE=window,
             MLP_RATIO=4.0, QKV_BIAS=True, APE=False, PATCH_NORM=True)
    if v2:
        s["PRETRAINED_WINDOW_SIZES"] = [0, 0]
    return {"MODEL": {"TYPE": "swinv2" if v2 else "swin", key: s}, "DATA": {"IMG_SIZE": img}}


def features(model, x):
    with torch.no_grad():
        return model.forward_features(x)


# --------------------------------------------------------------------------------------------------------------
# Official SimMIM checkpoints
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_config", [True, False], ids=["config", "shapes"])
def test_simmim_vit_shared_rpb_exact(tmp_path, with_config):
    ref = tiny_beit()
    src, dst = tmp_path / "ckpt_epoch_7.pth", tmp_path / "vit.pth"
    save_official(src, beit_to_official(ref), vit_config() if with_config else None)
    cov = cv.convert(src, dst, "simmim")
    assert cov.complete and cov.fraction == 1.0 and not cov.unexpected
    meta = load_canonical(dst).meta
    assert meta["arch"].startswith("beit_") and meta["method"] == "simmim" and meta["source"] == f"simmim:{src}"
    assert meta["kwargs"]["use_shared_rel_pos_bias"] is True and meta["kwargs"]["num_heads"] == 3
    assert meta["img_size"] == 32 and meta["patch_size"] == 8
    model = load_backbone(dst).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(features(model, x), features(ref, x))


def test_simmim_vit_per_block_rpb_and_abs_pos(tmp_path):
    ref = tiny_beit(use_abs_pos_emb=True, use_rel_pos_bias=True, use_shared_rel_pos_bias=False)
    src, dst = tmp_path / "src.pth", tmp_path / "dst.pth"
    save_official(src, beit_to_official(ref), None)
    assert cv.convert(src, dst, "simmim").complete
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(features(load_backbone(dst).eval(), x), features(ref, x))


def test_simmim_finetuned_vit_mean_pooling(tmp_path):
    """An official fine-tuned checkpoint: backbone keys at top level, fc_norm (mean pooling) and a head."""
    ref = tiny_beit(use_rel_pos_bias=True, use_shared_rel_pos_bias=False, use_fc_norm=True, global_pool="avg")
    sd = {k: v.clone() for k, v in ref.state_dict().items()}
    sd["head.weight"], sd["head.bias"] = torch.randn(10, 48), torch.randn(10)
    src, dst = tmp_path / "src.pth", tmp_path / "dst.pth"
    save_official(src, sd, None)
    assert cv.convert(src, dst, "simmim").complete
    assert load_canonical(dst).meta["kwargs"]["use_fc_norm"] is True
    x = torch.randn(2, 3, 32, 32)
    model = load_backbone(dst).eval()
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))                          # pooled + fc_norm features


def test_simmim_plain_vit_config_drives_heads(tmp_path):
    """No rel-pos bias, no q/v bias -> timm vit_*; the head count (invisible in tensor shapes) comes from config."""
    ref = randomize(timm.create_model("vit_base_patch16_224", num_classes=0, img_size=32, patch_size=8, embed_dim=64,
                                      depth=2, num_heads=4, qkv_bias=False, init_values=0.1))
    cfg = vit_config(EMBED_DIM=64, NUM_HEADS=4, QKV_BIAS=False, USE_APE=True, USE_SHARED_RPB=False)
    src, dst = tmp_path / "src.pth", tmp_path / "dst.pth"
    save_official(src, vit_to_official(ref), cfg)
    assert cv.convert(src, dst, "simmim").complete
    meta = load_canonical(dst).meta
    assert meta["arch"].startswith("vit_") and meta["kwargs"]["num_heads"] == 4
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(features(load_backbone(dst).eval(), x), features(ref, x))

    # without the config the head count can only be guessed (64 // 64 = 1): recorded, and features differ
    save_official(src, vit_to_official(ref), None)
    assert cv.convert(src, dst, "simmim").complete
    meta = load_canonical(dst).meta
    assert meta["kwargs"]["num_heads"] == 1 and any("guessed" in n for n in meta["convert_notes"])
    assert not torch.allclose(features(load_backbone(dst).eval(), x), features(ref, x))


@pytest.mark.parametrize("v2", [False, True], ids=["swin", "swinv2"])
@pytest.mark.parametrize("with_config", [True, False], ids=["config", "shapes"])
def test_simmim_swin_exact(tmp_path, v2, with_config):
    ref = tiny_swin(v2)
    src, dst = tmp_path / "src.pth", tmp_path / "dst.pth"
    official = swin_to_official(ref, v2)
    assert "encoder.layers.0.downsample.reduction.weight" in official     # official layout really differs
    save_official(src, official, swin_config(v2) if with_config else None)
    cov = cv.convert(src, dst, "simmim")
    assert cov.complete and not cov.unexpected
    meta = load_canonical(dst).meta
    assert meta["arch"].startswith("swinv2_" if v2 else "swin_")
    assert meta["kwargs"]["window_size"] == 4 and meta["kwargs"]["num_heads"] == (2, 4)
    assert meta["img_size"] == 64 and meta["method"] == "simmim"
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(features(load_backbone(dst).eval(), x), features(ref, x))


def test_swin_window_resize_bicubic(tmp_path):
    """Trained at window 6, converted to window 12: tables (2*12-1)^2 rows, bicubic, full coverage."""
    ref = tiny_swin(img_size=96, window_size=6)
    src, dst = tmp_path / "src.pth", tmp_path / "dst.pth"
    save_official(src, swin_to_official(ref), swin_config(img=96, window=6))
    cov = cv.convert(src, dst, "simmim", window_size=12)
    assert cov.complete and cov.fraction == 1.0
    out = load_canonical(dst)
    assert out.meta["kwargs"]["window_size"] == 12
    for i, heads in enumerate((2, 4)):
        k = f"layers.{i}.blocks.1.attn.relative_position_bias_table"
        old = ref.state_dict()[k]
        assert old.shape == (11 * 11, heads) and out.state_dict[k].shape == (23 * 23, heads)
        expect = F.interpolate(old.T.reshape(1, heads, 11, 11), size=(23, 23), mode="bicubic",
                               align_corners=False).reshape(heads, -1).T
        torch.testing.assert_close(out.state_dict[k], expect, rtol=0, atol=1e-6)
    model = load_backbone(dst).eval()
    assert model(torch.randn(1, 3, 96, 96)).shape == (1, 32)


def test_swinv2_window_change_keeps_coordinate_scale(tmp_path):
    ref = tiny_swin(v2=True, img_size=96, window_size=6)
    src, dst = tmp_path / "src.pth", tmp_path / "dst.pth"
    save_official(src, swin_to_official(ref, v2=True), swin_config(v2=True, img=96, window=6))
    assert cv.convert(src, dst, "simmim", window_size=12).complete
    assert load_canonical(dst).meta["kwargs"]["pretrained_window_sizes"] == (6, 6)


def test_vit_img_size_change_resizes_shared_table(tmp_path):
    ref = tiny_beit()
    src, dst = tmp_path / "src.pth", tmp_path / "dst.pth"
    save_official(src, beit_to_official(ref), vit_config())
    assert cv.convert(src, dst, "simmim", img_size=48).complete
    out = load_canonical(dst)
    t_old = ref.state_dict()["rel_pos_bias.relative_position_bias_table"]
    t_new = out.state_dict["rel_pos_bias.relative_position_bias_table"]
    assert t_old.shape == (7 * 7 + 3, 3) and t_new.shape == (11 * 11 + 3, 3)
    assert torch.equal(t_new[-3:], t_old[-3:])                           # cls entries carried over as they are
    assert load_backbone(dst).eval()(torch.randn(1, 3, 48, 48)).shape == (1, 48)


def test_partial_checkpoint_needs_allow_partial(tmp_path):
    sd = beit_to_official(tiny_beit())
    del sd["encoder.blocks.1.mlp.fc2.weight"]
    src, dst = tmp_path / "src.pth", tmp_path / "dst.pth"
    save_official(src, sd, vit_config())
    with pytest.raises(CheckpointError, match="does not fill the backbone"):
        cv.convert(src, dst, "simmim")
    assert not dst.exists()
    cov = cv.convert(src, dst, "simmim", allow_partial=True)
    assert not cov.complete and 0.5 < cov.fraction < 1.0 and cov.missing == ["blocks.1.mlp.fc2.weight"]
    with pytest.raises(CheckpointError):
        load_backbone(dst)
    assert load_backbone(dst, allow_partial=True).coverage.missing == ["blocks.1.mlp.fc2.weight"]


def test_unknown_backbone_tensor_is_an_error(tmp_path):
    sd = beit_to_official(tiny_beit())
    sd["encoder.blocks.0.attn.extra_scale"] = torch.ones(3)
    src, dst = tmp_path / "src.pth", tmp_path / "dst.pth"
    save_official(src, sd, None)
    with pytest.raises(CheckpointError, match="no place"):
        cv.convert(src, dst, "simmim")
    assert cv.convert(src, dst, "simmim", allow_partial=True).complete


# --------------------------------------------------------------------------------------------------------------
# Safety
# --------------------------------------------------------------------------------------------------------------


class EvilCounter(collections.Counter):
    """A harmless-looking class the loader has never heard of."""


class RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_config_is_captured_without_yacs(tmp_path):
    src = tmp_path / "src.pth"
    save_official(src, {"encoder.x": torch.zeros(1)}, vit_config(),
                  args=argparse.Namespace(cfg="a.yaml", local_rank=0, opts=None))
    obj = cv.load_untrusted(src)
    assert type(obj["config"]) is dict and obj["config"]["MODEL"]["VIT"]["NUM_HEADS"] == 3
    assert obj["config"]["TRAIN"]["OPTIMIZER"]["BETAS"] == (0.9, 0.999)
    assert obj["args"] == {"cfg": "a.yaml", "local_rank": 0, "opts": None}
    assert "yacs" not in sys.modules


def test_foreign_class_is_refused(tmp_path):
    src = tmp_path / "src.pth"
    torch.save({"model": {"encoder.x": torch.zeros(1)}, "stats": EvilCounter(a=1)}, src)
    with pytest.raises(CheckpointError, match="EvilCounter"):
        cv.convert(src, tmp_path / "dst.pth", "simmim")


def test_code_execution_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    src = tmp_path / "src.pth"
    torch.save({"model": {"encoder.x": torch.zeros(1)}, "config": RunsShell(marker)}, src)
    with pytest.raises(CheckpointError, match="system"):
        cv.convert(src, tmp_path / "dst.pth", "simmim")
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------------------
# Foreign / wrong input
# --------------------------------------------------------------------------------------------------------------


def test_wrong_inputs_give_one_line_errors(tmp_path):
    dst = tmp_path / "dst.pth"
    txt = tmp_path / "notes.txt"
    txt.write_text("not a checkpoint")
    cases = []
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint") as e:
        cv.convert(txt, dst, "simmim")
    cases.append(e.value)
    with pytest.raises(CheckpointError, match="not found") as e:
        cv.convert(tmp_path / "missing.pth", dst, "simmim")
    cases.append(e.value)
    plain = tmp_path / "plain.pth"
    torch.save({"state_dict": {"backbone.layers.0.ln1.weight": torch.ones(4)}}, plain)
    with pytest.raises(CheckpointError, match="no 'model' entry") as e:
        cv.convert(plain, dst, "simmim")
    cases.append(e.value)
    mm = tmp_path / "mm.pth"
    torch.save({"state_dict": {"encoder.blocks.0.norm1.weight": torch.ones(4)}}, mm)
    with pytest.raises(CheckpointError, match="no backbone") as e:
        cv.convert(mm, dst, "mmpretrain")
    cases.append(e.value)
    with pytest.raises(CheckpointError, match="needs the model name") as e:
        cv.convert(plain, dst, "timm")
    cases.append(e.value)
    with pytest.raises(CheckpointError, match="did you mean") as e:
        cv.convert(plain, dst, "timm", arch="vit_tiny_patch16_22")
    cases.append(e.value)
    with pytest.raises(CheckpointError, match="unknown checkpoint source") as e:
        cv.convert(plain, dst, "caffe")
    cases.append(e.value)
    for err in cases:
        assert "\n" not in str(err) and err.fix
    assert not dst.exists()


# --------------------------------------------------------------------------------------------------------------
# timm source
# --------------------------------------------------------------------------------------------------------------


def test_timm_source_strips_head_and_resizes_pos_embed(tmp_path):
    ref = randomize(timm.create_model("vit_tiny_patch16_224", num_classes=7))
    src, dst = tmp_path / "src.pth", tmp_path / "dst.pth"
    torch.save({"model": ref.state_dict(), "epoch": 3, "args": {"lr": 0.1}}, src)
    cov = cv.convert(src, dst, "timm", arch="vit_tiny_patch16_224")
    assert cov.complete and not cov.unexpected
    assert not any(k.startswith("head") for k in load_canonical(dst).state_dict)
    x = torch.randn(1, 3, 224, 224)
    assert torch.equal(features(load_backbone(dst).eval(), x), features(ref, x))

    torch.save(ref.state_dict(), src)                       # plain state dict, new input size
    assert cv.convert(src, dst, "timm", arch="vit_tiny_patch16_224", img_size=64).complete
    out = load_canonical(dst)
    assert out.meta["img_size"] == 64 and out.state_dict["pos_embed"].shape == (1, 4 * 4 + 1, 192)


# --------------------------------------------------------------------------------------------------------------
# PatchMerging channel order (nn.Unfold vs timm / official)
# --------------------------------------------------------------------------------------------------------------


def mmseg_correct_unfold_reduction_order(x):
    """mmseg tools/model_converters/swin2mmseg.py: official order -> nn.Unfold order (reduction weight)."""
    out_channel, in_channel = x.shape
    x = x.reshape(out_channel, 4, in_channel // 4)
    return x[:, [0, 2, 1, 3], :].transpose(1, 2).reshape(out_channel, in_channel)


def test_unfold_permutation_round_trip_and_function():
    c, out = 5, 7
    w = torch.randn(out, 4 * c)
    n = torch.randn(4 * c)
    assert torch.equal(cv.timm_to_unfold_merge(cv.unfold_to_timm_merge(w)), w)
    assert torch.equal(cv.unfold_to_timm_merge(cv.timm_to_unfold_merge(n)), n)
    assert torch.equal(cv.timm_to_unfold_merge(w), mmseg_correct_unfold_reduction_order(w))

    # the same merge computed with the real nn.Unfold + mm weights and with timm's PatchMerging + converted weights
    from timm.models.swin_transformer import PatchMerging

    x = torch.randn(2, c, 6, 8)
    ln_w, ln_b = 1 + 0.1 * torch.randn(4 * c), 0.1 * torch.randn(4 * c)
    unfolded = nn.Unfold(kernel_size=2, stride=2)(x).transpose(1, 2)             # (B, L, 4C), Unfold order
    mm_out = F.layer_norm(unfolded, (4 * c,), ln_w, ln_b) @ w.T
    pm = PatchMerging(c, out_dim=out).eval()
    with torch.no_grad():
        pm.reduction.weight.copy_(cv.unfold_to_timm_merge(w))
        pm.norm.weight.copy_(cv.unfold_to_timm_merge(ln_w))
        pm.norm.bias.copy_(cv.unfold_to_timm_merge(ln_b))
        timm_out = pm(x.permute(0, 2, 3, 1)).reshape(2, -1, out)                 # (B, H/2*W/2, out)
    torch.testing.assert_close(timm_out, mm_out, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------------------------------
# mmpretrain / mmseg layout, validated against real mmsegmentation backbones
# --------------------------------------------------------------------------------------------------------------


def mm_checkpoint(path, backbone: nn.Module, extra: dict | None = None, cfg: str = "model = dict(type='X')"):
    sd = {f"backbone.{k}": v.clone() for k, v in backbone.state_dict().items()}
    sd["neck.decoder.0.weight"] = torch.randn(12, 4, 1, 1)
    torch.save({"state_dict": {**sd, **(extra or {})}, "meta": {"epoch": 1, "cfg": cfg}}, path)


# what mmengine stores in meta['cfg']: the config text; a ViT's head count is not visible in its tensors
MM_VIT_CFG = ("model = dict(type='ImageClassifier', backbone=dict(type='VisionTransformer', arch=dict(\n"
              "    embed_dims=48, num_layers=3, num_heads=3, feedforward_channels=192), img_size=32, patch_size=8))")


@pytest.mark.mm
def test_mmseg_vit_matches(tmp_path):
    pytest.importorskip("mmseg")
    from mmseg.models.backbones import VisionTransformer

    mm = VisionTransformer(img_size=32, patch_size=8, in_channels=3, embed_dims=48, num_layers=3, num_heads=3,
                           mlp_ratio=4, out_indices=-1, qkv_bias=True, with_cls_token=True, final_norm=True,
                           norm_cfg=dict(type="LN", eps=1e-6), drop_path_rate=0.0)
    randomize(mm, scale=0.3)
    src, dst = tmp_path / "mm.pth", tmp_path / "dst.pth"
    mm_checkpoint(src, mm, cfg=MM_VIT_CFG)
    cov = cv.convert(src, dst, "mmpretrain")
    assert cov.complete and not cov.unexpected
    model = load_backbone(dst).eval()
    assert load_canonical(dst).meta["arch"].startswith("vit_")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = mm(x)[-1]                                                       # (B, C, H, W), after ln1
        tokens = model.forward_features(x)[:, 1:]                             # drop cls
        ours = tokens.transpose(1, 2).reshape_as(ref)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.mm
def test_mmpretrain_vit_names(tmp_path):
    """mmpretrain's own ViT attention names (attn.qkv / attn.proj) map like mmseg's in_proj / out_proj."""
    pytest.importorskip("mmseg")
    from mmseg.models.backbones import VisionTransformer

    mm = randomize(VisionTransformer(img_size=32, patch_size=8, embed_dims=48, num_layers=2, num_heads=3,
                                     out_indices=-1, final_norm=True, norm_cfg=dict(type="LN", eps=1e-6)), scale=0.3)
    sd = {}
    for k, v in mm.state_dict().items():
        k = k.replace("attn.attn.in_proj_", "attn.qkv.").replace("attn.attn.out_proj.", "attn.proj.")
        sd[f"backbone.{k}"] = v
    src, dst = tmp_path / "mm.pth", tmp_path / "dst.pth"
    torch.save({"state_dict": sd, "meta": {"cfg": MM_VIT_CFG}}, src)
    assert cv.convert(src, dst, "mmpretrain").complete
    assert load_canonical(dst).meta["kwargs"]["num_heads"] == 3
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref = mm(x)[-1]
        ours = load_backbone(dst).eval().forward_features(x)[:, 1:].transpose(1, 2).reshape_as(ref)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.mm
def test_mmseg_swin_matches(tmp_path):
    pytest.importorskip("mmseg")
    from mmseg.models.backbones import SwinTransformer

    # every stage's feature map (32, 16, 8) is larger than the window: mmseg never clips the window to a small
    # map (it pads and shifts), timm and the official code do, so only such configs are comparable
    mm = SwinTransformer(pretrain_img_size=128, in_channels=3, embed_dims=16, patch_size=4, window_size=4,
                         mlp_ratio=4, depths=(2, 2, 2), num_heads=(2, 4, 8), strides=(4, 2, 2), out_indices=(2,),
                         qkv_bias=True, patch_norm=True, drop_path_rate=0.0)
    randomize(mm)
    src, dst = tmp_path / "mm.pth", tmp_path / "dst.pth"
    mm_checkpoint(src, mm, {"backbone.mask_token": torch.zeros(1, 1, 16)})
    cov = cv.convert(src, dst, "mmpretrain", img_size=128)
    assert cov.complete and not cov.unexpected
    meta = load_canonical(dst).meta
    assert meta["arch"].startswith("swin_") and meta["kwargs"]["num_heads"] == (2, 4, 8)
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        ref = mm(x)[-1]                                                       # (B, C, H, W) after norm2
        ours = load_backbone(dst).eval().forward_features(x).permute(0, 3, 1, 2)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_mmpretrain_swinv2_is_refused(tmp_path):
    src = tmp_path / "mm.pth"
    torch.save({"state_dict": {"backbone.stages.0.blocks.0.attn.w_msa.logit_scale": torch.zeros(2, 1, 1),
                               "backbone.patch_embed.projection.weight": torch.zeros(16, 3, 4, 4)}}, src)
    with pytest.raises(CheckpointError, match="SwinV2"):
        cv.convert(src, tmp_path / "dst.pth", "mmpretrain")
