"""SimMIM model: loss formula, gradients, mask-token replacement, timm equivalence, weights and export."""

from __future__ import annotations

import math

import pytest
import timm
import torch

from benchmark.checkpoint import load_backbone
from benchmark.errors import BenchmarkError
from pretrain.mask import upsample_mask
from pretrain.simmim import SimMIM, simmim_loss

TINY = {
    "vit": ("vit_tiny_patch16_224", dict(img_size=32, patch_size=4, depth=2, embed_dim=64, num_heads=2)),
    # the official ViT layout: shared relative position bias, no abs. pos-embed, layer scale, final norm
    "beit": ("beit_base_patch16_224", dict(img_size=32, patch_size=4, depth=2, embed_dim=64, num_heads=2,
                                           use_abs_pos_emb=False, use_rel_pos_bias=False,
                                           use_shared_rel_pos_bias=True, init_values=0.1, use_fc_norm=False)),
    "swin": ("swin_tiny_patch4_window7_224", dict(img_size=32, window_size=4, depths=(1, 1), embed_dim=32,
                                                  num_heads=(1, 2))),
    "swinv2": ("swinv2_tiny_window8_256", dict(img_size=32, window_size=4, depths=(1, 1), embed_dim=32,
                                               num_heads=(1, 2))),
}


def build(kind: str, mask_patch: int = 8, ratio: float = 0.6, seed: int = 0, **kw) -> SimMIM:
    torch.manual_seed(seed)
    arch, kwargs = TINY[kind]
    return SimMIM(arch, kwargs, mask_patch, ratio, **kw).eval()


def test_loss_matches_formula_on_random_tensors():
    g = torch.Generator().manual_seed(0)
    x, x_rec = torch.randn(3, 3, 32, 32, generator=g), torch.randn(3, 3, 32, 32, generator=g)
    mask = (torch.rand(3, 8, 8, generator=g) > 0.4).float()
    m = mask.repeat_interleave(4, 1).repeat_interleave(4, 2).unsqueeze(1)  # (B, 1, H, W) pixel mask
    expected = ((x - x_rec).abs() * m).sum() / (m.sum() + 1e-5) / 3
    # by hand, pixel by pixel on one image too
    manual = sum(abs(float(x[b, c, i, j] - x_rec[b, c, i, j])) for b in range(3) for c in range(3)
                 for i in range(32) for j in range(32) if mask[b, i // 4, j // 4] > 0)
    manual /= (float(mask.sum()) * 16 + 1e-5) * 3
    got = simmim_loss(x, x_rec, mask, 4)
    assert torch.allclose(got, expected, rtol=1e-6)
    assert math.isclose(float(got), manual, rel_tol=1e-4)


def test_loss_zero_when_masked_pixels_reconstructed_and_no_grad_on_visible():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 32, 32, generator=g)
    mask = (torch.rand(2, 8, 8, generator=g) > 0.5).float()
    m = upsample_mask(mask, 4)
    junk = torch.randn(2, 3, 32, 32, generator=g) * 5
    rec = (x * m + junk * (1 - m)).requires_grad_(True)  # exact on masked pixels, garbage on visible ones
    loss = simmim_loss(x, rec, mask, 4)
    assert float(loss) == pytest.approx(0.0, abs=1e-7)
    rec2 = torch.randn(2, 3, 32, 32, generator=g).requires_grad_(True)
    simmim_loss(x, rec2, mask, 4).backward()
    grad = rec2.grad
    visible = (1 - m).expand_as(grad).bool()
    assert grad[visible].abs().max() == 0  # visible pixels get no gradient through the loss
    assert (grad[~visible] != 0).all()     # every masked pixel does


@pytest.mark.parametrize("kind", list(TINY))
def test_ratio_zero_equals_plain_timm_forward_features(kind):
    model = build(kind, ratio=0.0)
    x = torch.randn(2, 3, 32, 32)
    z = model.encode(x, model.mask_generator(2))
    ref_model = timm.create_model(TINY[kind][0], num_classes=0, **TINY[kind][1]).eval()
    ref_model.load_state_dict(model.encoder.state_dict())
    ref = ref_model.forward_features(x)
    if kind in ("vit", "beit"):
        ref = ref[:, ref_model.num_prefix_tokens:].transpose(1, 2).reshape(z.shape)
    else:
        ref = ref.permute(0, 3, 1, 2)
    assert torch.allclose(z, ref, atol=1e-5)
    assert torch.allclose(model.encode(x), ref, atol=1e-5)  # no mask at all: same


@pytest.mark.parametrize("kind", list(TINY))
def test_mask_token_replaces_masked_patches(kind):
    model = build(kind)
    p = model.patch_size
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 32, 32, generator=g)
    mask = model.mask_generator(2, generator=g)
    pix = upsample_mask(mask, p).expand_as(x).bool()
    # pixels under the mask are never seen: changing them leaves every output feature unchanged
    x_masked_changed = x.clone()
    x_masked_changed[pix] = torch.randn(int(pix.sum()), generator=g) * 10
    z = model.encode(x, mask)
    assert torch.equal(model.encode(x_masked_changed, mask), z)
    # ... whereas changing visible pixels changes the features
    x_vis_changed = x.clone()
    x_vis_changed[~pix] += 1.0
    assert not torch.allclose(model.encode(x_vis_changed, mask), z, atol=1e-4)
    # the token entering the blocks is the mask token exactly where the mask is 1, the patch embedding elsewhere
    emb = model.encoder.patch_embed(x)
    mixed = model._mask_tokens(emb, mask)
    w = mask.reshape(*emb.shape[:-1]).bool()
    assert torch.equal(mixed[w], model.mask_token.reshape(-1).expand(int(w.sum()), -1))
    assert torch.equal(mixed[~w], emb[~w])
    # and the mask token gets a gradient from the loss
    model.train()
    model(x, mask).backward()
    assert model.mask_token.grad is not None and model.mask_token.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["vit", "beit", "swin"])
