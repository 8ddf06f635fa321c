"""Trackers built on the backbone under test, with their losses and box decoding.

Both trackers take a template crop (the target, ``T`` px) and a search crop (``S`` px), normalized images, and
predict a ``G x G`` response map over the search crop; every cell carries a box. Boxes are ``(cx, cy, w, h)``
normalized to the search crop. Both hold the timm trunk as ``self.trunk`` (:class:`TrunkHolder`), so layer-wise lr
decay finds it; everything else is head.

**One-stream tracker** (:class:`OneStreamTracker`, OSTrack) for plain ViT / DeiT / EVA and BEiT backbones:

* One patch embedding (the trunk's) for both crops. The pre-trained absolute position embedding (patch part) is
  resampled (bicubic, timm's ``resample_abs_pos_embed``) once to the template grid and once to the search grid;
  each becomes its own parameter, registered on the trunk as ``pos_embed_template`` / ``pos_embed_search`` so that
  layer decay puts it in the stem, where the pre-trained ``pos_embed`` was (timm's stem pattern ``pos_embed``
  matches both names). A trunk without absolute position embedding (SimMIM's BEiT-style ViT) gets none.
* The class token (and any register token) is dropped, as OSTrack does; the trunk's ``cls_token`` / ``reg_token``
  and its original ``pos_embed`` are removed so no parameter goes unused (DDP without unused-parameter search).
* Tokens ``[template; search]`` go through the trunk's blocks (its drop path), then the trunk's final norm
  (``norm``; a mean-pooling checkpoint has its last LayerNorm in ``fc_norm``, which is then applied per token).
* BEiT relative position bias (shared ``rel_pos_bias`` and / or per-block tables): template tokens attend to
  template tokens with the table resampled to the template grid, search to search with the table resampled to
  the search grid (``benchmark.backbone``'s bicubic resampling; the pre-trained table itself at its own grid), and
  across the two grids (no common geometry) with a zero bias. The three class-token entries of every table go
  unused with the class token. Per-block tables are applied by :class:`_JointBeitAttention` (timm's BEiT attention
  with a block-diagonal bias), the shared one is passed to every block as timm does.
* Centre head (OSTrack's ``CenterPredictor``) on the search tokens as a ``G x G`` map (``G = S / patch``): three
  branches (score 1 channel, size 2, offset 2), each four 3x3 conv-BN-ReLU layers (``head_channels``, then halving
  to ``head_channels / 8``) and a 1x1 conv; sigmoid (clamped to [1e-4, 1 - 1e-4]) on size; ``out['score']`` holds
  the score logits, the loss and the decoder apply the same clamped sigmoid.
* Box of cell ``(i, j)``: centre ``((j + offset_x) / G, (i + offset_y) / G)``, size ``(size_w, size_h)``.
* Losses (OSTrack's weights): ``1 * focal + 2 * GIoU + 5 * L1``. Focal: CenterNet's (alpha 2, beta 4) against a
  Gaussian heat-map peaked at cell ``round(c * G)`` of the ground-truth centre ``c`` (OSTrack's
  ``generate_heatmap``: CornerNet radius of the box in cells with min overlap 0.7, the formula OSTrack uses,
  truncated to an integer; sigma = (2 r + 1) / 6; zero outside the square of that radius). GIoU (mean of
  ``1 - GIoU``) and L1 (mean over the four xyxy coordinates) compare the ground-truth box, clipped to the crop, with
  the box decoded at the *maximum of the predicted score map*, as OSTrack trains (its actor passes no
  ground-truth map to the head): the box branches learn only at the cell the tracker would pick.
* Window (OSTrack's test rule): the score map is multiplied by a Hann window before the argmax
  (:meth:`hann_window`: OSTrack's ``hann2d(centered=True)``).
* Candidate elimination (OSTrack's CE; off unless ``ce_layers`` is given): at each block of ``ce_layers`` (0-based;
  OSTrack ``CE_LOC`` [3, 6, 9]) the attention that the template's centre token (OSTrack's ``CTR_POINT``: cell
  ``((Gz - 1) // 2, (Gz - 1) // 2)``) pays to every search token, a softmax over all current tokens averaged over
  the heads, ranks the search tokens; the ``ceil(keep * n)`` best of the ``n`` still present stay, in that order
  (descending attention), the rest leave the trunk for good. Template tokens always stay. The attention is
  written out for the centre query only (no gradient; with the block's own q / k weights, q-k norms and BEiT
  bias); the block itself runs unchanged (fused attention) and the tokens are dropped from its output, which
  equals OSTrack's dropping between the block's attention and its MLP (the MLP and the norms act per token). A
  BEiT bias follows the kept tokens: its rows and columns are gathered per sample. After the final norm every
  removed search token is put back at its grid position as zeros (the order restored) before the head.
  ``ce_keep_ratio`` (0.7) is the test-time rate; training passes the scheduled rate (:func:`ce_keep_rate`).

**Two-stream tracker** (:class:`TwoStreamTracker`, SwinTrack) for Swin / SwinV2 backbones:

* The trunk runs on the template and on the search crop separately (shared weights). Stage 3 (index 2, stride 16
  for 4-px patches) tokens, through a new LayerNorm (SwinTrack's per-output norm), are projected per stream to
  ``fusion_dim`` (a linear layer each; none when the widths already agree, as SwinTrack). Later stages and the
  trunk's final norm are pruned. Sizes must be multiples of that stride (16), so the grids are exactly
  ``T / 16`` and ``S / 16``; a stage grid that is no multiple of the Swin window is zero-padded inside each block by
  timm (``strict_img_size=False``, as MIMBackbone at any size): none is at the paper sizes with 7-token windows
  (112 / 224: grids 28, 14, 7 / 56, 28, 14), but e.g. 6- or 12-token windows (SimMIM's Swin-B at 192, SwinV2-B
  ``window12_192``) are padded there.
* Fusion transformer (SwinTrack's): ``fusion_layers`` pre-norm self-attention layers over ``[template; search]``,
  then one pre-norm cross-attention layer whose queries are the search tokens and whose keys / values are the whole
  encoder output, then a LayerNorm. Positions are SwinTrack's *untied* encodings: a learned row + column embedding
  per stream, normed and projected to per-head query / key positions whose dot products are added to the
  attention logits, plus a learned relative-position bias over the concatenation (one entry per 2-D offset and
  stream pair); the encoder and the decoder each have their own. Drop path rises linearly from 0 to
  ``fusion_drop_path`` over the fusion layers (SwinTrack: 0.1; its warm-up schedule, drop path off for the first
  half of training, is the training model's business: :meth:`TwoStreamTracker.set_fusion_drop_path`, called by
  tasks/tracking/parts.py ``MIMTracker``).
* Head and losses: SwinTrack's, not the centre head: it is what the two-stream tracker was published with, and
  it is cheap. Two 3-layer MLPs on the search tokens: a classification logit and a box ``(cx, cy, w, h)``
  (sigmoid, normalized to the search crop) per cell. Positive cells are those whose area the ground-truth box
  touches (``floor(x1 * G) .. floor(x2 * G)`` per axis). ``1.5 * varifocal`` (alpha 0.75, gamma 2, IoU-weighted)
  of the classification against the IoU of the cell's (detached) box with the ground truth on positive cells,
  0 elsewhere, summed and divided by the number of positive cells; ``1.5 * GIoU`` loss on the positive cells,
  weighted by their detached classification score and divided by the sum of those weights.
* Window (SwinTrack's test rule): ``0.51 * score + 0.49 * window`` with ``torch.hann_window(G, periodic=False)``
  (outer product).

Common interface: ``forward(template, search) -> dict`` (``'score'``: logits (B, 1, G, G); one-stream adds
``'size'`` and ``'offset'`` (B, 2, G, G) and takes an optional ``ce_keep_rate``, two-stream ``'box'`` (B, 4, G,
G)), ``loss(out, gt_box) -> dict`` (weighted ``loss_*`` terms and ``iou``, the mean IoU of the boxes decoded
without window), ``decode(out, window) -> (boxes, scores)`` and ``hann_window()``; ``build_tracker`` picks the
design from the checkpoint's family.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath, resample_abs_pos_embed, trunc_normal_
from timm.layers.attention import Attention as _TimmAttention
from timm.models import beit as _timm_beit
from timm.models import eva as _timm_eva
from timm.models import vision_transformer as _timm_vit
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as _grad_checkpoint

from benchmark.backbone import _resized_rel_pos_bias
from benchmark.checkpoint import load_backbone, load_canonical
from benchmark.errors import BenchmarkError, CheckpointError
from benchmark.families import family
from benchmark.layer_decay import TrunkHolder

__all__ = [
    "OneStreamTracker", "TwoStreamTracker", "CenterHead", "build_tracker", "tracker_design", "joint_rel_pos_bias",
    "candidate_elimination", "ce_keep_rate", "ce_template_token",
    "box_cxcywh_to_xyxy", "box_iou_giou", "centernet_focal_loss", "gaussian_heatmap", "varifocal_loss",
    "positive_cells",
]

SCORE_EPS = 1e-4  # OSTrack clamps its sigmoid outputs to [1e-4, 1 - 1e-4]
OSTRACK_WEIGHTS = {"focal": 1.0, "giou": 2.0, "l1": 5.0}
SWINTRACK_WEIGHTS = {"varifocal": 1.5, "giou": 1.5}
SWINTRACK_WINDOW_WEIGHT = 0.49
SWIN_STAGE = 2  # stage 3 of 4: stride 16 for 4-px patches

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------
# boxes and losses

def box_cxcywh_to_xyxy(box: Tensor) -> Tensor:
    cx, cy, w, h = box.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def box_iou_giou(a: Tensor, b: Tensor, eps: float = 1e-7) -> tuple[Tensor, Tensor]:
    """IoU and generalized IoU of aligned xyxy boxes (..., 4)."""
    area_a = (a[..., 2] - a[..., 0]).clamp(min=0) * (a[..., 3] - a[..., 1]).clamp(min=0)
    area_b = (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    wh = (torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = (area_a + area_b - inter).clamp(min=eps)
    iou = inter / union
    hull = (torch.maximum(a[..., 2:], b[..., 2:]) - torch.minimum(a[..., :2], b[..., :2])).clamp(min=0)
    hull_area = (hull[..., 0] * hull[..., 1]).clamp(min=eps)
    return iou, iou - (hull_area - union) / hull_area


def centernet_focal_loss(pred: Tensor, target: Tensor, alpha: float = 2.0, beta: float = 4.0) -> Tensor:
    """CenterNet's focal loss (OSTrack's): ``pred`` probabilities, ``target`` a heat-map whose peaks are exactly 1;
    summed over everything and divided by the number of peaks (by 1 when there is none)."""
    pos = target.eq(1).float()
    pred = pred.clamp(min=1e-12)
    pos_loss = torch.log(pred) * (1 - pred).pow(alpha) * pos
    neg_loss = torch.log(1 - pred) * pred.pow(alpha) * (1 - target).pow(beta) * (1 - pos)
    return -(pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1)


def _cornernet_radius(wh: Tensor, min_overlap: float = 0.7) -> Tensor:
    # CornerNet's gaussian_radius as OSTrack uses it (each root is (b + sqrt(b^2 - 4ac)) / 2, not / 2a)
    w, h = wh[..., 0], wh[..., 1]
    b1, c1 = h + w, w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + torch.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2, c2 = 2 * (h + w), (1 - min_overlap) * w * h
    r2 = (b2 + torch.sqrt(b2 ** 2 - 16 * c2)) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (h + w), (min_overlap - 1) * w * h
    r3 = (b3 + torch.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return torch.minimum(r1, torch.minimum(r2, r3))


@torch.no_grad()
def gaussian_heatmap(gt_box: Tensor, size: int, min_overlap: float = 0.7) -> Tensor:
    """OSTrack's training target (B, size, size) for normalized (cx, cy, w, h) boxes: a Gaussian of value 1 at cell
    ``round(c * size)`` (clamped to the map), radius ``int(CornerNet radius of the box in cells)``, sigma
    ``(2 r + 1) / 6``, zero outside the square of that radius."""
    gt_box = gt_box.float()
    centre = (gt_box[:, :2] * size).round().clamp(0, size - 1)
    radius = _cornernet_radius(gt_box[:, 2:] * size, min_overlap).clamp(min=0).floor()
    sigma = (2 * radius + 1) / 6
    cells = torch.arange(size, device=gt_box.device, dtype=torch.float32)
    dx = cells[None, :] - centre[:, :1]  # (B, size) along x
    dy = cells[None, :] - centre[:, 1:]  # (B, size) along y
    inside = (dy.abs() <= radius[:, None])[:, :, None] & (dx.abs() <= radius[:, None])[:, None, :]
    d2 = dy[:, :, None] ** 2 + dx[:, None, :] ** 2
    return torch.exp(-d2 / (2 * sigma[:, None, None] ** 2)) * inside


def varifocal_loss(logits: Tensor, target: Tensor, alpha: float = 0.75, gamma: float = 2.0) -> Tensor:
    """Varifocal loss per element (IoU-weighted, as SwinTrack): BCE against the quality ``target``, weighted by the
    target where it is positive and by ``alpha * |p - target|^gamma`` elsewhere."""
    p = torch.sigmoid(logits)
    weight = torch.where(target > 0, target, alpha * (p - target).abs().pow(gamma))
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight


@torch.no_grad()
def positive_cells(gt_box: Tensor, size: int) -> Tensor:
    """SwinTrack's positive cells (B, size, size): cells ``floor(x1 * size) .. floor(x2 * size)`` (inclusive, clamped
    to the map) along x, the same along y, of normalized (cx, cy, w, h) boxes."""
    xyxy = box_cxcywh_to_xyxy(gt_box.float())
    lo = (xyxy[:, :2] * size).floor().clamp(0, size - 1)
    hi = (xyxy[:, 2:] * size).floor().clamp(0, size - 1)
    cells = torch.arange(size, device=gt_box.device, dtype=torch.float32)
    in_x = (cells[None] >= lo[:, :1]) & (cells[None] <= hi[:, :1])
    in_y = (cells[None] >= lo[:, 1:]) & (cells[None] <= hi[:, 1:])
    return in_y[:, :, None] & in_x[:, None, :]


def _ostrack_hann(size: int) -> Tensor:
    # OSTrack's hann1d(centered=True): no zeros at the borders
    w = 0.5 * (1 - torch.cos(2 * math.pi / (size + 1) * torch.arange(1, size + 1, dtype=torch.float32)))
    return w[:, None] * w[None, :]


def _swintrack_hann(size: int) -> Tensor:
    w = torch.hann_window(size, periodic=False, dtype=torch.float32)
    return w[:, None] * w[None, :]


# ---------------------------------------------------------------------------------------------------------------
# shared interface

class _Tracker(nn.Module, TrunkHolder):
    """What both trackers share: input checks, the window rule and the decoder."""

    template_size: int
    search_size: int
    feat_size: int
    template_feat_size: int
    window_rule: str  # 'multiply' (OSTrack) | 'blend' (SwinTrack)
    window_weight: float = SWINTRACK_WINDOW_WEIGHT  # used by the blend rule only

    def _check_inputs(self, template: Tensor, search: Tensor) -> None:
        for name, img, size in (("template", template, self.template_size), ("search", search, self.search_size)):
            if img.ndim != 4 or tuple(img.shape[-2:]) != (size, size):
                raise BenchmarkError(f"{name} crop has shape {tuple(img.shape)}, the tracker was built for "
                                     f"(B, 3, {size}, {size})", f"crop the {name} to {size} px")

    def hann_window(self) -> Tensor:
        """The design's published Hann window (G, G), on the tracker's device."""
        raise NotImplementedError

    def cell_boxes(self, out: dict[str, Tensor]) -> Tensor:
        """The box (cx, cy, w, h) every cell predicts: (B, 4, G, G)."""
        raise NotImplementedError

    def _respond(self, prob: Tensor, window: Tensor | None, rule: str, weight: float) -> Tensor:
        if window is None:
            return prob
        window = window.to(prob).reshape(prob.shape[-2:])  # (G, G), also from (1, 1, G, G)
        if rule == "multiply":
            return prob * window
        if rule == "blend":
            return (1 - weight) * prob + weight * window
        raise BenchmarkError(f"unknown window rule '{rule}'", "use 'multiply' (OSTrack) or 'blend' (SwinTrack)")

    def _probabilities(self, out: dict[str, Tensor]) -> Tensor:
        return torch.sigmoid(out["score"].float())[:, 0]

    def decode(self, out: dict[str, Tensor], window: Tensor | None = None, *, window_rule: str | None = None,
               window_weight: float | None = None) -> tuple[Tensor, Tensor]:
        """Boxes (B, 4) normalized (cx, cy, w, h) in the search crop and their scores (B,).

        The cell is the argmax of the score map (sigmoid) after the window (G, G) is applied with ``window_rule``:
        ``'multiply'`` (score * window, OSTrack) or ``'blend'`` ((1 - w) * score + w * window, SwinTrack with
        w = ``window_weight``); both default to the design's published rule. The returned score is the cell's own
        sigmoid score, without the window.
        """
        prob = self._probabilities(out)
        resp = self._respond(prob, window, window_rule or self.window_rule,
                             self.window_weight if window_weight is None else float(window_weight))
        idx = resp.flatten(1).argmax(dim=1)
        return self._pick(self.cell_boxes(out).float(), idx), prob.flatten(1).gather(1, idx[:, None])[:, 0]

    @staticmethod
    def _pick(boxes: Tensor, idx: Tensor) -> Tensor:
        flat = boxes.flatten(2)
        return flat.gather(2, idx[:, None, None].expand(-1, flat.shape[1], 1))[..., 0]


# ---------------------------------------------------------------------------------------------------------------
# one-stream tracker (OSTrack)

def _grid_bias(table: Tensor, window: tuple[int, int], grid: tuple[int, int]) -> Tensor:
    """BEiT bias (heads, N, N) among the N patch tokens of ``grid`` (class-token rows / columns dropped)."""
    if tuple(grid) == tuple(window):
        index = _timm_beit.gen_relative_position_index(tuple(window), device=table.device)
        n = window[0] * window[1] + 1
        bias = table[index.view(-1)].view(n, n, -1).permute(2, 0, 1)
    else:
        bias = _resized_rel_pos_bias(table, window, grid)
    return bias[:, 1:, 1:]


def joint_rel_pos_bias(table: Tensor, window, grid_z: tuple[int, int], grid_x: tuple[int, int]) -> Tensor:
    """Bias (heads, Nz + Nx, Nz + Nx) for tokens ``[template; search]``: each grid's own (resampled) BEiT bias on
    the diagonal blocks, zero across the grids."""
    window = (int(window[0]), int(window[1]))
    bz, bx = _grid_bias(table, window, grid_z), _grid_bias(table, window, grid_x)
    nz, nx = bz.shape[-1], bx.shape[-1]
    out = bz.new_zeros(bz.shape[0], nz + nx, nz + nx)
    out[:, :nz, :nz] = bz
    out[:, nz:, nz:] = bx
    return out


def _gather_bias(bias: Tensor, tokens: Tensor | None) -> Tensor:
    """A joint bias (heads, N, N) for the tokens still present: (1, heads, N, N) when ``tokens`` is None (all, in
    order), else (B, heads, L, L) with rows and columns picked per sample by ``tokens`` (B, L), indices into the
    original ``[template; search]`` sequence."""
    if tokens is None:
        return bias.unsqueeze(0)
    return bias[:, tokens[:, :, None], tokens[:, None, :]].transpose(0, 1)


class _JointBeitAttention(_timm_beit.Attention):
    """timm BEiT attention whose per-block table yields :func:`joint_rel_pos_bias` for ``self._joint_grids``,
    gathered for the tokens left by candidate elimination while ``self._joint_tokens`` is set (:func:`_run_block`)."""

    _joint_grids: tuple[tuple[int, int], tuple[int, int]]
    _joint_tokens: Tensor | None = None

    def _joint_bias(self) -> Tensor:
        grid_z, grid_x = self._joint_grids
        return joint_rel_pos_bias(self.relative_position_bias_table, self.window_size, grid_z, grid_x)

    def _get_rel_pos_bias(self) -> Tensor:
        return _gather_bias(self._joint_bias(), self._joint_tokens)


def _run_block(blk: nn.Module, h: Tensor, tokens: Tensor | None, **kwargs: Any) -> Tensor:
    """One trunk block on ``h``; a BEiT block with its own table gathers its bias for ``tokens`` (None: all tokens).
    The token index is set and cleared around the call, so a checkpointed block recomputes with the same one."""
    attn = getattr(blk, "attn", None)
    if tokens is None or not isinstance(attn, _JointBeitAttention):
        return blk(h, **kwargs)
    attn._joint_tokens = tokens
    try:
        return blk(h, **kwargs)
    finally:
        attn._joint_tokens = None


# -- candidate elimination (OSTrack's CE) -----------------------------------------------------------------------

def ce_template_token(template_feat_size: int) -> int:
    """Index of the template token whose attention ranks the search tokens: OSTrack's ``CTR_POINT``, cell
    ``((G - 1) // 2, (G - 1) // 2)`` of the G x G template grid (OSTrack lists 3 for G = 7 and 8, 5 for 12, 6 for
    14), row-major."""
    c = (int(template_feat_size) - 1) // 2
    return c * int(template_feat_size) + c


def ce_keep_rate(epoch: float, start_epoch: float, warm_epochs: float, keep_ratio: float) -> float:
    """OSTrack's training keep rate (``adjust_keep_rate`` with ``ITERS_PER_EPOCH=1``): 1 before ``start_epoch``,
    ``keep_ratio`` from ``start_epoch + warm_epochs`` on, and in between a cosine from 1 down to ``keep_ratio``:
    ``keep + (1 - keep) * (cos((epoch - start) / warm * pi) + 1) / 2``. OSTrack's epochs count from 1 and the
    rate is constant within an epoch."""
    keep = float(keep_ratio)
    if epoch < start_epoch:
        return 1.0
    if epoch >= start_epoch + warm_epochs:
        return keep
    return keep + (1.0 - keep) * (math.cos((epoch - start_epoch) / warm_epochs * math.pi) + 1.0) * 0.5


def candidate_elimination(h: Tensor, scores: Tensor, num_template: int, keep_rate: float,
                          search_index: Tensor | None = None) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """OSTrack's ``candidate_elimination`` on tokens ``h`` (B, Nz + n, C) = ``[template; search]``.

    ``scores`` (B, n): the template's attention to each present search token. The ``ceil(keep_rate * n)`` search
    tokens with the highest scores stay, ordered by descending score (OSTrack sorts, then takes the head); the
    template tokens are never touched. ``search_index`` (B, n): the original search-grid index of each present
    token (None: all present, in grid order). Returns the new tokens, the kept tokens' grid indices and the removed
    ones'; when nothing would be removed, ``h``, ``search_index`` and None come back unchanged.
    """
    b, n, c = h.shape
    ls = n - int(num_template)
    keep = math.ceil(float(keep_rate) * ls)
    if keep >= ls:
        return h, search_index, None
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    top, rest = order[:, :keep], order[:, keep:]
    if search_index is None:
        search_index = torch.arange(ls, device=h.device).expand(b, ls)
    kept = h[:, num_template:].gather(1, top[:, :, None].expand(-1, -1, c))
    return (torch.cat([h[:, :num_template], kept], dim=1), search_index.gather(1, top),
            search_index.gather(1, rest))


_CE_ATTENTIONS = (_timm_beit.Attention, _timm_eva.EvaAttention, _TimmAttention)
_CE_BLOCKS = (_timm_beit.Block, _timm_eva.EvaBlock, _timm_vit.Block)  # pre-norm: attn(norm1(x))


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=True), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class CenterHead(nn.Module):
    """OSTrack's ``CenterPredictor``: score (1), size (2) and offset (2) branches of four 3x3 conv-BN-ReLU layers
    (``channels``, /2, /4, /8) and a 1x1 conv; xavier-uniform conv weights. Returns score logits, size (clamped
    sigmoid) and offset."""

    def __init__(self, in_channels: int, channels: int = 256):
        super().__init__()
        if channels < 8 or channels % 8:
            raise BenchmarkError(f"head_channels={channels}: the centre head halves it three times",
                                 "use a multiple of 8, e.g. 256")

        def branch(out_channels: int) -> nn.Sequential:
            widths = [in_channels, channels, channels // 2, channels // 4, channels // 8]
            layers: list[nn.Module] = [_conv_bn_relu(a, b) for a, b in zip(widths[:-1], widths[1:])]
            return nn.Sequential(*layers, nn.Conv2d(widths[-1], out_channels, kernel_size=1))

        self.score = branch(1)
        self.size = branch(2)
        self.offset = branch(2)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        size = torch.sigmoid(self.size(x)).clamp(SCORE_EPS, 1 - SCORE_EPS)
        return self.score(x), size, self.offset(x)


def _is_identity(m: Any) -> bool:
    return m is None or isinstance(m, nn.Identity)


class OneStreamTracker(_Tracker):
    """OSTrack on a timm ViT / DeiT / EVA (without rotary embedding) / BEiT trunk (see the module docstring).

    ``trunk``: the timm model (ViTs built with ``dynamic_img_size=True``); it is modified in place (prefix tokens
    and the original position embedding removed, per-grid position embeddings added, BEiT attention swapped).
    ``ce_layers`` / ``ce_keep_ratio``: candidate elimination after these blocks (0-based) at this keep ratio (the
    rate :meth:`forward` uses unless given ``ce_keep_rate``); empty or ratio 1: off, the plain OSTrack forward.
    """

    window_rule = "multiply"

    def __init__(self, trunk: nn.Module, *, template_size: int, search_size: int, head_channels: int = 256,
                 ce_layers: Sequence[int] = (), ce_keep_ratio: float = 1.0):
        super().__init__()
        if getattr(trunk, "rope", None) is not None:
            raise BenchmarkError(f"{type(trunk).__name__} uses rotary position embedding, which the one-stream "
                                 "tracker cannot apply to two grids", "use a ViT / DeiT / BEiT / EVA without RoPE")
        ps = tuple(int(p) for p in trunk.patch_embed.patch_size)
        if ps[0] != ps[1]:
            raise BenchmarkError(f"non-square patch size {ps}", "use a backbone with square patches")
        self.patch_size = ps[0]
        _check_multiple(template_size, search_size, self.patch_size, "the patch size")
        self.template_size, self.search_size = int(template_size), int(search_size)
        self.template_feat_size = self.template_size // self.patch_size
        self.feat_size = self.search_size // self.patch_size
        self.is_beit = isinstance(trunk, _timm_beit.Beit)
        grid_z = (self.template_feat_size,) * 2
        grid_x = (self.feat_size,) * 2

        if self.is_beit:
            trunk.patch_embed.strict_img_size = False
            for blk in trunk.blocks:
                if blk.attn.relative_position_bias_table is not None:
                    blk.attn.__class__ = _JointBeitAttention
                    blk.attn._joint_grids = (grid_z, grid_x)

        # per-grid position embeddings from the pre-trained one (patch part; prefix-token entries dropped)
        pos = getattr(trunk, "pos_embed", None)
        self.has_abs_pos = pos is not None
        if pos is not None:
            prefix = 0 if getattr(trunk, "no_embed_class", False) else int(trunk.num_prefix_tokens)
            native = tuple(int(g) for g in trunk.patch_embed.grid_size)
            patch_pos = pos.detach()[:, prefix:].clone()
            for name, grid in (("pos_embed_template", grid_z), ("pos_embed_search", grid_x)):
                resized = resample_abs_pos_embed(patch_pos, new_size=list(grid), old_size=list(native),
                                                 num_prefix_tokens=0)
                setattr(trunk, name, nn.Parameter(resized.clone()))
            trunk.pos_embed = None
        for name in ("cls_token", "reg_token", "dist_token"):
            if getattr(trunk, name, None) is not None:
                setattr(trunk, name, None)
        if getattr(trunk, "attn_pool", None) is not None:
            trunk.attn_pool = None
        # the final norm: `norm`, or a mean-pooling checkpoint's `fc_norm` applied per token
        if _is_identity(getattr(trunk, "norm", None)) and not _is_identity(getattr(trunk, "fc_norm", None)):
            self._final_norm = "fc_norm"
        else:
            self._final_norm = "norm"
            if not _is_identity(getattr(trunk, "fc_norm", None)):
                trunk.fc_norm = nn.Identity()
        self.trunk = trunk
        self.meta, self.coverage = getattr(trunk, "mim_meta", None), getattr(trunk, "coverage", None)
        self.embed_dim = int(trunk.embed_dim)
        self.head = CenterHead(self.embed_dim, int(head_channels))
        self._setup_ce(ce_layers, ce_keep_ratio)

    def _setup_ce(self, layers: Sequence[int], keep_ratio: float) -> None:
        keep_ratio = float(keep_ratio)
        if not 0 < keep_ratio <= 1:
            raise BenchmarkError(f"ce_keep_ratio={keep_ratio} is not in (0, 1]", "OSTrack keeps 0.7; 1 turns CE off")
        layers = sorted({int(i) for i in layers})
        if any(i < 0 for i in layers):
            raise BenchmarkError(f"ce_layers={layers}: block indices count from 0", "e.g. [3, 6, 9] (OSTrack)")
        depth = len(self.trunk.blocks)
        beyond = [i for i in layers if i >= depth]
        if beyond:  # as OSTrack, which eliminates only at blocks that exist
            log.warning("candidate elimination: the trunk has %d blocks, ce_layers %s are skipped", depth, beyond)
            layers = [i for i in layers if i < depth]
        if layers and keep_ratio < 1:
            for i in layers:
                blk = self.trunk.blocks[i]
                if not isinstance(blk, _CE_BLOCKS) or not isinstance(blk.attn, _CE_ATTENTIONS):
                    raise BenchmarkError(f"candidate elimination at block {i}: {type(blk).__name__} with "
                                         f"{type(getattr(blk, 'attn', None)).__name__} is not a pre-norm timm ViT / "
                                         "BEiT / EVA block", "set ce_layers=[] for this backbone")
        self.ce_layers = tuple(layers)
        self.ce_keep_ratio = keep_ratio
        self.ce_template_token = ce_template_token(self.template_feat_size)

    @torch.no_grad()
    def _ce_scores(self, blk: nn.Module, h: Tensor, tokens: Tensor | None, shared_bias: Tensor | None) -> Tensor:
        """(B, n): the attention of the template's centre token to each present search token in block ``blk`` with
        input ``h`` (B, Nz + n, C), a softmax over all present tokens averaged over the heads (OSTrack's CE score),
        written out in float32 for this one query. ``tokens``: the present tokens' indices into the original
        sequence (None: all); ``shared_bias``: the BEiT shared bias over the original sequence (heads, N, N)."""
        attn, nz, row = blk.attn, self.template_feat_size ** 2, self.ce_template_token
        with torch.autocast(h.device.type, enabled=False):
            x = blk.norm1(h.float())
            b, n, _ = x.shape
            q_in = x[:, row:row + 1]
            if getattr(attn, "qkv", None) is not None:
                w = attn.qkv.weight.float()
                d = w.shape[0] // 3
                bias = attn.qkv.bias.float() if attn.qkv.bias is not None else None
                q = F.linear(q_in, w[:d], None if bias is None else bias[:d])
                k = F.linear(x, w[d:2 * d], None if bias is None else bias[d:2 * d])
            else:  # EVA with separate projections
                q, k = attn.q_proj(q_in), attn.k_proj(x)
            if getattr(attn, "q_bias", None) is not None:  # BEiT / EVA: separate q (and k) biases
                q = q + attn.q_bias.float()
            if getattr(attn, "k_bias", None) is not None:
                k = k + attn.k_bias.float()
            heads = attn.num_heads
            q = q.view(b, 1, heads, -1).transpose(1, 2)
            k = k.view(b, n, heads, -1).transpose(1, 2)
            q, k = getattr(attn, "q_norm", nn.Identity())(q), getattr(attn, "k_norm", nn.Identity())(k)
            logits = (q * attn.scale) @ k.transpose(-2, -1)  # (B, heads, 1, n)
            full = []
            if isinstance(attn, _JointBeitAttention):
                full.append(attn._joint_bias())
            if shared_bias is not None:
                full.append(shared_bias)
            if full:
                bias_row = sum(full)[:, row].float()  # (heads, N): the centre query's row, every original key
                bias_row = bias_row[None] if tokens is None else bias_row[:, tokens].transpose(0, 1)
                logits = logits + bias_row[:, :, None]
            weights = logits.softmax(dim=-1)[..., nz:]  # (B, heads, 1, n - nz)
        return weights.mean(dim=2).mean(dim=1)

    # -- forward -------------------------------------------------------------------------------------------------
    def _tokens(self, img: Tensor) -> Tensor:
        x = self.trunk.patch_embed(img)
        return x.flatten(1, 2) if x.ndim == 4 else x  # dynamic_img_size ViTs embed to NHWC

    def forward(self, template: Tensor, search: Tensor, ce_keep_rate: float | None = None) -> dict[str, Tensor]:
        """Score / size / offset maps; ``ce_keep_rate``: candidate elimination's rate for this call (training's
        schedule), None: ``ce_keep_ratio`` (OSTrack's test rate)."""
        feat, _ = self.forward_features(template, search, ce_keep_rate)
        score, size, offset = self.head(feat)
        return {"score": score, "size": size, "offset": offset}

    def forward_features(self, template: Tensor, search: Tensor, ce_keep_rate: float | None = None
                         ) -> tuple[Tensor, dict[str, Any]]:
        """The search features the head reads (B, C, G, G) and candidate elimination's record: ``kept`` (B, n), the
        grid indices of the search tokens that left the trunk, in their order there (None: all, in grid order),
        and ``removed``, the grid indices dropped at each elimination (one (B, k) tensor per elimination)."""
        self._check_inputs(template, search)
        t = self.trunk
        z, x = self._tokens(template), self._tokens(search)
        if self.has_abs_pos:
            z = z + t.pos_embed_template
            x = x + t.pos_embed_search
        h = torch.cat([z, x], dim=1)
        h = getattr(t, "pos_drop", nn.Identity())(h)
        h = getattr(t, "norm_pre", nn.Identity())(h)
        kwargs: dict[str, Any] = {}
        shared = None
        if self.is_beit:
            if t.rel_pos_bias is not None:
                rpb = t.rel_pos_bias
                shared = joint_rel_pos_bias(rpb.relative_position_bias_table, rpb.window_size,
                                            (self.template_feat_size,) * 2, (self.feat_size,) * 2)
            kwargs["shared_rel_pos_bias"] = shared
        rate = self.ce_keep_ratio if ce_keep_rate is None else float(ce_keep_rate)
        ce_layers = self.ce_layers if rate < 1 else ()
        nz = z.shape[1]
        kept: Tensor | None = None  # grid indices of the present search tokens (None: all, in order)
        tokens: Tensor | None = None  # the present tokens' indices into [template; search] (None: all)
        removed: list[Tensor] = []
        for i, blk in enumerate(t.blocks):
            scores = self._ce_scores(blk, h, tokens, shared) if i in ce_layers else None
            if getattr(t, "grad_checkpointing", False) and torch.is_grad_enabled():
                h = _grad_checkpoint(_run_block, blk, h, tokens, use_reentrant=False, **kwargs)
            else:
                h = _run_block(blk, h, tokens, **kwargs)
            if scores is None:
                continue
            h, kept, gone = candidate_elimination(h, scores, nz, rate, kept)
            if gone is None:
                continue
            removed.append(gone)
            template_index = torch.arange(nz, device=h.device).expand(h.shape[0], nz)
            tokens = torch.cat([template_index, kept + nz], dim=1)
            if shared is not None:
                kwargs["shared_rel_pos_bias"] = _gather_bias(shared, tokens)
        h = getattr(t, self._final_norm)(h)
        b, g = h.shape[0], self.feat_size
        x = h[:, nz:]
        if kept is not None:  # removed tokens back at their grid cells as zeros, after the final norm (OSTrack)
            x = x.new_zeros(b, g * g, x.shape[-1]).scatter(1, kept[:, :, None].expand(-1, -1, x.shape[-1]), x)
        return x.transpose(1, 2).reshape(b, -1, g, g), {"kept": kept, "removed": removed}

    # -- decoding and losses -------------------------------------------------------------------------------------
    def _probabilities(self, out: dict[str, Tensor]) -> Tensor:
        return torch.sigmoid(out["score"].float()).clamp(SCORE_EPS, 1 - SCORE_EPS)[:, 0]

    def hann_window(self) -> Tensor:
        return _ostrack_hann(self.feat_size).to(self.trunk.patch_embed.proj.weight.device)

    def cell_boxes(self, out: dict[str, Tensor]) -> Tensor:
        offset, size = out["offset"].float(), out["size"].float()
        g = self.feat_size
        cells = torch.arange(g, device=offset.device, dtype=offset.dtype)
        cx = (cells[None, None, :] + offset[:, 0]) / g
        cy = (cells[None, :, None] + offset[:, 1]) / g
        return torch.stack([cx, cy, size[:, 0], size[:, 1]], dim=1)

    def loss(self, out: dict[str, Tensor], gt_box: Tensor) -> dict[str, Tensor]:
        """OSTrack's loss; ``gt_box`` (B, 4) normalized (cx, cy, w, h) in the search crop."""
        gt_box = gt_box.float()
        prob = self._probabilities(out)
        focal = centernet_focal_loss(prob, gaussian_heatmap(gt_box, self.feat_size))
        # the box where the predicted score peaks, as OSTrack trains
        pred = box_cxcywh_to_xyxy(self._pick(self.cell_boxes(out), prob.flatten(1).argmax(dim=1)))
        target = box_cxcywh_to_xyxy(gt_box).clamp(0, 1)
        iou, giou = box_iou_giou(pred, target)
        w = OSTRACK_WEIGHTS
        return {"loss_focal": w["focal"] * focal, "loss_giou": w["giou"] * (1 - giou).mean(),
                "loss_l1": w["l1"] * F.l1_loss(pred, target), "iou": iou.detach().mean()}


# ---------------------------------------------------------------------------------------------------------------
# two-stream tracker (SwinTrack)

def _relative_position_index(queries: list[tuple[int, int]], keys: list[tuple[int, int]]) -> tuple[Tensor, int]:
    """Index (Lq, Lk) of a relative-position table for token grids concatenated in order: one entry per
    (dy, dx, query grid, key grid). ``queries`` / ``keys``: (grid id, side) per grid."""

    def tokens(grids):
        parts = []
        for gid, side in grids:
            ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
            parts.append(torch.stack([ys.flatten(), xs.flatten(), torch.full((side * side,), gid)], dim=1))
        return torch.cat(parts)

    q, k = tokens(queries), tokens(keys)
    key = torch.stack([q[:, None, 0] - k[None, :, 0], q[:, None, 1] - k[None, :, 1],
                       q[:, None, 2].expand(-1, len(k)), k[None, :, 2].expand(len(q), -1)], dim=-1)
    _, index = torch.unique(key.reshape(-1, 4), dim=0, return_inverse=True)
    return index.view(len(q), len(k)), int(index.max()) + 1


class _UntiedPosition(nn.Module):
    """SwinTrack's untied absolute position encoding of one square grid: a learned row + column embedding, a
    LayerNorm, and per-head query (scaled) / key projections whose products are added to attention logits."""

    def __init__(self, dim: int, heads: int, side: int, with_q: bool = True):
        super().__init__()
        self.row = nn.Parameter(torch.empty(side, dim))
        self.col = nn.Parameter(torch.empty(side, dim))
        trunc_normal_(self.row, std=0.02)
        trunc_normal_(self.col, std=0.02)
        self.norm = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim) if with_q else None
        self.k = nn.Linear(dim, dim)
        self.heads = heads
        self.scale = (dim // heads) ** -0.5

    def forward(self) -> tuple[Tensor | None, Tensor]:
        pos = self.norm((self.row[:, None] + self.col[None, :]).flatten(0, 1))  # row-major, as the tokens
        n = pos.shape[0]
        k = self.k(pos).view(n, self.heads, -1).transpose(0, 1)
        q = self.q(pos).view(n, self.heads, -1).transpose(0, 1) * self.scale if self.q is not None else None
        return q, k


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, q: Tensor, kv: Tensor, bias: Tensor) -> Tensor:
        b, lq, c = q.shape
        q = self.q(q).view(b, lq, self.heads, -1).transpose(1, 2)
        k, v = self.kv(kv).view(b, kv.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(x.transpose(1, 2).reshape(b, lq, c))


class _FusionLayer(nn.Module):
    """Pre-norm attention + MLP (ratio 4, GELU); ``cross``: separate norms for queries and keys / values."""

    def __init__(self, dim: int, heads: int, drop_path: float, cross: bool):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim) if cross else None
        self.attn = _Attention(dim, heads)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, q: Tensor, kv: Tensor, bias: Tensor) -> Tensor:
        qn = self.norm_q(q)
        kvn = self.norm_kv(kv) if self.norm_kv is not None else qn
        q = q + self.drop_path(self.attn(qn, kvn, bias))
        return q + self.drop_path(self.mlp(self.norm2(q)))


