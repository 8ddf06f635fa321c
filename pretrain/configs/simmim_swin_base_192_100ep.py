# microsoft/SimMIM configs/swin_base__100ep/simmim_pretrain__swin_base__img192_window6__100ep.yaml
# Swin-B, 192 px, window 6, mask patch 32, ratio 0.6, 100 epochs, warmup 10, base lr 2e-4 / warmup 1e-6 /
# min 1e-5 at batch 512 (scaled by total batch / 512), cosine, AdamW wd 0.05, grad clip 5, drop path 0.0
# (the official pre-training yaml sets DROP_PATH_RATE 0.0; 0.1 is its fine-tuning value).
# Official batch: 128 per GPU x 16 GPUs = 2048 (lr 8e-4). Set the data root with
#   --cfg-options train_dataloader.dataset.root=/path/to/imagenet/train
_base_ = ['./_base_/simmim_runtime.py']

model = dict(
    arch='swin_base_patch4_window7_224',
    arch_kwargs=dict(img_size=192, window_size=6, drop_path_rate=0.0),
    mask_patch=32, mask_ratio=0.6)

simmim = dict(epochs=100, warmup_epochs=10, base_lr=2e-4, warmup_lr=1e-6, min_lr=1e-5, lr_policy='cosine',
              checkpoint_interval=5000)

train_dataloader = dict(
    batch_size=128, num_workers=8,
    dataset=dict(type='SimMIMImageFolder', root='data/imagenet/train', img_size=192))