def test_masked_only_loss_equals_full_decoder_loss(kind):
    fast, full = build(kind), build(kind, masked_only_loss=False)
    full.load_state_dict(fast.state_dict())
    x = torch.randn(3, 3, 32, 32)
    mask = fast.mask_generator(3, generator=torch.Generator().manual_seed(3))
    a, b = fast(x, mask), full(x, mask)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    a.backward()
    b.backward()
    for (n, pa), pb in zip(fast.named_parameters(), full.parameters()):
        assert (pa.grad is None) == (pb.grad is None), n
        if pa.grad is not None:
            assert torch.allclose(pa.grad, pb.grad, rtol=1e-4, atol=1e-6), n
    # forward(..., return_rec=True) decodes everything and gives the same loss
    loss, rec = fast(x, mask, return_rec=True)
    assert rec.shape == x.shape and torch.allclose(loss, b, rtol=1e-5)


def test_decoder_and_strides():
    vit, swin = build("vit"), build("swin")
    assert vit.encoder_stride == 4 and swin.encoder_stride == 8
    assert vit.decoder[0].out_channels == 4 * 4 * 3 and swin.decoder[0].out_channels == 8 * 8 * 3
    torch.manual_seed(0)
    official_vit = SimMIM("beit_base_patch16_224", dict(TINY["beit"][1], img_size=224, patch_size=16), 32, 0.6)
    assert official_vit.encoder_stride == 16 and official_vit.mask_generator.token_grid == 14
    assert abs(float(official_vit.mask_token.std()) - 0.02) < 0.006  # trunc_normal(std .02)


@pytest.mark.parametrize("kind", list(TINY))
def test_encoder_state_dict_is_timm_and_export_loads_with_full_coverage(kind, tmp_path):
    model = build(kind)
    arch, kwargs = TINY[kind]
    sd = model.encoder_state_dict()
    assert list(sd) == list(timm.create_model(arch, num_classes=0, **kwargs).state_dict())
    assert not any("mask_token" in k or k.startswith("decoder") for k in sd)
    path = model.export(tmp_path / "mim.pth")
    backbone = load_backbone(path).eval()
    assert backbone.coverage.complete and backbone.coverage.fraction == 1.0
    assert backbone.mim_meta["method"] == "simmim" and backbone.mim_meta["arch"] == arch
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(backbone.forward_features(x), model.encoder.forward_features(x))


