"""Metrics for the analyses of "Revealing the Dark Secrets of MIM" (Xie et al. 2022, Sec. 3) and SimMIM's AvgDist.

Pure torch / numpy functions, no model code. Attention maps are ``(B, H, N, N)`` tensors of row-stochastic
attention (query rows, key columns) over spatial tokens only: strip CLS / register tokens first with
:func:`drop_prefix`. Swin windows are handled by the caller: reshape ``(B, nW, H, N, N)`` window attention into
``(B * nW, H, N, N)``; for shifted-window blocks the masked pairs already carry ~0 attention, and ``key_mask`` can
exclude them exactly.

All reductions run in float64; per-head results come back as float64 ``(B, H)`` tensors so the caller can average
over images / layers (``mean_n`` of the per-image values).

References
----------
- Dosovitskiy et al. 2021 (ViT), Fig. 11 / App. D.7: mean attention distance.
- Xie et al. 2022, "Revealing the Dark Secrets of Masked Image Modeling": attention distance, entropy, KL head
  diversity, CKA between layers.
- Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited": linear CKA.
- Nguyen, Raghu, Kornblith 2021, "Do Wide and Deep Networks Learn the Same Things?", Eq. 3: minibatch CKA with the
  unbiased HSIC estimator of Song et al. 2012.
- Xie et al. 2022, "SimMIM", Fig. 3: AvgDist.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["drop_prefix", "grid_positions", "attention_distance", "attention_entropy", "head_diversity",
           "linear_cka", "MinibatchCKA", "avg_dist", "avg_dist_grid"]


# ----------------------------------------------------------------------------------------------------- attention
def _check_attn(attn: Tensor) -> None:
    if not isinstance(attn, Tensor) or attn.dim() != 4 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"attention must be a (B, H, N, N) tensor, got "
                         f"{tuple(attn.shape) if isinstance(attn, Tensor) else type(attn).__name__}")


def _prepare(attn: Tensor, key_mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """float64 attention with excluded pairs zeroed and rows renormalised; mask broadcast to (B|1, 1, N, N)."""
    _check_attn(attn)
    a = attn.to(torch.float64)
    if key_mask is None:
        return a, None
    n = a.shape[-1]
    m = key_mask.to(device=a.device, dtype=torch.bool)
    if m.dim() == 2:
        m = m.unsqueeze(0)
    if m.dim() != 3 or m.shape[-2:] != (n, n) or m.shape[0] not in (1, a.shape[0]):
        raise ValueError(f"key_mask must be (N, N) or (B, N, N) with B={a.shape[0]}, N={n}; "
                         f"got {tuple(key_mask.shape)}")
    m = m.unsqueeze(1)
    a = a * m
    a = a / a.sum(-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    return a, m


def drop_prefix(attn: Tensor, n_prefix: int) -> Tensor:
    """Drop the first ``n_prefix`` (CLS / register) query rows and key columns and renormalise each row to sum 1.

    ``A'_ij = A_{i+p, j+p} / Σ_k A_{i+p, k+p}`` for ``i, j ≥ 0``: the statistics are about spatial tokens only, so
    the CLS row and column are dropped and the rows renormalised. The row sums are taken in float64; the result keeps
    the input dtype, promoted to at least float32.
    """
    _check_attn(attn)
    if not isinstance(n_prefix, int) or isinstance(n_prefix, bool) or not 0 <= n_prefix < attn.shape[-1]:
        raise ValueError(f"n_prefix must be an int in [0, {attn.shape[-1]}), got {n_prefix!r}")
    a = attn[..., n_prefix:, n_prefix:]
    out_dtype = torch.promote_types(a.dtype, torch.float32)
    s = a.to(torch.float64).sum(-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    return (a.to(torch.float64) / s).to(out_dtype)


def grid_positions(h: int, w: int, patch: float) -> Tensor:
    """``(h*w, 2)`` float64 pixel coordinates ``patch · (row, col)`` of the tokens of an h×w grid, row-major.

    Token ``k`` sits at row ``k // w``, column ``k % w`` (the order of ``x.flatten(2)`` in a patch embedding).
    """
    rows = torch.arange(h, dtype=torch.float64).repeat_interleave(w)
    cols = torch.arange(w, dtype=torch.float64).repeat(h)
    return torch.stack([rows, cols], dim=1) * float(patch)


def attention_distance(attn: Tensor, pos: Tensor, key_mask: Tensor | None = None) -> Tensor:
    """Mean attention distance per image and head, ``(B, H)`` float64, in the units of ``pos`` (pixels).

    ``D_{b,h} = (1/N) Σ_i Σ_j A_{b,h,i,j} ‖p_i − p_j‖₂`` (ViT paper Fig. 11; Dark Secrets Sec. 3.1). The protocol's
    D(l, h) is the mean of this over images. ``key_mask`` (``(N, N)`` or ``(B, N, N)`` bool, False = excluded):
    excluded pairs are zeroed and the rows renormalised before the sum.
    """
    a, _ = _prepare(attn, key_mask)
    n = a.shape[-1]
    if pos.shape != (n, 2):
        raise ValueError(f"pos must be ({n}, 2) to match the attention, got {tuple(pos.shape)}")
    p = pos.to(device=a.device, dtype=torch.float64)
    dist = (p[:, None, :] - p[None, :, :]).square().sum(-1).sqrt()   # (N, N) Euclidean, exact (cdist may use mm)
    return (a * dist).sum(-1).mean(-1)


def attention_entropy(attn: Tensor, key_mask: Tensor | None = None) -> Tensor:
    """Mean attention entropy per image and head, ``(B, H)`` float64, in nats.

    ``E_{b,h} = (1/N) Σ_i −Σ_j A_ij log A_ij`` with ``0 · log 0 = 0`` (Dark Secrets Sec. 3.1, Fig. 3). Uniform
    attention over N keys gives ``log N``, one-hot attention 0. ``key_mask`` as in :func:`attention_distance`.
    """
    a, _ = _prepare(attn, key_mask)
    return -torch.special.xlogy(a, a).sum(-1).mean(-1)


def head_diversity(attn: Tensor, eps: float = 1e-6, key_mask: Tensor | None = None) -> Tensor:
    """KL head diversity per image and head, ``(B, H)`` float64, in nats.

    ``Div_{b,h} = 1/(H−1) Σ_{g≠h} (1/N) Σ_i KL(P_{h,i} ‖ P_{g,i})`` with the eps-smoothed, renormalised rows
    ``P_{h,i,j} = (A_{h,i,j} + eps) / Σ_k (A_{h,i,k} + eps)`` and ``KL(P‖Q) = Σ_j P_j log(P_j / Q_j)``.

    Dark Secrets Sec. 3.2 measures the "KL divergence between the attention distributions of different heads" and
    reports it per head; the paper does not say which pairs it compares. The choice made here: each head is compared
    with every other head of the same layer, query by query, as the KL *from* that head (``KL(A_h ‖ A_g)``), and
    the divergences are averaged over the other heads and the queries. Smoothing keeps the KL finite where a head
    puts zero mass on keys another head attends to; the value therefore saturates near ``log(1/eps)`` for fully
    disjoint one-hot heads. ``key_mask``: excluded pairs are zeroed and get no eps mass. Needs H ≥ 2 (ValueError).

    Cost: ``Σ_g KL(P_h ‖ P_g) = H Σ_j P_h log P_h − Σ_j P_h Σ_g log P_g``, so no (H, H, N, N) tensor is formed.
    """
    a, m = _prepare(attn, key_mask)
    heads = a.shape[1]
    if heads < 2:
        raise ValueError(f"head diversity needs at least 2 heads, got {heads}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    p = a + (eps if m is None else eps * m)
    p = p / p.sum(-1, keepdim=True)
    logp = torch.log(p) if m is None else torch.where(m, torch.log(p.clamp_min(torch.finfo(torch.float64).tiny)), 0.0)
    neg_ent = (p * logp).sum(-1)                                    # (B, H, N): Σ_j P_h log P_h
    cross = (p * logp.sum(1, keepdim=True)).sum(-1)                 # (B, H, N): Σ_j P_h Σ_g log P_g
    kl_sum = heads * neg_ent - cross                                # Σ_g KL(P_h ‖ P_g), g = h contributes 0
    return (kl_sum / (heads - 1)).mean(-1)


# ----------------------------------------------------------------------------------------------------------- CKA
def _flat64(x: Tensor | np.ndarray) -> Tensor:
    t = torch.as_tensor(x)
    if t.dim() < 2:
        raise ValueError(f"features must be (n, d) (or (n, ...), flattened), got shape {tuple(t.shape)}")
    return t.reshape(t.shape[0], -1).to(torch.float64)


def linear_cka(x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> float:
    """Full-batch linear CKA (Kornblith et al. 2019, Eq. 5 / the HSIC form with centred Gram matrices).

    ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with ``K = X Xᵀ``, ``L = Y Yᵀ``, ``HSIC(K, L) ∝ tr(K H L H)``,
    ``H = I − 11ᵀ/n``; equivalently ``‖Yᶜᵀ Xᶜ‖²_F / (‖Xᶜᵀ Xᶜ‖_F ‖Yᶜᵀ Yᶜ‖_F)`` on column-centred features, which is
    what is computed (float64). This is the biased (V-statistic) estimator: unrelated features of dimension d give
    a positive value of order d/n. Inputs ``(n, ...)`` are flattened to ``(n, d)``.
    """
    xf, yf = _flat64(x), _flat64(y)
    if xf.shape[0] != yf.shape[0]:
        raise ValueError(f"x and y need the same number of examples, got {xf.shape[0]} and {yf.shape[0]}")
    xf = xf - xf.mean(0, keepdim=True)
    yf = yf - yf.mean(0, keepdim=True)
    if xf.shape[1] + yf.shape[1] > 2 * xf.shape[0]:                # Gram form is cheaper when d > n
        k, l = xf @ xf.T, yf @ yf.T
        num, dx, dy = (k * l).sum(), (k * k).sum().sqrt(), (l * l).sum().sqrt()
    else:
        num = (yf.T @ xf).square().sum()
        dx, dy = torch.linalg.matrix_norm(xf.T @ xf), torch.linalg.matrix_norm(yf.T @ yf)
    return float(num / (dx * dy))


def _grams(feats: Sequence[Tensor | np.ndarray], n: int | None) -> Tensor:
    """(L, n, n) float64 Gram matrices with zeroed diagonals."""
    grams = []
    for i, f in enumerate(feats):
        x = _flat64(f)
        if n is None:
            n = x.shape[0]
        if x.shape[0] != n:
            raise ValueError(f"all layers of a minibatch need the same number of examples: layer {i} has "
                             f"{x.shape[0]}, expected {n}")
        g = x @ x.T
        g.diagonal().zero_()
        grams.append(g)
    return torch.stack(grams)


def _unbiased_hsic(ka: Tensor, kb: Tensor) -> Tensor:
    """All-pairs HSIC_1 between (La, n, n) and (Lb, n, n) zero-diagonal Grams -> (La, Lb) float64.

    ``HSIC_1(K, L) = [tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1)/((n−1)(n−2)) − 2/(n−2) · 1ᵀK̃L̃1] / (n(n−3))``
    (Song et al. 2012; Nguyen et al. 2021 Eq. 3). K̃, L̃ are symmetric, so ``tr(K̃L̃) = Σ K̃ ∘ L̃`` and
    ``1ᵀK̃L̃1 = (K̃1)·(L̃1)``.
    """
    n = ka.shape[-1]
    fa, fb = ka.reshape(ka.shape[0], -1), kb.reshape(kb.shape[0], -1)
    ra, rb = ka.sum(-1), kb.sum(-1)                                  # row sums (L, n)
    sa, sb = ra.sum(-1), rb.sum(-1)                                  # total sums (L,)
    trace = fa @ fb.T
    return (trace + torch.outer(sa, sb) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (ra @ rb.T)) / (n * (n - 3))


class MinibatchCKA:
    """Streaming minibatch linear CKA between the layers of two models (or of one model with itself).

    Nguyen, Raghu, Kornblith 2021, Eq. 3: for minibatches i = 1..k with Grams ``K_i`` (model A, layer a) and
    ``L_i`` (model B, layer b), ``CKA = Σ_i HSIC_1(K_i, L_i) / sqrt(Σ_i HSIC_1(K_i, K_i) · Σ_i HSIC_1(L_i, L_i))``
    with the unbiased estimator ``HSIC_1`` on Gram matrices whose diagonals are zeroed (the 1/k factors cancel).
    Unlike the biased full-batch estimator, unrelated features give ≈ 0 and the result does not depend on the
    minibatch size. Only three float64 sums are kept — (n_a, n_b), (n_a,) and (n_b,) — so memory does not grow
    with the number of minibatches. Each minibatch needs n ≥ 4 examples (``HSIC_1`` divides by n − 3).

    ``n_b=None``: one model compared with itself; ``update(feats_a)`` takes no ``feats_b`` and ``compute()`` is
    a symmetric (n_a, n_a) matrix with ones on the diagonal. Features ``(n, ...)`` are flattened per example.
    The unbiased self-HSIC of a layer can be ≤ 0 only for (near-)constant features; such entries come out NaN.
    """

    def __init__(self, n_a: int, n_b: int | None = None):
        for name, v in (("n_a", n_a), ("n_b", n_b)):
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.n_a, self.n_b = n_a, n_b
        self.symmetric = n_b is None
        cols = n_a if self.symmetric else n_b
        self._hsic_ab = torch.zeros(n_a, cols, dtype=torch.float64)
        self._hsic_aa = torch.zeros(n_a, dtype=torch.float64)
        self._hsic_bb = torch.zeros(cols, dtype=torch.float64)
        self.batches = 0
        self.examples = 0

    def update(self, feats_a: Sequence[Tensor | np.ndarray], feats_b: Sequence[Tensor | np.ndarray] | None = None
               ) -> None:
        """Add one minibatch: ``feats_a`` is a list of n_a tensors ``(n, d_l)``; ``feats_b`` n_b tensors or None."""
        if len(feats_a) != self.n_a:
            raise ValueError(f"expected {self.n_a} layers for model A, got {len(feats_a)}")
        if self.symmetric and feats_b is not None:
            raise ValueError("MinibatchCKA(n_b=None) compares model A with itself: call update(feats_a) only")
        if not self.symmetric and (feats_b is None or len(feats_b) != self.n_b):
            raise ValueError(f"expected {self.n_b} layers for model B, got "
                             f"{'none' if feats_b is None else len(feats_b)}")
        n = _flat64(feats_a[0]).shape[0]
        if n < 4:
            raise ValueError(f"minibatch CKA needs at least 4 examples per minibatch (the unbiased HSIC divides by "
                             f"n - 3), got {n}")
        with torch.no_grad():
            ka = _grams(feats_a, n)
            if self.symmetric:
                ab = _unbiased_hsic(ka, ka)
                aa = bb = ab.diagonal()
            else:
                kb = _grams(feats_b, n)
                ab = _unbiased_hsic(ka, kb)
                aa = _diag_hsic(ka, torch.einsum("lij,lij->l", ka, ka))   # same formula, diagonal only
                bb = _diag_hsic(kb, torch.einsum("lij,lij->l", kb, kb))
        self._hsic_ab += ab.cpu()
        self._hsic_aa += aa.cpu()
        self._hsic_bb += bb.cpu()
        self.batches += 1
        self.examples += n

    def compute(self) -> np.ndarray:
        """``(n_a, n_b)`` float64 CKA matrix (``(n_a, n_a)`` for one model) from all minibatches so far."""
        if self.batches == 0:
            raise ValueError("MinibatchCKA.compute() before any update()")
        ab = self._hsic_ab.numpy()
        denom = np.sqrt(np.outer(self._hsic_aa.numpy(), self._hsic_bb.numpy()))
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(denom > 0, ab / np.where(denom > 0, denom, 1.0), np.nan)
        if self.symmetric:
            out = (out + out.T) / 2                                  # exact symmetry despite float rounding
        return out


def _diag_hsic(k: Tensor, trace: Tensor) -> Tensor:
    """HSIC_1(K_l, K_l) for each layer of a (L, n, n) zero-diagonal Gram stack, given ``tr(K̃K̃)``."""
    n = k.shape[-1]
    r = k.sum(-1)
    s = r.sum(-1)
    return (trace + s * s / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (r * r).sum(-1)) / (n * (n - 3))


# ------------------------------------------------------------------------------------------------------- AvgDist
def avg_dist(mask: np.ndarray) -> float:
    """SimMIM AvgDist of one pixel mask: mean Euclidean distance (pixels) of masked pixels to the nearest visible one.

    ``AvgDist = mean_{p masked} min_{q visible} ‖p − q‖₂`` (SimMIM Fig. 3; ``scipy.ndimage.distance_transform_edt``
    gives, for each nonzero = masked pixel, the distance to the nearest zero = visible pixel). ``mask``: bool
    ``(H, W)``, True = masked. A mask with no visible pixel has no defined AvgDist (ValueError); one with no masked
    pixel gives 0.0.
    """
    from scipy.ndimage import distance_transform_edt

    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be a 2-D (H, W) array, got shape {m.shape}")
    m = m.astype(bool)
    if m.all():
        raise ValueError("AvgDist is undefined for a mask with no visible pixel (mask ratio 1)")
    if not m.any():
        return 0.0
    return float(distance_transform_edt(m)[m].mean())


def avg_dist_grid(img_size: int, model_patch: int, ratios: Sequence[float], mask_patches: Sequence[int],
                  n_masks: int = 32, seed: int = 0) -> list[dict]:
    """AvgDist over a grid of SimMIM mask settings (SimMIM Fig. 3a).

    For every (ratio, mask_patch), ``n_masks`` masks are drawn with ``pretrain.mask.MaskGenerator(img_size,
    mask_patch, model_patch, ratio)`` from a ``torch.Generator`` seeded with ``seed`` (the same seed for every grid
    point, so a row does not depend on the grid's order), upsampled to pixels by ``model_patch`` (``upsample_mask``)
    and scored with :func:`avg_dist`. Returns one dict per grid point, ratios outer, mask patches inner:
    ``{ratio, mask_patch, avg_dist_mean, avg_dist_std}`` (population std over the masks). Settings the mask
    generator rejects raise its BenchmarkError; ratio 1 raises ValueError (no visible pixel).
    """
    from pretrain.mask import MaskGenerator, upsample_mask

    if not isinstance(n_masks, int) or n_masks < 1:
        raise ValueError(f"n_masks must be a positive int, got {n_masks!r}")
    rows = []
    for ratio in ratios:
        for mp in mask_patches:
            gen = MaskGenerator(img_size, mp, model_patch, ratio)
            masks = gen(n_masks, generator=torch.Generator().manual_seed(seed))
            pix = upsample_mask(masks, model_patch)[:, 0].numpy() > 0.5
            vals = np.array([avg_dist(m) for m in pix], dtype=np.float64)
            rows.append({"ratio": float(ratio), "mask_patch": int(mp), "avg_dist_mean": float(vals.mean()),
                         "avg_dist_std": float(vals.std())})
    return rows
