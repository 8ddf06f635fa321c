"""The linear probe (tasks/semantic/probe.py): batched trials are independent and equal torch.optim.SGD, diverged
trials score -inf, the Optuna search is deterministic and finds good parameters on separable features, the grid
option evaluates exactly its grid on the same hold-out, the multi-label path masks difficult labels, the subsets are
stratified, and the feature cache / extraction survive round trips and bad files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from benchmark import checkpoint
from benchmark.errors import BenchmarkError, DataError, TaskFailed
from tasks.semantic import probe
from tasks.semantic.common import Split
from tasks.semantic.metrics import map11


def clusters(n_per_class: int, classes: int = 5, dim: int = 32, seed: int = 0, spread: float = 0.3,
             noise_seed: int | None = None):
    """L2-normalised Gaussian clusters around random centres: (x (N, D), y (N,)), linearly separable. The centres
    come from ``seed``; ``noise_seed`` draws fresh samples of the same clusters (a test set)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g)
    if noise_seed is not None:
        g = torch.Generator().manual_seed(noise_seed)
    y = torch.arange(classes).repeat(n_per_class)
    x = centres[y] + spread * torch.randn(len(y), dim, generator=g)
    return probe.normalize(x), y


def multilabel_data(n: int, labels: int = 4, dim: int = 32, seed: int = 0, difficult: float = 0.1):
    """Features = sum of one direction per present label + noise; labels int8 (N, C) in {1, -1, 0 (difficult)}."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(labels, dim, generator=g)
    present = torch.rand(n, labels, generator=g) < 0.4
    x = present.float() @ dirs + 0.2 * torch.randn(n, dim, generator=g)
    y = torch.where(present, 1, -1).to(torch.int8)
    y[torch.rand(n, labels, generator=g) < difficult] = 0
    return probe.normalize(x), y


# ---------------------------------------------------------------------------------------------- train_batched

def test_batched_trials_equal_single_trial_runs():
    x, y = clusters(20)
    lrs, wds = torch.tensor([0.3, 3.0, 30.0]), torch.tensor([1e-10, 1e-6, 1e-4])
    kw = dict(epochs=3, batch_size=16, seed=7)
    w, b = probe.train_batched(x, y, 5, lrs, wds, **kw)
    assert w.shape == (3, 32, 5) and b.shape == (3, 5)
    for t in range(3):
        w1, b1 = probe.train_batched(x, y, 5, lrs[t:t + 1], wds[t:t + 1], **kw)
        torch.testing.assert_close(w[t], w1[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(b[t], b1[0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(w[0], w[1]) and not torch.allclose(w[1], w[2])  # the trials really differ


def reference_sgd(x, y, num_classes, lr, wd, *, epochs, batch_size, seed):
    """The same model trained with torch.optim.SGD(momentum 0.9, weight_decay) and a cosine LambdaLR; the generator
    is used as train_batched uses it: the initial weights first, then one permutation per epoch."""
    gen = torch.Generator().manual_seed(seed)
    D = x.shape[1]
    w = (torch.randn(D, num_classes, generator=gen) / math.sqrt(D)).requires_grad_(True)
    b = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.SGD([w, b], lr=lr, momentum=0.9, weight_decay=wd)
    total = epochs * -(-len(x) // batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch_size):
            idx = perm[start:start + batch_size]
            loss = F.cross_entropy(x[idx] @ w + b, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return w.detach(), b.detach()


def test_single_trial_equals_torch_sgd_with_cosine_schedule():
    x, y = clusters(21)  # 105 samples, batch 16: a short last batch every epoch
    lr, wd = 2.0, 1e-3
    w, b = probe.train_batched(x, y, 5, torch.tensor([lr]), torch.tensor([wd]), epochs=4, batch_size=16, seed=3)
    w_ref, b_ref = reference_sgd(x, y, 5, lr, wd, epochs=4, batch_size=16, seed=3)
    torch.testing.assert_close(w[0], w_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(b[0], b_ref, rtol=1e-4, atol=1e-5)


def test_diverged_trial_is_nan_scores_minus_inf_and_spares_the_others():
    x, y = clusters(20)
    # lr·wd = 1000 > 2: the decay term alone multiplies the weights by about -1000 per step: overflow in ~13 steps
    lrs, wds = torch.tensor([1.0, 1e6, 10.0]), torch.tensor([1e-6, 1e-3, 1e-6])
    kw = dict(epochs=8, batch_size=16, seed=0)  # 56 steps
    w, b = probe.train_batched(x, y, 5, lrs, wds, **kw)
    assert torch.isnan(w[1]).all() and torch.isnan(b[1]).all()
    assert torch.isfinite(w[[0, 2]]).all() and torch.isfinite(b[[0, 2]]).all()
    for t in (0, 2):
        w1, b1 = probe.train_batched(x, y, 5, lrs[t:t + 1], wds[t:t + 1], **kw)
        torch.testing.assert_close(w[t], w1[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(b[t], b1[0], rtol=1e-5, atol=1e-6)
    logits = (x @ w[1] + b[1]).numpy()
    assert probe.score(logits, y.numpy(), "top1") == -math.inf
    assert probe.score(logits, y.numpy(), "mean_per_class_accuracy") == -math.inf
    assert probe.score((x @ w[0] + b[0]).numpy(), y.numpy(), "top1") > 90


SEARCH = dict(metric="top1", trials=6, parallel=3, epochs=15, batch_size=32, holdout=0.2)


def test_search_fails_when_every_trial_diverges():
    x, y = clusters(20)
    with pytest.raises(TaskFailed, match="diverged"):
        probe.search(x, y, y.numpy(), 5, seed=0, lr_range=(1e6, 1e7), wd_range=(1e-3, 1e-2), **SEARCH)


# ---------------------------------------------------------------------------------------------- search

def test_search_finds_good_params_deterministically_and_they_transfer_to_test():
    x, y = clusters(50, seed=0)                     # 250 training samples
    xt, yt = clusters(20, seed=0, noise_seed=99)    # 100 fresh test samples of the same clusters
    steps = []
    best = probe.search(x, y, y.numpy(), 5, seed=0, progress=lambda f, m: steps.append(f), **SEARCH)
    assert best["holdout"] > 90 and len(best["trials"]) == 6 and steps == [0.5, 1.0]
    assert 0.1 <= best["lr"] <= 100 and 1e-12 <= best["wd"] <= 1e-4
    assert best["holdout"] == max(t["holdout"] for t in best["trials"])
    again = probe.search(x, y, y.numpy(), 5, seed=0, **SEARCH)
    assert (again["lr"], again["wd"], again["holdout"]) == (best["lr"], best["wd"], best["holdout"])
    assert [t["lr"] for t in again["trials"]] == [t["lr"] for t in best["trials"]]
    other = probe.search(x, y, y.numpy(), 5, seed=1, **SEARCH)  # another seed: another TPE start (may pick others)
    assert [t["lr"] for t in other["trials"]] != [t["lr"] for t in best["trials"]]
    out = probe.fit_and_score(x, y, xt, yt.numpy(), 5, lr=best["lr"], wd=best["wd"], metric="mean_per_class_accuracy",
                              epochs=SEARCH["epochs"], batch_size=SEARCH["batch_size"], seed=0, multilabel=False)
    assert set(out) == {"mean_per_class_accuracy", "top1"}
    assert out["top1"] > 90 and out["mean_per_class_accuracy"] > 90


def test_fit_and_score_raises_when_the_final_probe_diverges():
    x, y = clusters(10)
    with pytest.raises(TaskFailed, match="diverged"):
        probe.fit_and_score(x, y, x, y.numpy(), 5, lr=1e6, wd=1e-3, metric="top1", epochs=8, batch_size=16, seed=0,
                            multilabel=False)


# ---------------------------------------------------------------------------------------------- grid search

def test_grid_search_evaluates_exactly_the_grid_on_the_shared_hold_out():
    x, y = clusters(30, seed=2, spread=0.8)
    lrs, wds = [0.3, 3.0, 30.0], [0.0, 1e-4]
    kw = dict(epochs=6, batch_size=32, holdout=0.25, seed=4)
    seen = []
    best = probe.search(x, y, y.numpy(), 5, metric="top1", grid=(lrs, wds), parallel=4,
                        progress=lambda f, m: seen.append((f, m)), **kw)
    assert [(t["lr"], t["wd"]) for t in best["trials"]] == [(lr, wd) for lr in lrs for wd in wds]  # lr-major
    assert [f for f, _ in seen] == [4 / 6, 1.0] and "grid points" in seen[-1][1]  # rounds of `parallel`
    # every point scored as a lone model trained on the same fit split and scored on the same hold-out
    fit, hold = probe.stratified_split(y.numpy(), kw["holdout"], kw["seed"])
    for t in best["trials"]:
        w, b = probe.train_batched(x[fit], y[fit], 5, torch.tensor([t["lr"]]), torch.tensor([t["wd"]]),
                                   epochs=kw["epochs"], batch_size=kw["batch_size"], seed=kw["seed"])
        assert t["holdout"] == pytest.approx(probe.score((x[hold] @ w[0] + b[0]).numpy(), y[hold].numpy(), "top1"))
    first_best = next(t for t in best["trials"] if t["holdout"] == max(u["holdout"] for u in best["trials"]))
    assert (best["lr"], best["wd"], best["holdout"]) == (first_best["lr"], first_best["wd"], first_best["holdout"])
    whole = probe.search(x, y, y.numpy(), 5, metric="top1", grid=(lrs, wds), parallel=6, **kw)  # one round
    assert [t["holdout"] for t in whole["trials"]] == pytest.approx([t["holdout"] for t in best["trials"]])


def test_grid_search_with_a_diverging_point_picks_among_the_rest_and_fails_only_if_all_diverge():
    x, y = clusters(20)
    best = probe.search(x, y, y.numpy(), 5, metric="top1", grid=([1e6, 10.0], [1e-3]), parallel=2, epochs=8,
                        batch_size=16, holdout=0.2, seed=0)
    assert best["trials"][0]["holdout"] == -math.inf and best["lr"] == 10.0 and best["holdout"] > 90
    with pytest.raises(TaskFailed, match="diverged") as info:
        probe.search(x, y, y.numpy(), 5, metric="top1", grid=([1e6], [1e-3]), epochs=8, batch_size=16,
                     holdout=0.2, seed=0)
    assert "lrs" in info.value.fix


def test_grid_search_refuses_bad_grids_and_trials_with_a_grid():
    x, y = clusters(10)
    kw = dict(metric="top1", epochs=1, batch_size=16, holdout=0.2, seed=0)
    for grid in (([], [0.0]), ([1.0], []), ([-1.0], [0.0]), ([1.0], [-1e-4]), (["fast"], [0.0])):
        with pytest.raises(BenchmarkError, match="grid"):
            probe.search(x, y, y.numpy(), 5, grid=grid, **kw)
    with pytest.raises(ValueError, match="not both"):
        probe.search(x, y, y.numpy(), 5, grid=([1.0], [0.0]), trials=3, **kw)
    with pytest.raises(ValueError, match="trials"):
        probe.search(x, y, y.numpy(), 5, **kw)  # neither


def test_grid_probe_separates_separable_classes_and_stays_near_chance_on_noise():
    x, y = clusters(50, seed=5)
    xt, yt = clusters(20, seed=5, noise_seed=7)
    kw = dict(epochs=20, batch_size=64, seed=0, multilabel=False)
    best = probe.search(x, y, y.numpy(), 5, metric="top1", grid=([1.0, 10.0], [0.0]), holdout=0.2, **kw)
    good = probe.fit_and_score(x, y, xt, yt.numpy(), 5, lr=best["lr"], wd=best["wd"],
                               metric="mean_per_class_accuracy", **kw)
    assert set(good) == {"top1", "mean_per_class_accuracy"} and good["top1"] > 95
    g = torch.Generator().manual_seed(1)
    noise = probe.normalize(torch.randn(len(y), 32, generator=g))
    noise_t = probe.normalize(torch.randn(100, 32, generator=g))
    bad = probe.fit_and_score(noise, y, noise_t, yt.numpy(), 5, lr=1.0, wd=0.0, metric="top1", **kw)
    assert bad["top1"] < 40  # chance is 20%


def test_score_by_hand():
    labels = np.array([0, 0, 0, 1])
    logits = np.array([[1.0, 0], [1, 0], [0, 1], [0, 1]])  # class 0: 2/3 right, class 1: 1/1
    assert probe.score(logits, labels, "top1") == pytest.approx(75.0)
    assert probe.score(logits, labels, "mean_per_class_accuracy") == pytest.approx(100 * (2 / 3 + 1) / 2)


# ---------------------------------------------------------------------------------------------- subsets

def test_stratified_subset_is_deterministic_and_balanced():
    labels = np.repeat(np.arange(10), [50, 60, 70, 80, 90, 100, 110, 120, 130, 140])
    a, b = probe.stratified_subset(labels, 100), probe.stratified_subset(labels, 100)
    assert np.array_equal(a, b) and len(a) == 100 and len(set(a)) == 100
    assert np.bincount(labels[a]).tolist() == [10] * 10
    assert len(probe.stratified_subset(labels, 0)) == len(labels)
    assert not np.array_equal(probe.stratified_subset(labels, 100, seed=1), a)


def test_stratified_split_holds_out_each_class():
    labels = np.repeat(np.arange(4), 25)
    train, hold = probe.stratified_split(labels, 0.2, seed=0)
    assert not set(train) & set(hold) and len(train) + len(hold) == 100
    assert np.bincount(labels[hold]).tolist() == [5, 5, 5, 5]
    lone = np.array([0, 0, 0, 1])  # a class with one sample is never held out
    assert 3 not in probe.stratified_split(lone, 0.5, seed=0)[1]


# ---------------------------------------------------------------------------------------------- multi-label

def test_multilabel_map11_beats_random_scores():
    x, y = multilabel_data(500, seed=0)
    x, y, xt, yt = x[:300], y[:300], x[300:], y[300:].numpy()  # test: 200 rows never trained on
    out = probe.fit_and_score(x, y, xt, yt, 4, lr=5.0, wd=1e-6, metric="map11", epochs=30, batch_size=32, seed=0,
                              multilabel=True)
    assert set(out) == {"map11"}
    chance = map11(np.random.default_rng(0).random(yt.shape), yt)[0]
    assert out["map11"] > 90 and out["map11"] > chance + 30


def test_multilabel_search_uses_map11():
    x, y = multilabel_data(150, seed=1)
    ids = Split([f"l{j}" for j in range(4)], y.numpy(), images=np.zeros((150, 1, 1, 3), np.uint8)).class_ids()
    best = probe.search(x, y, ids, 4, seed=0, multilabel=True, **{**SEARCH, "metric": "map11"})
    assert best["holdout"] > 80


def test_difficult_rows_do_not_touch_the_weights():
    x, y = multilabel_data(120, seed=2)
    y[::7] = 0                                            # whole rows difficult
    x2 = x.clone()
    x2[::7] = 50 * torch.randn(len(x2[::7]), x.shape[1], generator=torch.Generator().manual_seed(5))
    kw = dict(epochs=3, batch_size=16, seed=0, multilabel=True)
    lrs, wds = torch.tensor([1.0, 10.0]), torch.tensor([1e-6, 1e-4])
    w, b = probe.train_batched(x, y, 4, lrs, wds, **kw)
    w2, b2 = probe.train_batched(x2, y, 4, lrs, wds, **kw)
    torch.testing.assert_close(w, w2, rtol=0, atol=1e-6)
    torch.testing.assert_close(b, b2, rtol=0, atol=1e-6)


def test_difficult_entries_are_masked_out_of_the_loss():
    """One full-batch step equals SGD on the BCE averaged over the non-difficult entries only."""
    x, y = multilabel_data(64, seed=3, difficult=0.25)
    assert (y == 0).any() and ((y == 0).any(1) & (y != 0).any(1)).any()  # partly difficult rows exist
    lr, wd, seed = 0.5, 1e-3, 4
    w, b = probe.train_batched(x, y, 4, torch.tensor([lr]), torch.tensor([wd]), epochs=1, batch_size=64, seed=seed,
                               multilabel=True)
    gen = torch.Generator().manual_seed(seed)
    w0 = (torch.randn(32, 4, generator=gen) / math.sqrt(32)).requires_grad_(True)
    b0 = torch.zeros(4, requires_grad=True)
    keep = y != 0
    loss = F.binary_cross_entropy_with_logits((x @ w0 + b0)[keep], (y[keep] == 1).float())
    gw, gb = torch.autograd.grad(loss, (w0, b0))
    torch.testing.assert_close(w[0], w0.detach() - lr * (gw + wd * w0.detach()), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b[0], -lr * gb, rtol=1e-5, atol=1e-6)
    # flipping a difficult entry to "present" changes the step: the mask is what keeps it out
    y2 = y.clone()
    y2[y == 0] = 1
    w2, _ = probe.train_batched(x, y2, 4, torch.tensor([lr]), torch.tensor([wd]), epochs=1, batch_size=64, seed=seed,
                                multilabel=True)
    assert not torch.allclose(w, w2)


# ---------------------------------------------------------------------------------------------- features

def test_cached_extract_hits_the_cache_and_loads_weights_only(tmp_path):
    calls = []
    feats, kept = torch.randn(4, 8), np.array([0, 2, 5, 9], dtype=np.int64)

    def compute():
        calls.append(1)
        return feats, kept

    f1, k1, hit1 = probe.cached_extract(tmp_path / "cache", "abc", compute)
    f2, k2, hit2 = probe.cached_extract(tmp_path / "cache", "abc", compute)
    assert (hit1, hit2) == (False, True) and len(calls) == 1
    assert torch.equal(f1, feats) and torch.equal(f2, feats)
    assert k2.dtype == np.int64 and k2.tolist() == [0, 2, 5, 9] and np.array_equal(k1, kept)
    blob = torch.load(tmp_path / "cache" / "abc.pt", weights_only=True)
    assert set(blob) == {"features", "kept"} and blob["kept"].tolist() == [0, 2, 5, 9]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["abc.pt"]  # no temp file left behind
    _, _, hit3 = probe.cached_extract(tmp_path / "cache", "other", compute)
    assert not hit3 and len(calls) == 2


@pytest.fixture(scope="module")
def tiny_model(tiny_vit_ckpt):
    return checkpoint.load_backbone(tiny_vit_ckpt)


def on_disk(tmp_path, n: int, corrupt: tuple[int, ...]) -> Split:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = tmp_path / f"img{i}.jpg"
        if i in corrupt:
            p.write_bytes(b"\xff\xd8 not a jpeg " + rng.bytes(64))
        else:
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return Split(["a", "b"], (np.arange(n) % 2).astype(np.int64), paths=paths, name="disk/train")


def test_extract_skips_a_corrupt_image_and_reports_kept_indices(tmp_path, tiny_model, caplog):
    split = on_disk(tmp_path, 6, corrupt=(2,))
    tf = probe.eval_transform(tiny_model)
    seen = []
    feats, kept = probe.extract(tiny_model, split, tf, batch_size=4, progress=seen.append)
    assert kept.tolist() == [0, 1, 3, 4, 5] and kept.dtype == np.int64
    assert feats.shape == (5, 64) and feats.dtype == torch.float32 and torch.isfinite(feats).all()
    assert seen == [4 / 6, 1.0] and "img2.jpg" in caplog.text
    good, kept_good = probe.extract(tiny_model, split.subset([0, 1, 3, 4, 5]), tf, batch_size=4)
    assert kept_good.tolist() == [0, 1, 2, 3, 4]
    torch.testing.assert_close(feats, good, rtol=1e-5, atol=1e-5)


def test_extract_fails_when_too_many_images_are_corrupt(tmp_path, tiny_model):
    with pytest.raises(DataError, match="cannot be decoded"):
        probe.extract(tiny_model, on_disk(tmp_path, 6, corrupt=(1, 4)), probe.eval_transform(tiny_model))


def test_extract_in_memory_split_through_the_cache(tmp_path, tiny_model):
    images = np.random.default_rng(1).integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)
    split = Split(["a"], np.zeros(5, np.int64), images=images, name="mem")
    compute = lambda: probe.extract(tiny_model, split, probe.eval_transform(tiny_model))  # noqa: E731
    f1, k1, hit1 = probe.cached_extract(tmp_path, "mem", compute)
    f2, k2, hit2 = probe.cached_extract(tmp_path, "mem", compute)
    assert not hit1 and hit2 and k2.tolist() == list(range(5)) and torch.equal(f1, f2)


def test_extract_features_of_arrays_does_not_depend_on_the_batching(tiny_model):
    images = np.random.default_rng(2).integers(0, 255, (7, 28, 28), dtype=np.uint8)

    def transform(batch):  # uint8 (B, 28, 28) -> (B, 3, 32, 32)
        x = F.interpolate(batch.float().div(255).unsqueeze(1), size=(32, 32), mode="bilinear", align_corners=False)
        return x.expand(-1, 3, -1, -1)

    seen = []
    feats = probe.extract_features(tiny_model, images, transform, batch_size=3, progress=seen.append)
    assert feats.shape == (7, 64) and feats.dtype == torch.float32 and seen == [3 / 7, 6 / 7, 1.0]
    torch.testing.assert_close(feats, probe.extract_features(tiny_model, images, transform, batch_size=7),
                               rtol=1e-5, atol=1e-5)
    assert not torch.allclose(feats[0], feats[1])  # different images, different features
