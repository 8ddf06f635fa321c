"""Analysis metrics: attention distance / entropy / KL head diversity, linear and minibatch CKA, SimMIM AvgDist."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmark.analysis.metrics import (
    MinibatchCKA,
    attention_distance,
    attention_entropy,
    avg_dist,
    avg_dist_grid,
    drop_prefix,
    grid_positions,
    head_diversity,
    linear_cka,
)


def _random_attn(b, h, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, h, n, n, generator=g, dtype=torch.float64).mul(3).softmax(-1)


# ------------------------------------------------------------------------------------------------ attention
def test_grid_positions_row_major():
    p = grid_positions(2, 3, 16)
    assert p.shape == (6, 2) and p.dtype == torch.float64
    assert p.tolist() == [[0, 0], [0, 16], [0, 32], [16, 0], [16, 16], [16, 32]]


def test_drop_prefix_renormalises_rows():
    a = _random_attn(2, 3, 1 + 12)
    d = drop_prefix(a, 1)
    assert d.shape == (2, 3, 12, 12)
    torch.testing.assert_close(d.sum(-1), torch.ones(2, 3, 12, dtype=torch.float64))
    ref = a[..., 1:, 1:] / a[..., 1:, 1:].sum(-1, keepdim=True)
    torch.testing.assert_close(d, ref)
    # proportions among the kept keys are unchanged
    torch.testing.assert_close(d[0, 0, 0, 3] / d[0, 0, 0, 5], a[0, 0, 1, 4] / a[0, 0, 1, 6])
    assert drop_prefix(a.float(), 5).shape == (2, 3, 8, 8)
    with pytest.raises(ValueError):
        drop_prefix(a, 13)


def test_distance_identity_is_zero():
    pos = grid_positions(4, 5, 16)
    eye = torch.eye(20).expand(2, 3, 20, 20)
    d = attention_distance(eye, pos)
    assert d.shape == (2, 3) and d.dtype == torch.float64
    assert torch.all(d == 0)


def test_distance_uniform_matches_brute_force():
    h, w, patch = 4, 5, 16.0
    n = h * w
    coords = [(r, c) for r in range(h) for c in range(w)]
    total = 0.0
    for (r1, c1) in coords:                     # independent brute force: mean over i of mean over j of distance
        for (r2, c2) in coords:
            total += math.hypot(patch * (r1 - r2), patch * (c1 - c2))
    expected = total / (n * n)
    uniform = torch.full((1, 2, n, n), 1.0 / n, dtype=torch.float64)
    d = attention_distance(uniform, grid_positions(h, w, patch))
    np.testing.assert_allclose(d.numpy(), expected, rtol=1e-12)


def test_distance_shifted_attention():
    """Each query puts all its mass on the token at offset (±1 row, ±2 cols): distance patch·sqrt(1 + 4)."""
    h, w, patch = 4, 5, 16.0
    n = h * w
    a = torch.zeros(1, 1, n, n)
    pure = 0
    for r in range(h):
        for c in range(w):
            for dr, dc in ((1, 2), (-1, 2), (1, -2), (-1, -2)):     # (1, 2) first: used wherever it exists
                if 0 <= r + dr < h and 0 <= c + dc < w:
                    a[0, 0, r * w + c, (r + dr) * w + (c + dc)] = 1.0
                    pure += (dr, dc) == (1, 2)
                    break
    assert a.sum(-1).eq(1).all() and pure == 3 * 3
    d = attention_distance(a, grid_positions(h, w, patch))
    assert d.item() == pytest.approx(patch * math.sqrt(5), rel=1e-12)
    # restricted to the queries where the (1, 2) shift exists: a 3×3 top-left block of queries, as its own batch
    q = [r * w + c for r in range(3) for c in range(3)]
    only = torch.zeros(1, 1, n, n)
    for i in q:
        only[0, 0, i, i + w + 2] = 1.0
    per_query = (only[0, 0] * torch.cdist(grid_positions(h, w, patch), grid_positions(h, w, patch))).sum(-1)[q]
    torch.testing.assert_close(per_query, torch.full((9,), patch * math.sqrt(5), dtype=torch.float64))


def test_distance_key_mask_excludes_pairs():
    a = _random_attn(2, 2, 6, seed=1)
    pos = grid_positions(2, 3, 4)
    km = torch.rand(2, 6, 6, generator=torch.Generator().manual_seed(2)) > 0.4
    km |= torch.eye(6, dtype=torch.bool)
    ref = a * km[:, None]
    ref = ref / ref.sum(-1, keepdim=True)
    torch.testing.assert_close(attention_distance(a, pos, key_mask=km), attention_distance(ref, pos))
    torch.testing.assert_close(attention_entropy(a, key_mask=km), attention_entropy(ref))


def test_entropy_one_hot_and_uniform():
    n = 16
    one_hot = torch.zeros(2, 3, n, n)
    one_hot[..., 0] = 1.0
    assert torch.all(attention_entropy(one_hot) == 0)
    assert torch.all(attention_entropy(torch.eye(n).expand(1, 2, n, n)) == 0)
    e = attention_entropy(torch.full((2, 3, n, n), 1.0 / n))
    assert e.shape == (2, 3)
    np.testing.assert_allclose(e.numpy(), math.log(n), rtol=1e-12)


def test_diversity_identical_heads_zero():
    a = _random_attn(1, 1, 10).expand(2, 4, 10, 10)
    div = head_diversity(a)
    assert div.shape == (2, 4)
    assert div.abs().max().item() < 1e-12
    with pytest.raises(ValueError):
        head_diversity(a[:, :1])


def test_diversity_hand_computed():
    """Heads over 2 keys: h0 = uniform, h1 = [1/4, 3/4] / [3/4, 1/4] per query, h2 = h0.

    KL(h0‖h1) per query = ½ log(½ / ¼) + ½ log(½ / ¾) = ½ log(4/3)            = 0.1438410362
    KL(h1‖h0) per query = ¼ log(¼ / ½) + ¾ log(¾ / ½) = −¼ log 2 + ¾ log(3/2)  = 0.1308120468
    div(h0) = (KL(h0‖h1) + KL(h0‖h2)) / 2 = (0.1438410362 + 0) / 2 = 0.0719205181 = div(h2)
    div(h1) = (KL(h1‖h0) + KL(h1‖h2)) / 2 = 0.1308120468
    """
    a = torch.tensor([[[0.5, 0.5], [0.5, 0.5]],
                      [[0.25, 0.75], [0.75, 0.25]],
                      [[0.5, 0.5], [0.5, 0.5]]], dtype=torch.float64)[None]
    div = head_diversity(a, eps=1e-12)[0]
    kl01 = 0.5 * math.log(4 / 3)
    kl10 = -0.25 * math.log(2) + 0.75 * math.log(1.5)
    assert kl01 == pytest.approx(0.1438410362) and kl10 == pytest.approx(0.1308120468)
    np.testing.assert_allclose(div.numpy(), [kl01 / 2, kl10, kl01 / 2], rtol=1e-9)


def test_diversity_matches_pairwise_loop():
    a = _random_attn(2, 3, 7, seed=3)
    eps = 1e-6
    p = (a + eps) / (a + eps).sum(-1, keepdim=True)
    ref = torch.zeros(2, 3, dtype=torch.float64)
    for h in range(3):
        for g in range(3):
            if g != h:
                ref[:, h] += (p[:, h] * (p[:, h] / p[:, g]).log()).sum(-1).mean(-1) / 2
    torch.testing.assert_close(head_diversity(a, eps=eps), ref)


# ---------------------------------------------------------------------------------------------------------- CKA
def _unbiased_hsic_reference(x, y):
    """Eq. 3 of Nguyen et al. 2021 written out with explicit matrices."""
    n = x.shape[0]
    k, l = x @ x.T, y @ y.T
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
    one = np.ones(n)
    return (np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * (one @ k @ l @ one)) / (n * (n - 3))


def test_linear_cka_properties():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 40))
    y = np.tanh(x @ rng.normal(size=(40, 30))) + 0.5 * rng.normal(size=(300, 30))
    q, _ = np.linalg.qr(rng.normal(size=(40, 40)))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, x @ q) == pytest.approx(1.0, abs=1e-12)
    c = linear_cka(x, y)
    assert 0.05 < c < 0.99
    assert linear_cka(3.7 * x, 0.01 * y) == pytest.approx(c, rel=1e-12)
    assert linear_cka(y, x) == pytest.approx(c, rel=1e-12)
    # Gram form (d > n) agrees with the feature form
    wide = rng.normal(size=(20, 100))
    wide2 = wide @ rng.normal(size=(100, 90))
    k = wide - wide.mean(0)
    l = wide2 - wide2.mean(0)
    ref = np.linalg.norm(l.T @ k) ** 2 / (np.linalg.norm(k.T @ k) * np.linalg.norm(l.T @ l))
    assert linear_cka(torch.tensor(wide), torch.tensor(wide2)) == pytest.approx(ref, rel=1e-10)


def test_minibatch_hsic_matches_reference_and_properties():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 10))
    y = x @ rng.normal(size=(10, 6)) + rng.normal(size=(32, 6))
    m = MinibatchCKA(2, 1)
    m.update([torch.tensor(x), torch.tensor(x * 2)], [torch.tensor(y)])
    ref = _unbiased_hsic_reference(x, y) / math.sqrt(_unbiased_hsic_reference(x, x) * _unbiased_hsic_reference(y, y))
    out = m.compute()
    assert out.shape == (2, 1)
    np.testing.assert_allclose(out[:, 0], [ref, ref], rtol=1e-10)       # isotropic scaling invariant
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    s = MinibatchCKA(3)
    s.update([torch.tensor(x), torch.tensor(x @ q), torch.tensor(y)])
    c = s.compute()
    assert c.shape == (3, 3)
    np.testing.assert_allclose(np.diag(c), 1.0, rtol=1e-12)
    assert c[0, 1] == pytest.approx(1.0, abs=1e-12)                     # orthogonal invariance
    np.testing.assert_array_equal(c, c.T)                               # symmetric
    assert c[0, 2] == pytest.approx(ref, rel=1e-10)


def test_minibatch_unrelated_features_near_zero():
    rng = np.random.default_rng(2)
    n, d, bs = 2000, 50, 100
    x, y = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    m = MinibatchCKA(1, 1)
    for i in range(0, n, bs):
        m.update([torch.tensor(x[i:i + bs])], [torch.tensor(y[i:i + bs])])
    unbiased = float(m.compute()[0, 0])
    biased = linear_cka(x, y)
    print(f"unrelated n={n} d={d}: minibatch unbiased CKA {unbiased:.4f}, full-batch biased CKA {biased:.4f}")
    assert abs(unbiased) < 0.05
    assert m.batches == 20 and m.examples == n


def test_minibatch_converges_to_full_batch():
    g = torch.Generator().manual_seed(3)
    bs, k = 256, 40
    x = torch.randn(bs * k, 64, generator=g, dtype=torch.float64)
    y = x @ torch.randn(64, 32, generator=g, dtype=torch.float64) + 4.0 * torch.randn(bs * k, 32, generator=g,
                                                                                         dtype=torch.float64)
    full = linear_cka(x, y)
    m = MinibatchCKA(2, 2)
    for i in range(k):
        sl = slice(i * bs, (i + 1) * bs)
        m.update([x[sl], y[sl]], [y[sl], x[sl]])
    c = m.compute()
    print(f"full-batch {full:.4f} vs minibatch {c[0, 0]:.4f}")
    assert 0.2 < full < 0.9
    assert abs(c[0, 0] - full) < 0.02 and abs(c[1, 1] - full) < 0.02
    assert c[0, 1] == pytest.approx(1.0) and c[1, 0] == pytest.approx(1.0)
    # the same model compared with itself: symmetric mode agrees with the two-model mode
    s = MinibatchCKA(2)
    for i in range(k):
        sl = slice(i * bs, (i + 1) * bs)
        s.update([x[sl], y[sl]])
    np.testing.assert_allclose(s.compute(), [[1.0, c[0, 0]], [c[0, 0], 1.0]], rtol=1e-10)


def test_minibatch_shape_and_errors():
    m = MinibatchCKA(3, 2)
    feats = [torch.randn(8, d) for d in (4, 5, 6)]
    m.update(feats, [torch.randn(8, 3), torch.randn(8, 2, 2)])          # (n, ...) is flattened
    assert m.compute().shape == (3, 2)
    with pytest.raises(ValueError):
        m.update([f[:3] for f in feats], [torch.randn(3, 3), torch.randn(3, 4)])
    with pytest.raises(ValueError):
        m.update(feats, None)
    with pytest.raises(ValueError):
        MinibatchCKA(2).update([torch.randn(8, 3)] * 2, [torch.randn(8, 3)])
    with pytest.raises(ValueError):
        MinibatchCKA(1).compute()


# ------------------------------------------------------------------------------------------------------ AvgDist
def _avg_dist_brute(mask):
    masked = np.argwhere(mask)
    visible = np.argwhere(~mask)
    return np.mean([min(math.dist(p, q) for q in visible) for p in masked])


def test_avg_dist_matches_brute_force():
    rng = np.random.default_rng(4)
    for ratio in (0.2, 0.5, 0.8, 0.95):
        for _ in range(5):
            mask = rng.random((8, 8)) < ratio
            if mask.all() or not mask.any():
                continue
            assert avg_dist(mask) == pytest.approx(_avg_dist_brute(mask), rel=1e-12)
    m = np.zeros((8, 8), bool)
    m[2:6, 2:6] = True               # 4×4 block: 12 border pixels at 1, 4 inner at 2 → 20 / 16
    assert avg_dist(m) == pytest.approx(20 / 16)
    assert avg_dist(np.zeros((4, 4), bool)) == 0.0
    with pytest.raises(ValueError):
        avg_dist(np.ones((4, 4), bool))


def test_avg_dist_grid_rows_and_monotone():
    ratios, patches = [0.4, 0.6], [8, 16, 32]
    rows = avg_dist_grid(96, 4, ratios, patches, n_masks=8, seed=0)
    assert [(r["ratio"], r["mask_patch"]) for r in rows] == [(r, p) for r in ratios for p in patches]
    for r in rows:
        assert set(r) == {"ratio", "mask_patch", "avg_dist_mean", "avg_dist_std"}
        assert r["avg_dist_mean"] > 0 and r["avg_dist_std"] >= 0
    for ratio in ratios:
        means = [r["avg_dist_mean"] for r in rows if r["ratio"] == ratio]
        assert means == sorted(means) and means[0] < means[-1]
    assert rows == avg_dist_grid(96, 4, ratios, patches, n_masks=8, seed=0)   # seeded
    with pytest.raises(ValueError):
        avg_dist_grid(96, 4, [1.0], [32], n_masks=2)
