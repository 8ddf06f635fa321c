"""The depth model of the paper's depth code, as mmseg modules (importing this module registers them).

``MIMDepthHead``: the decoder of the MIM depth code (GLPDepth-style, used by the Dark Secrets paper): the backbone's
stride-32 map (Swin) → 3 stride-2 deconvolutions (k=2, BN, ReLU) → 3×3 conv + BN + ReLU → two ×2 bilinear upsamples
→ 3×3 conv, ReLU, 3×3 conv → ``sigmoid × max_depth``. mmseg 1.2.2 ships these blocks as ``VPDDepthDecoder`` inside
``VPDDepthHead`` (borrowed from the same code); this head keeps VPD's loss and prediction layer, drops its multi-level
aggregation (single input map) and allows fewer deconvolutions, so a plain ViT is decoded from its native patch
stride (ViT-B/16: stride 16, 2 deconvs) instead of a pooled stride-32 map. Loss: mmseg's ``SiLogLoss`` (λ = 0.5).

The head's output is at stride 1 of the backbone's padded input (a multiple of 32); it is cropped (not resized) to
the image, so a pixel of the prediction is the same pixel of the image.

``FlipDepthEstimator``: mmseg's ``DepthEstimator`` whose inference averages the prediction of the image and of its
horizontal mirror (flip test, as the paper's depth code), controlled by ``test_cfg=dict(flip=True)``, either on the
whole image (``mode='whole'``) or with the paper's shifted-window test (``mode='slide'``, ``windows=N``; the paper's
``--shift_window_test --shift_size N``, test.py / train.py of SwinTransformer/MIM-Depth-Estimation): N square windows
of the image's height h, the i-th starting at column i·⌊(W − h)/(N − 1)⌋, each predicted (with the flip test),
summed into place and divided by how many windows cover each column (NYU 480×640: N = 2, windows at 0 and 160;
KITTI 352×1216: N = 16, stride 57). Columns the official windows leave uncovered at the right edge (KITTI: the last
9, outside the Garg / Eigen crops) take one extra right-aligned window's prediction instead of the official
0 / 0 = NaN; N is capped at min(W − h, h) + 1 so those columns always lie inside that window.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmseg.models.decode_heads.vpd_depth_head import VPDDepthHead
from mmseg.models.segmentors import DepthEstimator
from mmseg.registry import MODELS

# the paper's depth code (models/model.py): every conv and deconv of the decoder and of the prediction layer
# N(0, 0.001) with zero bias; BatchNorm weight 1, bias 0 (PyTorch's default)
PAPER_INIT = dict(type="Normal", std=0.001, bias=0, layer=["Conv2d", "ConvTranspose2d"])


class _DepthDecoder(nn.Module):
    """VPDDepthDecoder's blocks (deconv k2 s2 + BN + ReLU per step, 3×3 conv + BN + ReLU, two ×2 bilinear upsamples)
    with any number of deconvolutions, including none (a ViT with 4-pixel patches is already at stride 4)."""

    def __init__(self, in_channels: int, out_channels: int, deconv_filters: tuple[int, ...]):
        super().__init__()
        layers, c = [], in_channels
        for f in deconv_filters:
            layers += [nn.ConvTranspose2d(c, f, kernel_size=2, stride=2, bias=False), nn.BatchNorm2d(f),
                       nn.ReLU(inplace=True)]
            c = f
        self.deconv_layers = nn.Sequential(*layers)
        self.conv_layers = nn.Sequential(nn.Conv2d(c, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels),
                                         nn.ReLU(inplace=True))
        self.up_sample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, x):
        return self.up_sample(self.up_sample(self.conv_layers(self.deconv_layers(x))))


@MODELS.register_module()
class MIMDepthHead(VPDDepthHead):
    """Single-level depth decoder. ``in_channels``: channels of the input map; ``num_deconv_filters``: one entry per
    stride-2 deconvolution (3 from stride 32, as the paper; 2 from a ViT-B/16's stride 16); ``channels``: decoder
    width (the MIM depth code uses the Swin embed dim, i.e. the stage-4 width / 8). ``init_cfg`` default: truncated
    normal (std 0.02) on the convolutions; the paper's depth code (models/model.py) uses ``PAPER_INIT``."""

    def __init__(self, in_channels: int, channels: int | None = None, max_depth: float = 10.0,
                 num_deconv_filters: tuple[int, ...] = (32, 32, 32), loss_decode: dict | None = None,
                 align_corners: bool = False, init_cfg: dict | None = None):
        loss_decode = loss_decode or dict(type="SiLogLoss")
        init_cfg = init_cfg or dict(type="TruncNormal", std=0.02, layer=["Conv2d", "Linear"])
        BaseModule.__init__(self, init_cfg=init_cfg)  # skip VPD's and BaseDecodeHead's layer set-up
        channels = int(channels or max(in_channels // 8, 32))
        self.in_channels = int(in_channels)
        self.max_depth = float(max_depth)
        self.align_corners = align_corners
        self.fmap_border = (0, 0)
        self.decoder = _DepthDecoder(self.in_channels, channels, tuple(int(f) for f in num_deconv_filters))
        self.depth_pred_layer = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1), nn.ReLU(inplace=False),
            nn.Conv2d(channels, 1, kernel_size=3, stride=1, padding=1))
        self.loss_decode = MODELS.build(loss_decode)

    def forward(self, x):
        out = self.depth_pred_layer(self.decoder(x[-1]))
        return torch.sigmoid(out) * self.max_depth

    def loss_by_feat(self, pred_depth_map, batch_data_samples):
        gt = self._stack_batch_gt(batch_data_samples)
        h, w = gt.shape[-2:]
        if pred_depth_map.shape[-2] >= h and pred_depth_map.shape[-1] >= w:
            pred_depth_map = pred_depth_map[..., :h, :w]
        else:
            pred_depth_map = F.interpolate(pred_depth_map, size=(h, w), mode="bilinear",
                                           align_corners=self.align_corners)
        return {self.loss_decode.loss_name: self.loss_decode(pred_depth_map, gt)}


@MODELS.register_module()
class FlipDepthEstimator(DepthEstimator):
    """DepthEstimator with the flip test and the paper's shifted-window test; predictions are cropped to the input
    instead of resized. ``test_cfg``: ``flip`` (bool), ``mode`` ('whole' | 'slide'), ``windows`` (slide: N)."""

    def encode_decode(self, inputs, batch_img_metas):
        if self.test_cfg.get("mode", "whole") == "slide":
            return self._shifted_windows(inputs, int(self.test_cfg.get("windows", 2)))
        return self._predict(inputs)

    def _predict(self, inputs):
        """Depth of a batch at its own size; with the flip test, the mean with the mirrored batch's prediction."""
        h, w = inputs.shape[-2:]
        depth = self.decode_head.forward(self.extract_feat(inputs))[..., :h, :w]
        if self.test_cfg.get("flip", False):
            flipped = self.decode_head.forward(self.extract_feat(inputs.flip(-1)))[..., :h, :w].flip(-1)
            depth = (depth + flipped) / 2
        return depth

    def _shifted_windows(self, inputs, windows: int):
        """The paper's shift-window test: ``windows`` h×h crops along the width, predictions averaged per column."""
        b, _, h, w = inputs.shape
        windows = min(windows, w - h + 1, h + 1)  # a stride of >= 1 column; uncovered columns inside the last h
        if windows < 2:
            return self._predict(inputs)
        step = (w - h) // (windows - 1)
        starts = [i * step for i in range(windows)]
        preds = self._predict(torch.cat([inputs[..., s:s + h] for s in starts]))  # window-major batch
        depth = preds.new_zeros((b, preds.shape[1], h, w))
        count = preds.new_zeros((1, 1, 1, w))
        for i, s in enumerate(starts):
            depth[..., s:s + h] += preds[i * b:(i + 1) * b]
            count[..., s:s + h] += 1
        if starts[-1] + h < w:  # (w - h) % (windows - 1) columns at the right edge: one right-aligned window
            gap = (count == 0)[..., w - h:]
            depth[..., w - h:] = torch.where(gap, self._predict(inputs[..., w - h:]), depth[..., w - h:])
            count = count.clamp(min=1)
        return depth / count

    def inference(self, inputs, batch_img_metas):
        # DepthEstimator's own inference reads test_cfg.mode for mmseg's slide / whole; the modes here are the
        # paper's, so everything goes through encode_decode
        return self.encode_decode(inputs, batch_img_metas)