class _Fusion(nn.Module):
    """SwinTrack's fusion: encoder over [template; search], a decoder layer with the search tokens as queries."""

    def __init__(self, dim: int, heads: int, side_z: int, side_x: int, layers: int, drop_path: float):
        super().__init__()
        rates = torch.linspace(0, drop_path, layers + 1).tolist()
        self.encoder = nn.ModuleList([_FusionLayer(dim, heads, rates[i], cross=False) for i in range(layers)])
        self.decoder = _FusionLayer(dim, heads, rates[layers], cross=True)
        self.norm = nn.LayerNorm(dim)
        self.enc_pos_z = _UntiedPosition(dim, heads, side_z)
        self.enc_pos_x = _UntiedPosition(dim, heads, side_x)
        self.dec_pos_z = _UntiedPosition(dim, heads, side_z, with_q=False)
        self.dec_pos_x = _UntiedPosition(dim, heads, side_x)
        both = [(0, side_z), (1, side_x)]
        enc_index, n_enc = _relative_position_index(both, both)
        dec_index, n_dec = _relative_position_index([(1, side_x)], both)
        self.register_buffer("enc_rel_index", enc_index, persistent=False)
        self.register_buffer("dec_rel_index", dec_index, persistent=False)
        self.enc_rel_table = nn.Parameter(torch.empty(heads, n_enc))
        self.dec_rel_table = nn.Parameter(torch.empty(heads, n_dec))
        self.apply(_swintrack_init)
        for p in (self.enc_rel_table, self.dec_rel_table):
            trunc_normal_(p, std=0.02)
        self.num_z = side_z * side_z

    def set_drop_path(self, rate: float) -> None:
        rates = torch.linspace(0, rate, len(self.encoder) + 1).tolist()
        for layer, r in zip([*self.encoder, self.decoder], rates):
            layer.drop_path = DropPath(r) if r > 0 else nn.Identity()

    def forward(self, z: Tensor, x: Tensor) -> Tensor:
        zq, zk = self.enc_pos_z()
        xq, xk = self.enc_pos_x()
        bias = torch.cat([zq, xq], 1) @ torch.cat([zk, xk], 1).transpose(-2, -1)
        bias = (bias + self.enc_rel_table[:, self.enc_rel_index]).unsqueeze(0)
        h = torch.cat([z, x], dim=1)
        for layer in self.encoder:
            h = layer(h, h, bias)
        _, zk = self.dec_pos_z()
        xq, xk = self.dec_pos_x()
        bias = xq @ torch.cat([zk, xk], 1).transpose(-2, -1)
        bias = (bias + self.dec_rel_table[:, self.dec_rel_index]).unsqueeze(0)
        return self.norm(self.decoder(h[:, self.num_z:], h, bias))


