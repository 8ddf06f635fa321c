"""SwinV2 fine-tuned with larger windows than pre-training (the paper's depth code) and the official Swin layer-decay
counting (benchmark/swin_windows.py), against references written out here from the official code
(SwinTransformer/MIM-Depth-Estimation models/swin_transformer_v2.py norm8_log_bylayer, models/optimizer.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from benchmark.backbone import MIMBackbone
from benchmark.checkpoint import build_model
from benchmark.errors import BenchmarkError
from benchmark.layer_decay import LayerDecayOptimWrapperConstructor, trunk_layer_ids
from benchmark.swin_windows import stage_shifts, stage_windows, swin_merge_layer_ids
from tests.conftest import make_ckpt

# a SwinV2 "pre-trained" at 192 with window 12: per-stage windows 12/12/12/6 (SimMIM SwinV2-B geometry), tiny widths
TINY_V2 = ("swinv2_tiny_window8_256", {"img_size": 192, "window_size": 12, "depths": (2, 2, 2, 2), "embed_dim": 8,
                                       "num_heads": (1, 1, 2, 2)})
TINY_V1 = ("swin_tiny_patch4_window7_224", {"depths": (2, 2, 2, 2), "embed_dim": 8, "num_heads": (1, 1, 2, 2)})


@pytest.fixture(scope="module")
def v2_ckpt(tmp_path_factory):
    return make_ckpt(tmp_path_factory.mktemp("swinw") / "v2.pth", TINY_V2)


def _official_cpb_coords(window: int, pretrained: int) -> torch.Tensor:
    """norm8_log_bylayer: offsets / (pretrain_window - 1) * 8, then sign * log2(|x| + 1) / log2(8); (2W-1)^2 x 2."""
    r = torch.arange(-(window - 1), window, dtype=torch.float32) / (pretrained - 1) * 8
    t = torch.stack(torch.meshgrid(r, r, indexing="ij"), dim=-1).reshape(-1, 2)
    return torch.sign(t) * torch.log2(t.abs() + 1.0) / math.log2(8)


def _official_bias(attn, window: int, pretrained: int) -> torch.Tensor:
    """(heads, W*W, W*W): 16 * sigmoid(cpb_mlp(coords))[index], the index written out."""
    table = attn.cpb_mlp(_official_cpb_coords(window, pretrained))  # (2W-1)^2, heads
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    index = (ys[:, None] - ys[None, :] + window - 1) * (2 * window - 1) + (xs[:, None] - xs[None, :] + window - 1)
    return 16 * torch.sigmoid(table[index].permute(2, 0, 1))


def _official_window_attention(attn, x: torch.Tensor, window: int, pretrained: int) -> torch.Tensor:
    """SwinV2 window attention written out: cosine attention x clamped logit scale + CPB bias, softmax, proj."""
    b, n, c = x.shape
    h = attn.num_heads
    bias = torch.cat([attn.q_bias, torch.zeros_like(attn.v_bias), attn.v_bias])
    q, k, v = F.linear(x, attn.qkv.weight, bias).reshape(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
    logits = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
    logits = logits * torch.clamp(attn.logit_scale, max=math.log(100.0)).exp()
    out = (logits + _official_bias(attn, window, pretrained)).softmax(-1) @ v
    return attn.proj(out.transpose(1, 2).reshape(b, n, c))


@pytest.mark.parametrize("crop,windows,shifts", [
    (480, [30, 30, 30, 15], [15, 15, 0, 0]),   # NYU: --window_size 30 30 30 15 --use_shift True True False False
    (352, [22, 22, 22, 11], [11, 11, 0, 0]),   # KITTI: --window_size 22 22 22 11, same use_shift
])
def test_paper_windows_and_shifts_load_fully(v2_ckpt, crop, windows, shifts):
    bb = MIMBackbone(str(v2_ckpt), out_indices=(3,), window_size=windows, img_size=crop)
    assert bb.coverage.complete, str(bb.coverage)
    assert stage_windows(bb.trunk) == [(w, w) for w in windows]
    assert stage_shifts(bb.trunk) == [(s, s) for s in shifts]
    # the CPB keeps the checkpoint's own (pre-training) windows as its coordinate scale: --pretrain_window_size
    pws = [tuple(s.blocks[0].attn.pretrained_window_size) for s in bb.trunk.layers]
    assert pws == [(12, 12), (12, 12), (12, 12), (6, 6)]
    assert bb.meta["kwargs"]["window_size"] == tuple(windows)  # an exported trunk is rebuilt with them
    # the checkpoint's weights, unchanged
    ref = MIMBackbone(str(v2_ckpt), out_indices=(3,))
    for (k, a), (k2, b) in zip(bb.trunk.state_dict().items(), ref.trunk.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k


def test_default_keeps_the_checkpoint_windows(v2_ckpt):
    bb = MIMBackbone(str(v2_ckpt), out_indices=(3,))
    assert stage_windows(bb.trunk) == [(12, 12), (12, 12), (12, 12), (6, 6)]
    assert "pretrained_window_sizes" not in bb.meta["kwargs"]


def test_bias_is_the_official_cpb_and_extends_the_pretrained_one(v2_ckpt):
    bb = MIMBackbone(str(v2_ckpt), out_indices=(3,), window_size=[30, 30, 30, 15], img_size=480)
    ref = MIMBackbone(str(v2_ckpt), out_indices=(3,))
    torch.manual_seed(0)
    for stage, (w, p) in enumerate([(30, 12), (30, 12), (30, 12), (15, 6)]):
        attn = bb.trunk.layers[stage].blocks[0].attn
        x = torch.randn(1, w * w, attn.qkv.in_features)
        with torch.no_grad():
            torch.testing.assert_close(attn(x), _official_window_attention(attn, x, w, p), rtol=1e-4, atol=1e-5)
            # offsets the pre-trained window also has get the pre-trained bias (same coordinates, same MLP)
            own = ref.trunk.layers[stage].blocks[0].attn
            pw = own.window_size[0]
            big = _official_bias(attn, w, p).reshape(-1, w, w, w, w)[:, :pw, :pw, :pw, :pw]
            torch.testing.assert_close(big.reshape(-1, pw * pw, pw * pw), _official_bias(own, pw, p))


def test_forward_backward_at_the_paper_crop(v2_ckpt):
    bb = MIMBackbone(str(v2_ckpt), out_indices=(3,), window_size=[22, 22, 22, 11], img_size=352)  # KITTI
    with torch.no_grad():  # timm zero-inits the res-post-norm gains: no gradient would reach attention
        for name, p in bb.trunk.named_parameters():
            if name.endswith(("norm1.weight", "norm2.weight")):
                p.fill_(1.0)
    (out,) = bb(torch.randn(1, 3, 352, 352))
    assert out.shape == (1, 64, 11, 11)
    out.square().mean().backward()
    g = bb.trunk.layers[0].blocks[1].attn.cpb_mlp[0].weight.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    with torch.no_grad():  # a wider input also runs (maps padded to window multiples, masks built per input)
        (out2,) = bb(torch.randn(1, 3, 352, 416))
    assert out2.shape == (1, 64, 11, 13)


def test_swin_v1_window_change_is_refused(tmp_path):
    ckpt = make_ckpt(tmp_path / "v1.pth", TINY_V1)
    with pytest.raises(BenchmarkError, match="relative-position bias table"):
        MIMBackbone(str(ckpt), out_indices=(3,), window_size=14, img_size=448)
    bb = MIMBackbone(str(ckpt), out_indices=(3,), window_size=7)  # its own windows: accepted
    assert bb.coverage.complete and stage_windows(bb.trunk)[0] == (7, 7)


def test_non_swin_window_is_refused(tmp_path):
    ckpt = make_ckpt(tmp_path / "vit.pth", ("vit_tiny_patch16_224", {"depth": 1, "embed_dim": 32, "num_heads": 1}))
    with pytest.raises(BenchmarkError, match="Swin backbones"):
        MIMBackbone(str(ckpt), window_size=14)


def _official_layer_id(timm_name: str, depths: list[int]) -> tuple[int, int]:
    """models/optimizer.py get_num_layer_for_swin + SwinLayerDecayOptimizerConstructor on the official names
    (official ``layers.{i}.downsample`` ends stage i; timm's ``layers.{i+1}.downsample`` starts stage i + 1).
    Returns (layer id, num_layers)."""
    per_stage = [d + 1 for d in depths[:-1]] + [depths[-1]]
    num_layers = sum(per_stage) + 2
    parts = timm_name.split(".")
    if parts[0] == "patch_embed":
        return 0, num_layers
    if parts[0] == "layers" and parts[2] == "blocks":
        stage, block = int(parts[1]), int(parts[3])
        return block + sum(per_stage[:stage]) + 1, num_layers
    if parts[0] == "layers" and parts[2] == "downsample":
        stage = int(parts[1]) - 1  # the official stage it ends
        return sum(per_stage[:stage + 1]), num_layers
    return num_layers - 1, num_layers  # the output norm (official norm3) and everything else: the head


def test_merge_own_layer_counts_as_the_official_code():
    depths = [2, 2, 18, 2]  # SwinV2-B: 29 layer ids
    with torch.device("meta"):
        trunk = build_model({"arch": "swinv2_base_window12_192", "kwargs": {}})
    ids, head = swin_merge_layer_ids(trunk)
    _, num_layers = _official_layer_id("norm.weight", depths)
    assert num_layers == 29 and head == num_layers - 1
    for name, _ in trunk.named_parameters():
        if name.startswith("head."):
            continue
        assert ids.get(name, head) == _official_layer_id(name, depths)[0], name
    assert trunk_layer_ids(trunk, swin_merge_own_layer=True) == (ids, head)
    assert trunk_layer_ids(trunk)[1] == sum(depths) + 1  # default: SimMIM's counting (one id per block)


def test_constructor_lr_scales_with_merge_own_layer(v2_ckpt):
    model = torch.nn.Module()
    model.backbone = MIMBackbone(str(v2_ckpt), out_indices=(3,))
    model.head = torch.nn.Linear(2, 2)
    rate = 0.9

    def scales(**extra):
        ctor = LayerDecayOptimWrapperConstructor(dict(optimizer=dict(type="AdamW", lr=1.0, weight_decay=0.05)),
                                                 dict(layer_decay_rate=rate, **extra))
        opt = ctor(model).optimizer
        by_param = {id(p): g["lr_scale"] for g in opt.param_groups for p in g["params"]}
        return {n: by_param[id(p)] for n, p in model.named_parameters()}

    official = scales(swin_merge_own_layer=True)
    # depths 2/2/2/2: 8 blocks + 3 mergings + patch embed + head = 13 ids, scale rate^(12 - id)
    assert official["backbone.trunk.patch_embed.proj.weight"] == pytest.approx(rate ** 12)
    assert official["backbone.trunk.layers.0.blocks.0.norm1.weight"] == pytest.approx(rate ** 11)
    assert official["backbone.trunk.layers.1.downsample.reduction.weight"] == pytest.approx(rate ** 9)
    assert official["backbone.trunk.layers.3.blocks.1.mlp.fc1.weight"] == pytest.approx(rate ** 1)
    assert official["backbone.trunk.norm.weight"] == pytest.approx(1.0)
    assert official["head.weight"] == pytest.approx(1.0)
    default = scales()  # SimMIM: a merging takes the id of the block before it, 8 blocks, the norm at the head
    assert default["backbone.trunk.patch_embed.proj.weight"] == pytest.approx(rate ** 9)
    assert default["backbone.trunk.layers.1.downsample.reduction.weight"] == pytest.approx(rate ** 7)
    assert default["backbone.trunk.layers.0.blocks.1.mlp.fc1.weight"] == pytest.approx(rate ** 7)
    assert default["backbone.trunk.norm.weight"] == pytest.approx(1.0)
