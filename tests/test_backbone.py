"""MIMBackbone (benchmark.backbone) and layer-wise lr decay (benchmark.layer_decay): shapes, weights, freezing,
registries. Tiny CPU models."""

from __future__ import annotations

import copy
import math
import pickle
import subprocess
import sys

import pytest
import torch
from mmengine.model import BaseModule
from torch import nn

from benchmark.backbone import MIMBackbone
from benchmark.checkpoint import create_random, load_canonical, save_canonical
from benchmark.errors import BenchmarkError, CheckpointError
from benchmark.layer_decay import LayerDecayOptimWrapperConstructor, layer_decay_param_groups, trunk_layer_ids

VIT = "vit_base_patch16_224"
BEIT = "beit_base_patch16_224"
SWIN = "swin_tiny_patch4_window7_224"
SWINV2 = "swinv2_tiny_window8_256"
SPECS = {
    "vit_p4": (VIT, dict(img_size=32, patch_size=4, embed_dim=32, depth=2, num_heads=2)),
    "vit_p8": (VIT, dict(img_size=64, patch_size=8, embed_dim=64, depth=2, num_heads=2)),
    # SimMIM's ViT: no absolute pos-embed, one relative-position bias shared by all blocks
    "beit_shared": (BEIT, dict(img_size=32, patch_size=4, embed_dim=32, depth=2, num_heads=2, use_abs_pos_emb=False,
                               use_rel_pos_bias=False, use_shared_rel_pos_bias=True)),
    "beit_p8": (BEIT, dict(img_size=64, patch_size=8, embed_dim=32, depth=2, num_heads=2)),  # per-block rel-pos
    "swin": (SWIN, dict(img_size=64, embed_dim=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8), window_size=4)),
    "swinv2": (SWINV2, dict(img_size=64, embed_dim=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8),
                            window_size=4)),
}
# native size, a non-square one, and one that is no multiple of 32 (nor of the patch size)
SIZES = [None, (48, 96), (50, 70)]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    out = {}
    for name, (arch, kwargs) in SPECS.items():
        sd, meta = create_random(arch, kwargs, seed=1)
        out[name] = str(save_canonical(root / f"{name}.pth", sd, meta))
    sd, meta = create_random(VIT, SPECS["vit_p4"][1], seed=2)
    sd = {k: v for k, v in sd.items() if not k.startswith("blocks.1.")}
    out["vit_partial"] = str(save_canonical(root / "partial.pth", sd, meta))
    sd, meta = create_random("resnet18", {})
    out["resnet"] = str(save_canonical(root / "resnet.pth", sd, meta))
    return out


def _expected_shapes(h, w, strides, channels, batch=2):
    return [(batch, c, math.ceil(h / s), math.ceil(w / s)) for s, c in zip(strides, channels)]


# ---------------------------------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("name", ["vit_p4", "vit_p8", "beit_shared", "beit_p8"])
def test_plain_vit_pyramid_shapes_any_input_size(ckpts, name):
    bb = MIMBackbone(ckpts[name])
    dim = SPECS[name][1]["embed_dim"]
    assert bb.strides == [4, 8, 16, 32] and bb.out_channels == [dim] * 4 and bb.family in ("plain", "beit")
    native = SPECS[name][1]["img_size"]
    for size in SIZES:
        h, w = size or (native, native)
        outs = bb(torch.randn(2, 3, h, w))
        assert isinstance(outs, tuple)
        assert [tuple(o.shape) for o in outs] == _expected_shapes(h, w, bb.strides, bb.out_channels), (name, h, w)


def test_plain_vit_subset_and_out_channels(ckpts):
    bb = MIMBackbone(ckpts["vit_p8"], out_indices=(1, 3), out_channels=24)
    assert bb.strides == [8, 32] and bb.out_channels == [24, 24] and len(bb.pyramid) == 2
    outs = bb(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(1, 24, 8, 12), (1, 24, 2, 3)]


@pytest.mark.parametrize("name", ["vit_p4", "beit_shared", "beit_p8"])
def test_plain_features_equal_timm_at_native_size(ckpts, name):
    """At the checkpoint's own size the token grid fed to the pyramid is exactly timm's forward_intermediates."""
    bb = MIMBackbone(ckpts[name]).eval()
    n = SPECS[name][1]["img_size"]
    x = torch.randn(2, 3, n, n)
    seen = {}
    bb.pyramid[0].register_forward_pre_hook(lambda mod, args: seen.setdefault("grid", args[0]))
    with torch.no_grad():
        bb(x)
        ref = bb.trunk.forward_intermediates(x, indices=[len(bb.trunk.blocks) - 1], norm=True,
                                             intermediates_only=True)[0]
    torch.testing.assert_close(seen["grid"], ref)


