# microsoft/SimMIM configs/vit_base__800ep/simmim_pretrain__vit_base__img224__800ep.yaml
# ViT-B/16, 224 px, the official encoder: no absolute position embedding, one relative position bias shared by
# all blocks, layer scale 0.1, qkv bias, final LayerNorm (no mean pooling), drop path 0.1. In timm this is
# `beit_base_patch16_224` with the overrides below. Mask patch 32, ratio 0.6. 800 epochs, warmup 10 from
# 5e-7, base lr 1e-4 at batch 512 (scaled by total batch / 512), multistep x0.1 at epoch 700, AdamW wd 0.05,
# grad clip 5. Official batch: 128 per GPU x 16 GPUs = 2048.
_base_ = ['./_base_/simmim_runtime.py']

model = dict(
    arch='beit_base_patch16_224',
    arch_kwargs=dict(img_size=224, use_abs_pos_emb=False, use_rel_pos_bias=False, use_shared_rel_pos_bias=True,
                     init_values=0.1, use_fc_norm=False, drop_path_rate=0.1),
    mask_patch=32, mask_ratio=0.6)

simmim = dict(epochs=800, warmup_epochs=10, base_lr=1e-4, warmup_lr=5e-7, min_lr=5e-6, lr_policy='multistep',
              milestones=[700], gamma=0.1, checkpoint_interval=5000)

train_dataloader = dict(
    batch_size=128, num_workers=8,
    dataset=dict(type='SimMIMImageFolder', root='data/imagenet/train', img_size=224))