def _swintrack_init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def _mlp(dim: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, out))


class TwoStreamTracker(_Tracker):
    """SwinTrack on a timm Swin / SwinV2 trunk (see the module docstring). ``trunk`` (built with
    ``strict_img_size=False``) is pruned in place after stage 3."""

    window_rule = "blend"
    window_weight = SWINTRACK_WINDOW_WEIGHT

    def __init__(self, trunk: nn.Module, *, template_size: int, search_size: int, fusion_dim: int = 384,
                 fusion_layers: int = 4, fusion_heads: int = 8, fusion_drop_path: float = 0.1):
        super().__init__()
        info = trunk.feature_info
        if len(info) <= SWIN_STAGE:
            raise BenchmarkError(f"Swin backbone with {len(info)} stages", "the two-stream tracker reads stage 3")
        self.stride = int(info[SWIN_STAGE]["reduction"])
        _check_multiple(template_size, search_size, self.stride, f"the stride of Swin stage 3 ({self.stride})")
        if fusion_dim % fusion_heads or fusion_layers < 1:
            raise BenchmarkError(f"fusion_dim={fusion_dim}, fusion_heads={fusion_heads}, "
                                 f"fusion_layers={fusion_layers}", "fusion_dim must be a multiple of fusion_heads, "
                                 "and at least one encoder layer is needed (paper: 384, 8, 4)")
        self.template_size, self.search_size = int(template_size), int(search_size)
        self.template_feat_size = self.template_size // self.stride
        self.feat_size = self.search_size // self.stride
        trunk.prune_intermediate_layers(indices=[SWIN_STAGE], prune_norm=True, prune_head=True)
        self.trunk = trunk
        self.meta, self.coverage = getattr(trunk, "mim_meta", None), getattr(trunk, "coverage", None)
        channels = int(info[SWIN_STAGE]["num_chs"])
        self.backbone_norm = nn.LayerNorm(channels)
        self.proj_template = nn.Linear(channels, fusion_dim) if channels != fusion_dim else nn.Identity()
        self.proj_search = nn.Linear(channels, fusion_dim) if channels != fusion_dim else nn.Identity()
        self.proj_template.apply(_swintrack_init)
        self.proj_search.apply(_swintrack_init)
        self.fusion = _Fusion(fusion_dim, fusion_heads, self.template_feat_size, self.feat_size, fusion_layers,
                              float(fusion_drop_path))
        self.cls_head = _mlp(fusion_dim, 1)
        self.box_head = _mlp(fusion_dim, 4)
        self.cls_head.apply(_swintrack_init)
        self.box_head.apply(_swintrack_init)

    def set_fusion_drop_path(self, rate: float) -> None:
        """Drop path of the fusion layers (rising linearly from 0 to ``rate``), e.g. for SwinTrack's warm-up."""
        self.fusion.set_drop_path(float(rate))

    def _features(self, img: Tensor, side: int) -> Tensor:
        f = self.trunk.forward_intermediates(img, indices=[SWIN_STAGE], norm=False, output_fmt="NCHW",
                                             intermediates_only=True)[0]
        if tuple(f.shape[-2:]) != (side, side):  # cannot happen for inputs that passed _check_inputs
            raise BenchmarkError(f"Swin stage 3 gave a {tuple(f.shape[-2:])} grid, expected {side}x{side}",
                                 "use a 4-stage Swin / SwinV2 with patch size 4")
        return self.backbone_norm(f.flatten(2).transpose(1, 2))

    def forward(self, template: Tensor, search: Tensor) -> dict[str, Tensor]:
        self._check_inputs(template, search)
        z = self.proj_template(self._features(template, self.template_feat_size))
        x = self.proj_search(self._features(search, self.feat_size))
        h = self.fusion(z, x)
        b, g = h.shape[0], self.feat_size
        score = self.cls_head(h).transpose(1, 2).reshape(b, 1, g, g)
        box = torch.sigmoid(self.box_head(h)).transpose(1, 2).reshape(b, 4, g, g)
        return {"score": score, "box": box}

    def hann_window(self) -> Tensor:
        return _swintrack_hann(self.feat_size).to(self.backbone_norm.weight.device)

    def cell_boxes(self, out: dict[str, Tensor]) -> Tensor:
        return out["box"]

    def loss(self, out: dict[str, Tensor], gt_box: Tensor) -> dict[str, Tensor]:
        """SwinTrack's loss; ``gt_box`` (B, 4) normalized (cx, cy, w, h) in the search crop."""
        gt_box = gt_box.float()
        logits = out["score"].float()[:, 0]
        cells = box_cxcywh_to_xyxy(out["box"].float().permute(0, 2, 3, 1))  # (B, G, G, 4)
        target = box_cxcywh_to_xyxy(gt_box)[:, None, None].expand_as(cells)
        iou, giou = box_iou_giou(cells, target)
        pos = positive_cells(gt_box, self.feat_size)
        quality = torch.where(pos, iou.detach(), torch.zeros_like(iou))
        cls = varifocal_loss(logits, quality).sum() / pos.sum().clamp(min=1)
        weight = torch.sigmoid(logits).detach()[pos]
        reg = ((1 - giou[pos]) * weight).sum() / weight.sum().clamp(min=1e-5)
        picked = self._pick(out["box"].float(), logits.flatten(1).argmax(dim=1))
        decoded_iou, _ = box_iou_giou(box_cxcywh_to_xyxy(picked), box_cxcywh_to_xyxy(gt_box))
        w = SWINTRACK_WEIGHTS
        return {"loss_varifocal": w["varifocal"] * cls, "loss_giou": w["giou"] * reg,
                "iou": decoded_iou.detach().mean()}