@pytest.mark.parametrize("name", ["beit_shared", "beit_p8"])
def test_beit_rel_pos_tables_get_gradients_at_other_sizes(ckpts, name):
    """BEiT at a non-native grid resamples its rel-pos tables differentiably, so they still train."""
    bb = MIMBackbone(ckpts[name])
    sum(o.square().mean() for o in bb(torch.randn(1, 3, 48, 80))).backward()
    tables = [p for n, p in bb.trunk.named_parameters() if "relative_position_bias_table" in n]
    assert tables and all(p.grad is not None and p.grad.abs().sum() > 0 for p in tables)
    missing = [n for n, p in bb.named_parameters() if p.grad is None]
    assert not missing, missing  # no unused parameters (DDP-safe)
    copy.deepcopy(bb)
    pickle.loads(pickle.dumps(bb))  # EMA hooks and workers copy models


@pytest.mark.parametrize("name", ["swin", "swinv2"])
def test_swin_native_stages_any_input_size(ckpts, name):
    bb = MIMBackbone(ckpts[name])
    assert bb.family == "swin" and bb.strides == [4, 8, 16, 32] and bb.out_channels == [32, 64, 128, 256]
    for size in SIZES:
        h, w = size or (64, 64)
        outs = bb(torch.randn(2, 3, h, w))
        assert [tuple(o.shape) for o in outs] == _expected_shapes(h, w, bb.strides, bb.out_channels), (name, h, w)
    sum(o.mean() for o in bb(torch.randn(1, 3, 64, 96))).backward()
    assert not [n for n, p in bb.named_parameters() if p.grad is None]


def test_swin_subset_prunes_later_stages_and_projects(ckpts):
    bb = MIMBackbone(ckpts["swin"], out_indices=(1, 2), out_channels=16)
    assert len(bb.trunk.layers) == 3 and bb.strides == [8, 16] and bb.out_channels == [16, 16]
    outs = bb(torch.randn(1, 3, 64, 128))
    assert [tuple(o.shape) for o in outs] == [(1, 16, 8, 16), (1, 16, 4, 8)]
    sum(o.mean() for o in outs).backward()
    assert not [n for n, p in bb.named_parameters() if p.grad is None]


# ---------------------------------------------------------------------------------------------------- weights

@pytest.mark.parametrize("name", ["vit_p8", "beit_shared", "swin"])
def test_weights_equal_checkpoint_after_init_weights(ckpts, name):
    """Also under a parent whose init_cfg re-initialises every Linear / Conv2d / LayerNorm (mmengine runs it
    before the children's init_weights): the trunk still holds exactly the checkpoint's tensors."""

    class Parent(BaseModule):
        def __init__(self):
            super().__init__(init_cfg=[dict(type="Normal", layer=["Linear", "Conv2d"], std=1.0),
                                       dict(type="Constant", layer="LayerNorm", val=3.0)])
            self.backbone = MIMBackbone(ckpts[name])

    ref = load_canonical(ckpts[name]).state_dict
    for model, bb in [(b := MIMBackbone(ckpts[name]), b), (p := Parent(), p.backbone)]:
        model.init_weights()
        own = bb.trunk.state_dict()
        assert own and bb.coverage.complete
        for k, v in own.items():
            torch.testing.assert_close(v, ref[k], rtol=0, atol=0, msg=k)
        assert bb.is_init


def test_partial_checkpoint_is_an_error(ckpts):
    with pytest.raises(CheckpointError, match="does not fill the backbone"):
        MIMBackbone(ckpts["vit_partial"])
    bb = MIMBackbone(ckpts["vit_partial"], allow_partial=True)
    assert not bb.coverage.complete and bb.coverage.missing


def test_bad_arguments_are_clear_errors(ckpts):
    with pytest.raises(CheckpointError, match="not supported"):
        MIMBackbone(ckpts["resnet"])
    with pytest.raises(BenchmarkError, match="init_cfg"):
        MIMBackbone(ckpts["vit_p4"], init_cfg=dict(type="Pretrained", checkpoint=ckpts["vit_p4"]))
    with pytest.raises(BenchmarkError, match="out_indices"):
        MIMBackbone(ckpts["vit_p4"], out_indices=(0, 4))


