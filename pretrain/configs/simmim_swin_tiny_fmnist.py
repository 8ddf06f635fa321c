# Tiny CPU config on the real Fashion-MNIST: Swin 32 px, patch 4, window 4, two stages (encoder stride 8),
# embed 32, mask patch 8, ratio 0.6. Training schedule and data as the tiny ViT config; only the encoder differs.
_base_ = ['./simmim_vit_tiny_fmnist.py']

model = dict(
    arch='swin_tiny_patch4_window7_224',
    arch_kwargs=dict(_delete_=True, img_size=32, window_size=4, depths=(2, 2), embed_dim=32, num_heads=(2, 4)))