# ---------------------------------------------------------------------------------------------------------------
# construction

def _check_multiple(template_size: int, search_size: int, multiple: int, what: str) -> None:
    for name, size in (("template_size", template_size), ("search_size", search_size)):
        if int(size) != size or size <= 0 or size % multiple:
            raise BenchmarkError(f"{name}={size} is not a positive multiple of {what}",
                                 f"use a multiple of {multiple}")


def tracker_design(arch: str) -> str:
    """'one-stream' (ViT / DeiT / EVA / BEiT) or 'two-stream' (Swin / SwinV2) for a timm model name;
    BenchmarkError for anything else."""
    try:
        fam = family(arch)
    except CheckpointError as exc:
        raise BenchmarkError(f"backbone arch '{arch}' cannot drive a tracker",
                             "use a timm ViT / DeiT / EVA / BEiT (one-stream tracker) or Swin / SwinV2 "
                             "(two-stream tracker) backbone") from exc
    return "two-stream" if fam == "swin" else "one-stream"


def build_tracker(ckpt: str | os.PathLike, *, template_size: int, search_size: int, drop_path: float = 0.0,
                  head_channels: int = 256, fusion_dim: int = 384, fusion_layers: int = 4, fusion_heads: int = 8,
                  fusion_drop_path: float = 0.1, ce_layers: Sequence[int] = (), ce_keep_ratio: float = 1.0,
                  allow_partial: bool = False) -> OneStreamTracker | TwoStreamTracker:
    """The tracker for a canonical checkpoint: one-stream (OSTrack; paper sizes 128 / 256) for ViT / BEiT,
    two-stream (SwinTrack; 112 / 224) for Swin / SwinV2. ``drop_path``: the trunk's stochastic depth;
    ``head_channels``, ``ce_*`` (candidate elimination): the centre head's width and OSTrack's CE (one-stream);
    ``fusion_*``: the fusion transformer (two-stream). The trunk's weights are loaded and checked by
    :func:`benchmark.checkpoint.load_backbone`."""
    meta = load_canonical(ckpt).meta
    arch = str(meta.get("arch"))
    design = tracker_design(arch)
    patch = int(meta.get("patch_size", 16))
    # refuse bad sizes before loading the weights
    if design == "one-stream":
        _check_multiple(template_size, search_size, patch, f"the patch size ({patch})")
        trunk = load_backbone(ckpt, allow_partial=allow_partial, drop_path_rate=float(drop_path),
                              **({"dynamic_img_size": True} if family(arch) == "plain" else {}))
        return OneStreamTracker(trunk, template_size=template_size, search_size=search_size,
                                head_channels=head_channels, ce_layers=ce_layers, ce_keep_ratio=ce_keep_ratio)
    _check_multiple(template_size, search_size, 4 * patch, f"the stride of Swin stage 3 ({4 * patch})")
    trunk = load_backbone(ckpt, allow_partial=allow_partial, drop_path_rate=float(drop_path), strict_img_size=False)
    return TwoStreamTracker(trunk, template_size=template_size, search_size=search_size, fusion_dim=fusion_dim,
                            fusion_layers=fusion_layers, fusion_heads=fusion_heads, fusion_drop_path=fusion_drop_path)