def test_no_weight_decay_groups():
    from pretrain.engine import SimMIMModel, SimMIMOptimWrapperConstructor

    torch.manual_seed(0)
    arch, kwargs = TINY["beit"]
    model = SimMIMModel(arch, kwargs, mask_patch=8)
    ctor = SimMIMOptimWrapperConstructor(dict(optimizer=dict(type="AdamW", lr=1e-3, weight_decay=0.05)))
    wrapper = ctor(model)
    decay, skip = wrapper.optimizer.param_groups
    assert decay["weight_decay"] == 0.05 and skip["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    skip_names = {names[id(p)] for p in skip["params"]}
    decay_names = {names[id(p)] for p in decay["params"]}
    assert len(skip_names) + len(decay_names) == len(names)
    for n in ("simmim.mask_token", "simmim.encoder.cls_token",
              "simmim.encoder.rel_pos_bias.relative_position_bias_table", "simmim.encoder.norm.weight",
              "simmim.encoder.blocks.0.norm1.bias", "simmim.encoder.blocks.0.attn.q_bias",
              "simmim.encoder.blocks.0.gamma_1", "simmim.decoder.0.bias", "simmim.encoder.patch_embed.proj.bias"):
        assert n in skip_names, n
    for n in ("simmim.encoder.blocks.0.attn.qkv.weight", "simmim.encoder.blocks.1.mlp.fc1.weight",
              "simmim.encoder.patch_embed.proj.weight", "simmim.decoder.0.weight"):
        assert n in decay_names, n


@pytest.mark.parametrize("policy", ["cosine", "multistep"])
def test_lr_schedule_matches_official(policy):
    """SimMIMLR reproduces microsoft/SimMIM's schedulers (timm CosineLRScheduler with t_in_epochs=False, and
    its MultiStepLRScheduler), iteration by iteration."""
    from pretrain.engine import SimMIMLR

    base, warm, lo, total, warmup = 8e-4, 4e-6, 4e-5, 200, 20
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=base)
    sched = SimMIMLR(opt, total_iters=total, warmup_iters=warmup, warmup_ratio=warm / base, min_ratio=lo / base,
                     policy=policy, milestones=[150], gamma=0.1)
    got = []
    for _ in range(total):
        got.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    if policy == "cosine":
        from timm.scheduler.cosine_lr import CosineLRScheduler

        opt2 = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=base)
        ref_s = CosineLRScheduler(opt2, t_initial=total, lr_min=lo, warmup_lr_init=warm, warmup_t=warmup,
                                  cycle_limit=1, t_in_epochs=False)
        ref = []
        for t in range(total):
            ref_s.step_update(t)
            ref.append(opt2.param_groups[0]["lr"])
    else:
        ref = [warm + t * (base - warm) / warmup if t < warmup else base * (0.1 if t >= 150 else 1.0)
               for t in range(total)]
    assert got == pytest.approx(ref, rel=1e-9, abs=1e-12)


def test_lr_scaling_rule():
    from mmengine.config import Config

    from pretrain.train import resolve_schedule

    cfg = Config.fromfile("pretrain/configs/simmim_swin_base_192_100ep.py")
    cfg.train_dataloader.batch_size = 128
    cfg.optim_wrapper.accumulative_counts = 2
    plan = resolve_schedule(cfg, dataset_len=1_281_167, world_size=8, device="cpu")
    assert plan["total_batch"] == 128 * 8 * 2
    assert plan["lr"] == pytest.approx(2e-4 * 2048 / 512)
    assert plan["min_lr"] == pytest.approx(1e-5 * 4) and plan["warmup_lr"] == pytest.approx(1e-6 * 4)
    ipe = 1_281_167 // (128 * 8)
    assert plan["iters_per_epoch"] == ipe and plan["max_iters"] == 100 * ipe and plan["warmup_iters"] == 10 * ipe
    assert cfg.optim_wrapper.optimizer.lr == plan["lr"] and cfg.optim_wrapper.clip_grad.max_norm == 5.0
    assert cfg.optim_wrapper.optimizer.betas == (0.9, 0.999) and cfg.optim_wrapper.optimizer.weight_decay == 0.05
    vit = Config.fromfile("pretrain/configs/simmim_vit_base_224_800ep.py")
    plan = resolve_schedule(vit, dataset_len=1_281_167, world_size=16, device="cpu")
    ipe = 1_281_167 // (128 * 16)
    assert plan["lr"] == pytest.approx(1e-4 * 2048 / 512) and plan["milestones"] == [700 * ipe]
    assert plan["policy"] == "multistep" and plan["warmup_iters"] == 10 * ipe
    with pytest.raises(BenchmarkError, match="needs a CUDA GPU"):
        vit.simmim.amp = "fp16"
        resolve_schedule(vit, 1000, 1, device="cpu")


@pytest.mark.parametrize("arch,kwargs,words", [
    ("resnet18", {}, "supports timm ViT"),
    ("eva02_tiny_patch14_224", dict(img_size=28, depth=1), "supports timm ViT"),  # plain family, no SimMIM path
    ("vit_tinny_patch16_224", {}, "unknown timm architecture"),
    ("vit_tiny_patch16_224", dict(img_size=32, patch_size=4, depth=1, embed_dim=32, num_heads=1, bogus=1),
     "timm cannot build"),
])
def test_bad_models(arch, kwargs, words):
    with pytest.raises(BenchmarkError, match=words):
        SimMIM(arch, kwargs, 8, 0.6)


def test_mask_patch_not_multiple_of_model_patch():
    with pytest.raises(BenchmarkError, match="not divisible"):
        SimMIM(*TINY["vit"], mask_patch=6)
    with pytest.raises(BenchmarkError, match="not divisible"):
        SimMIM(*TINY["vit"], mask_patch=12)
