# Tiny CPU config on the real Fashion-MNIST: Swin 32 px, patch 4, window 4, two stages (encoder stride 8),
# embed 32, mask patch 8, ratio 0.6. Own lr (not the paper's), as the tiny ViT config.
_base_ = ['./_base_/simmim_runtime.py']

model = dict(
    arch='swin_tiny_patch4_window7_224',
    arch_kwargs=dict(img_size=32, window_size=4, depths=(2, 2), embed_dim=32, num_heads=(2, 4)),
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