@pytest.mark.parametrize("name", ["vit_p4", "swin"])
def test_frozen_trunk_gets_no_grads(ckpts, name):
    bb = MIMBackbone(ckpts[name], frozen=True)
    bb.train()
    assert not bb.trunk.training and all(not m.training for m in bb.trunk.modules())
    assert all(not p.requires_grad for p in bb.trunk.parameters())
    sum(o.mean() for o in bb(torch.randn(2, 3, 64, 64))).backward()
    assert all(p.grad is None for p in bb.trunk.parameters())
    new = [p for n, p in bb.named_parameters() if not n.startswith("trunk.")]
    assert new and all(p.grad is not None for p in new)  # the new pyramid / norms still train
    bb.init_weights()  # reloading keeps it frozen
    assert all(not p.requires_grad for p in bb.trunk.parameters())


def test_drop_path_rate_reaches_timm(ckpts):
    bb = MIMBackbone(ckpts["vit_p4"], drop_path_rate=0.2)
    assert bb.trunk.blocks[-1].drop_path1.drop_prob == pytest.approx(0.2)


# ---------------------------------------------------------------------------------------------------- layer decay

class _Detector(nn.Module):
    def __init__(self, ckpt):
        super().__init__()
        self.backbone = MIMBackbone(ckpt)
        self.head = nn.Sequential(nn.Conv2d(self.backbone.out_channels[0], 8, 1), nn.BatchNorm2d(8))


def _by_param(groups):
    return {id(p): g for g in groups for p in g["params"]}


def test_layer_decay_groups_vit(ckpts):
    decay, lr, wd = 0.5, 1e-3, 0.05
    model = _Detector(ckpts["vit_p4"])
    groups = layer_decay_param_groups(model, lr, wd, decay)
    of = _by_param(groups)
    assert len(of) == sum(1 for _ in model.parameters())  # every parameter exactly once
    L = 2
    layer_of = {"stem": 0, "blocks.0": 1, "blocks.1": 2, "norm": 3}  # official MIM codes: the final norm at the head
    for n, p in model.backbone.trunk.named_parameters():
        part = "stem" if n.split(".")[0] in ("cls_token", "pos_embed", "patch_embed") else \
            ("norm" if n.startswith("norm.") else ".".join(n.split(".")[:2]))
        g = of[id(p)]
        assert g["lr_scale"] == decay ** (L + 1 - layer_of[part]), n
        assert g["lr"] == pytest.approx(lr * g["lr_scale"])
        no_decay = p.ndim <= 1 or n in ("pos_embed", "cls_token")
        assert g["weight_decay"] == (0.0 if no_decay else wd), n
    for p in list(model.backbone.pyramid.parameters()) + list(model.head.parameters()):
        assert of[id(p)]["lr_scale"] == 1.0 and of[id(p)]["lr"] == lr
        assert of[id(p)]["weight_decay"] == (0.0 if p.ndim <= 1 else wd)  # heads' biases / BN too (BEiT's rule)


def test_no_decay_rules_over_the_whole_model(ckpts):
    """1d: every 1-D parameter (heads included) and position tables; norms: norm layers and position tables, biases
    decayed (mmdet / mmseg custom_keys, detectron2); none: everything decayed (OSTrack, SwinTrack)."""
    model = _Detector(ckpts["swin"])
    trunk = model.backbone.trunk
    qkv_bias, norm_w = trunk.layers[0].blocks[0].attn.qkv.bias, trunk.layers[0].blocks[0].norm1.weight
    table = trunk.layers[0].blocks[0].attn.relative_position_bias_table
    head_bias, head_bn = model.head[0].bias, model.head[1].weight
    wd = 0.05
    expect = {"1d": (0, 0, 0, 0, 0), "norms": (wd, 0, 0, wd, 0), "none": (wd, wd, wd, wd, wd)}
    for rule, values in expect.items():
        of = _by_param(layer_decay_param_groups(model, 1e-3, wd, 0.9, no_decay_rule=rule))
        got = tuple(of[id(p)]["weight_decay"] for p in (qkv_bias, norm_w, table, head_bias, head_bn))
        assert got == values, rule
    with pytest.raises(BenchmarkError, match="no_decay_rule"):
        layer_decay_param_groups(model, 1e-3, wd, 0.9, no_decay_rule="bias")


