# Tiny CPU config on the real Fashion-MNIST (the embedded demo and the tests): ViT 32 px, patch 4, depth 4,
# embed 64, mask patch 8 (4x4 cells, 10 masked), ratio 0.6. A tiny model learns nothing at SimMIM's base lr in a
# few hundred steps, so the lr here is its own choice (not the paper's).
_base_ = ['./_base_/simmim_runtime.py']

model = dict(
    arch='vit_tiny_patch16_224',
    arch_kwargs=dict(img_size=32, patch_size=4, depth=4, embed_dim=64, num_heads=2),
    mask_patch=8, mask_ratio=0.6)

simmim = dict(iters=300, warmup_iters=20, base_lr=8e-3, warmup_lr=8e-6, min_lr=8e-5, lr_policy='cosine',
              checkpoint_interval=100, max_keep_ckpts=2,
              vis=dict(num=6, seed=0, dataset=dict(type='SimMIMFashionMNIST', split='test', img_size=32,
                                                   augment=False, limit=64)))

train_dataloader = dict(
    batch_size=64, num_workers=0, persistent_workers=False, pin_memory=False,
    dataset=dict(type='SimMIMFashionMNIST', split='train', img_size=32, limit=20000))

default_hooks = dict(logger=dict(type='LoggerHook', interval=20))
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