def test_official_layer_ids_swin_merging_and_final_norm(ckpts):
    """SimMIM's get_swin_layer: a patch merging ends the stage before it (the id of that stage's last block); the
    final norm takes the head id (timm: the next stage's first block, the last block)."""
    bb = MIMBackbone(ckpts["swin"])
    ids, head = trunk_layer_ids(bb.trunk)
    depths = [len(s.blocks) for s in bb.trunk.layers]
    assert ids["norm.weight"] == head == sum(depths) + 1
    for i in range(1, len(depths)):
        merge = [n for n in ids if n.startswith(f"layers.{i}.downsample.")]
        assert merge and all(ids[n] == sum(depths[:i]) for n in merge)
        assert ids[f"layers.{i - 1}.blocks.{depths[i - 1] - 1}.mlp.fc1.weight"] == sum(depths[:i])
        assert ids[f"layers.{i}.blocks.0.mlp.fc1.weight"] == sum(depths[:i]) + 1


def test_backbone_lr_mult_covers_the_backbones_own_layers(ckpts):
    """mmseg's custom_keys={'backbone': lr_mult 0.1}: the stage-output norms of a Swin MIMBackbone are backbone."""
    model = _Detector(ckpts["swin"])
    extras = [p for n, p in model.backbone.named_parameters() if not n.startswith("trunk.")]
    assert extras
    of = _by_param(layer_decay_param_groups(model, 1e-3, 0.05, 1.0, trunk_lr_mult=0.1))
    assert all(of[id(p)]["lr"] == pytest.approx(1e-4) for p in extras)
    assert of[id(model.head[0].weight)]["lr"] == pytest.approx(1e-3)


@pytest.mark.parametrize("name", ["beit_p8", "swin"])
def test_layer_decay_groups_follow_timm_group_matcher(ckpts, name):
    decay = 0.7
    bb = MIMBackbone(ckpts[name])
    layer_map, head = trunk_layer_ids(bb.trunk)
    n_blocks = sum(len(s.blocks) for s in bb.trunk.layers) if name == "swin" else len(bb.trunk.blocks)
    below = [v for n, v in layer_map.items() if not n.startswith(("norm.", "fc_norm.", "rel_pos_bias."))]
    assert head == n_blocks + 1 and max(below) == n_blocks  # L + 1 layers below the head
    assert all(layer_map[n] == head for n in layer_map if n.startswith("norm."))  # the final norm: head lr
    of = _by_param(layer_decay_param_groups(bb, 1.0, 0.1, decay))
    for n, p in bb.trunk.named_parameters():
        assert of[id(p)]["lr_scale"] == pytest.approx(decay ** (head - layer_map[n])), n
        if "relative_position_bias_table" in n or p.ndim <= 1:
            assert of[id(p)]["weight_decay"] == 0.0, n
    assert of[id(bb.trunk.patch_embed.proj.weight)]["lr_scale"] == pytest.approx(decay ** head)


def test_layer_decay_constructor_in_mmengine_root_registry(ckpts):
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS

    assert OPTIM_WRAPPER_CONSTRUCTORS.get("LayerDecayOptimWrapperConstructor") is LayerDecayOptimWrapperConstructor
    assert OPTIM_WRAPPER_CONSTRUCTORS.get("MIMLayerDecayOptimWrapperConstructor") is LayerDecayOptimWrapperConstructor
    model = _Detector(ckpts["vit_p4"])
    wrapper = build_optim_wrapper(model, dict(
        optimizer=dict(type="AdamW", lr=2e-3, weight_decay=0.05),
        constructor="LayerDecayOptimWrapperConstructor", paramwise_cfg=dict(layer_decay_rate=0.75)))
    groups = wrapper.optimizer.param_groups
    of = _by_param(groups)
    assert of[id(model.backbone.trunk.cls_token)]["lr"] == pytest.approx(2e-3 * 0.75 ** 3)
    assert of[id(model.backbone.trunk.cls_token)]["weight_decay"] == 0.0
    assert of[id(model.head[0].weight)]["lr"] == pytest.approx(2e-3)
    with pytest.raises(BenchmarkError, match="layer_decay_rate"):
        build_optim_wrapper(model, dict(optimizer=dict(type="AdamW", lr=1e-3),
                                        constructor="LayerDecayOptimWrapperConstructor", paramwise_cfg={}))


def test_backbone_lr_mult_and_head_no_decay_mask2former_recipe(ckpts):
    """Mask2Former's optimizer: the whole trunk at lr x 0.1, named head parameters (its query / level embeddings)
    without weight decay, every other head parameter as before."""
    from mmengine.optim import build_optim_wrapper

    model = _Detector(ckpts["vit_p4"])
    model.query_embed = nn.Embedding(4, 8)
    wrapper = build_optim_wrapper(model, dict(
        optimizer=dict(type="AdamW", lr=1e-3, weight_decay=0.05), constructor="MIMLayerDecayOptimWrapperConstructor",
        paramwise_cfg=dict(layer_decay_rate=1.0, trunk_lr_mult=0.1, head_no_decay=["*query_embed*"])))
    of = _by_param(wrapper.optimizer.param_groups)
    assert len(of) == sum(1 for _ in model.parameters())
    for p in model.backbone.trunk.parameters():
        assert of[id(p)]["lr"] == pytest.approx(1e-4)
    assert of[id(model.query_embed.weight)]["weight_decay"] == 0.0 and of[id(model.query_embed.weight)]["lr"] == 1e-3
    assert of[id(model.head[0].weight)]["weight_decay"] == 0.05


def test_importing_the_backbone_registers_the_layer_decay_constructor():
    # task code imports benchmark.backbone for MIMBackbone only: the constructor must come with it
    code = ("import benchmark.backbone; from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as R; "
            "assert R.get('MIMLayerDecayOptimWrapperConstructor').__module__ == 'benchmark.layer_decay'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr


def test_layer_decay_on_bare_timm_model_puts_its_head_on_top():
    import timm

    m = timm.create_model(VIT, img_size=32, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=5)
    of = _by_param(layer_decay_param_groups(m, 1.0, 0.05, 0.5))
    assert of[id(m.head.weight)]["lr_scale"] == 1.0 and of[id(m.head.weight)]["weight_decay"] == 0.05
    assert of[id(m.blocks[1].mlp.fc1.weight)]["lr_scale"] == 0.5 and of[id(m.pos_embed)]["lr_scale"] == 0.125


# ---------------------------------------------------------------------------------------------------- OpenMMLab

@pytest.mark.mm
@pytest.mark.parametrize("lib", ["mmdet", "mmseg", "mmpose"])
def test_build_by_name_from_each_library_registry(ckpts, lib):
    pytest.importorskip(lib)
    registry = __import__(f"{lib}.registry", fromlist=["MODELS"]).MODELS
    from mmengine.registry import init_default_scope

    init_default_scope(lib)
    bb = registry.build(dict(type="MIMBackbone", checkpoint=ckpts["vit_p4"], out_indices=(0, 1, 2, 3)))
    assert isinstance(bb, MIMBackbone)
    outs = bb(torch.randn(1, 3, 64, 64))
    assert [o.shape[-1] for o in outs] == [16, 8, 4, 2]


@pytest.mark.mm
def test_mmseg_uperhead_loss_step(ckpts):
    pytest.importorskip("mmseg")
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample

    init_default_scope("mmseg")
    model = MODELS.build(dict(
        type="EncoderDecoder",
        data_preprocessor=dict(type="SegDataPreProcessor", mean=[0.0] * 3, std=[1.0] * 3, size=(64, 64)),
        backbone=dict(type="MIMBackbone", checkpoint=ckpts["vit_p8"], out_channels=32),
        decode_head=dict(type="UPerHead", in_channels=[32] * 4, in_index=[0, 1, 2, 3], pool_scales=(1, 2),
                         channels=16, num_classes=3, norm_cfg=dict(type="BN", requires_grad=True),
                         align_corners=False, loss_decode=dict(type="CrossEntropyLoss", loss_weight=1.0)),
        train_cfg=dict(), test_cfg=dict(mode="whole")))
    model.init_weights()
    ref = load_canonical(ckpts["vit_p8"]).state_dict
    torch.testing.assert_close(model.backbone.trunk.blocks[0].attn.qkv.weight, ref["blocks.0.attn.qkv.weight"])
    samples = []
    for _ in range(2):
        s = SegDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, 3, (1, 64, 64)))
        samples.append(s)
    wrapper = build_optim_wrapper(model, dict(
        optimizer=dict(type="AdamW", lr=1e-3, weight_decay=0.05),
        constructor="LayerDecayOptimWrapperConstructor", paramwise_cfg=dict(layer_decay_rate=0.65)))
    data = dict(inputs=[torch.randint(0, 255, (3, 64, 64)).float() for _ in range(2)], data_samples=samples)
    before = model.backbone.trunk.blocks[0].mlp.fc1.weight.detach().clone()
    losses = model.train_step(data, wrapper)
    assert torch.isfinite(losses["loss"]) if "loss" in losses else all(torch.isfinite(v) for v in losses.values())
    assert not torch.equal(before, model.backbone.trunk.blocks[0].mlp.fc1.weight)


@pytest.mark.mm
def test_mmdet_retinanet_loss_step(ckpts):
    pytest.importorskip("mmdet")
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmengine.config import ConfigDict
    from mmengine.registry import init_default_scope
    from mmengine.structures import InstanceData

    init_default_scope("mmdet")
    model = MODELS.build(ConfigDict(  # heads read test_cfg by attribute, as from a Config file
        type="RetinaNet",
        data_preprocessor=dict(type="DetDataPreprocessor", mean=[0.0] * 3, std=[1.0] * 3, pad_size_divisor=32),
        backbone=dict(type="MIMBackbone", checkpoint=ckpts["swin"], out_indices=(1, 2, 3)),
        neck=dict(type="FPN", in_channels=[64, 128, 256], out_channels=16, start_level=0, add_extra_convs="on_input",
                  num_outs=3),
        bbox_head=dict(
            type="RetinaHead", num_classes=2, in_channels=16, stacked_convs=1, feat_channels=16,
            anchor_generator=dict(type="AnchorGenerator", octave_base_scale=4, scales_per_octave=1, ratios=[1.0],
                                  strides=[8, 16, 32]),
            bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[1.0] * 4),
            loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
            loss_bbox=dict(type="L1Loss", loss_weight=1.0)),
        train_cfg=dict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0,
                                     ignore_iof_thr=-1),
                       sampler=dict(type="PseudoSampler"), allowed_border=-1, pos_weight=-1, debug=False),
        test_cfg=dict(nms_pre=100, min_bbox_size=0, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5),
                      max_per_img=10)))
    model.init_weights()
    samples = []
    for _ in range(2):
        s = DetDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64),
                                        scale_factor=(1.0, 1.0), batch_input_shape=(64, 64)))
        s.gt_instances = InstanceData(bboxes=torch.tensor([[4.0, 6.0, 40.0, 50.0]]), labels=torch.tensor([1]))
        samples.append(s)
    data = dict(inputs=[torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8) for _ in range(2)],
                data_samples=samples)
    data = model.data_preprocessor(data, True)
    losses = model.loss(data["inputs"], data["data_samples"])
    total = sum(v.sum() if isinstance(v, torch.Tensor) else sum(x.sum() for x in v) for v in losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.backbone.trunk.patch_embed.proj.weight.grad is not None
    model.eval()
    with torch.no_grad():
        preds = model.predict(data["inputs"], data["data_samples"])
    assert len(preds) == 2


@pytest.mark.mm
def test_mmpose_heatmap_head_loss_step(ckpts):
    pytest.importorskip("mmpose")
    from mmengine.config import ConfigDict
    from mmengine.registry import init_default_scope
    from mmengine.structures import InstanceData, PixelData
    from mmpose.registry import MODELS
    from mmpose.structures import PoseDataSample

    init_default_scope("mmpose")
    model = MODELS.build(ConfigDict(
        type="TopdownPoseEstimator",
        data_preprocessor=dict(type="PoseDataPreprocessor", mean=[0.0] * 3, std=[1.0] * 3),
        backbone=dict(type="MIMBackbone", checkpoint=ckpts["beit_shared"], out_indices=(0,), out_channels=16),
        head=dict(type="HeatmapHead", in_channels=16, out_channels=5, deconv_out_channels=None,
                  loss=dict(type="KeypointMSELoss", use_target_weight=True),
                  decoder=dict(type="MSRAHeatmap", input_size=(48, 64), heatmap_size=(12, 16), sigma=2)),
        test_cfg=dict(flip_test=False)))
    model.init_weights()
    samples = []
    for _ in range(2):
        s = PoseDataSample(metainfo=dict(img_shape=(64, 48), input_size=(48, 64), input_center=(24.0, 32.0),
                                         input_scale=(48.0, 64.0)))
        s.gt_fields = PixelData(heatmaps=torch.rand(5, 16, 12))
        s.gt_instance_labels = InstanceData(keypoint_weights=torch.ones(1, 5))
        samples.append(s)
    data = model.data_preprocessor(dict(inputs=[torch.randint(0, 255, (3, 64, 48), dtype=torch.uint8)] * 2,
                                        data_samples=samples), True)
    losses = model.loss(data["inputs"], data["data_samples"])
    assert torch.isfinite(losses["loss_kpt"])
    losses["loss_kpt"].backward()
    assert model.backbone.trunk.rel_pos_bias.relative_position_bias_table.grad is not None  # 64x48 ≠ 32x32 native
