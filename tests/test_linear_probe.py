import gzip

import numpy as np
import pytest
import torch

from benchmark.errors import DataError, TaskFailed
from benchmark.registry import get_task
from tasks.classification import fashion_mnist as fm
from tasks.classification import linear_probe as lp


def test_stratified_subset_is_deterministic_and_balanced():
    labels = np.repeat(np.arange(10), [50, 60, 70, 80, 90, 100, 110, 120, 130, 140])
    a, b = lp.stratified_subset(labels, 100), lp.stratified_subset(labels, 100)
    assert np.array_equal(a, b) and len(a) == 100 and len(set(a)) == 100
    assert np.bincount(labels[a]).tolist() == [10] * 10
    assert len(lp.stratified_subset(labels, 0)) == len(labels)


def test_stratified_split_holds_out_each_class():
    labels = np.repeat(np.arange(4), 25)
    train, hold = lp.stratified_split(labels, 0.2, seed=0)
    assert not set(train) & set(hold) and len(train) + len(hold) == 100
    assert np.bincount(labels[hold]).tolist() == [5, 5, 5, 5]


def test_accuracy_metrics_by_hand():
    labels = torch.tensor([0, 0, 0, 1])
    logits = torch.tensor([[1.0, 0], [1, 0], [0, 1], [0, 1]])  # class 0: 2/3 right, class 1: 1/1
    m = lp.accuracy_metrics(logits, labels, 2)
    assert m["top1"] == pytest.approx(75.0) and m["mean_per_class_acc"] == pytest.approx(100 * (2 / 3 + 1) / 2)


def test_probe_separates_separable_classes_and_fails_on_noise():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(5, 16, generator=g) * 3
    y = torch.arange(5).repeat(60)
    x = centers[y] + 0.3 * torch.randn(len(y), 16, generator=g)
    good, chosen = lp.probe(x[:200], y[:200], x[200:], y[200:], 5, lrs=[1.0, 10.0], wds=[0.0], epochs=20,
                            batch_size=64, holdout=0.2, seed=0)
    assert good["top1"] > 95 and chosen["lr"] in (1.0, 10.0)
    noise = torch.randn(len(y), 16, generator=g)
    bad, _ = lp.probe(noise[:200], y[:200], noise[200:], y[200:], 5, lrs=[1.0], wds=[0.0], epochs=20,
                      batch_size=64, holdout=0.2, seed=0)
    assert bad["top1"] < 50  # chance is 20%


def test_divergent_probe_is_a_task_failure():
    x, y = torch.randn(40, 4) * 1e30, torch.arange(4).repeat(10)
    with pytest.raises(TaskFailed, match="loss became"):
        lp.train_linear(x, y, 4, lr=1e30, wd=0.0, epochs=2, batch_size=8, seed=0)


def test_feature_cache_computes_once(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return torch.ones(3, 2)

    a = lp.cached_features(tmp_path, "k", compute)
    b = lp.cached_features(tmp_path, "k", compute)
    assert torch.equal(a, b) and len(calls) == 1


def test_idx_round_trip_and_mini_layout(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    fm.write_idx(tmp_path / "x.gz", arr)
    assert np.array_equal(fm.read_idx(tmp_path / "x.gz"), arr)
    spec = get_task("fashion_mnist_probe")
    fm.FashionMNISTProbe.make_mini(spec, tmp_path / "mini", seed=0)
    fm.FashionMNISTProbe.check_data(spec, tmp_path / "mini")
    images, labels = fm.load_split(tmp_path / "mini", "train")
    assert images.shape == (2000, 28, 28) and np.bincount(labels).tolist() == [200] * 10
    real, real_labels = fm.load_split(fm.DEBIAN_ROOT, "train")
    assert any(np.array_equal(images[0], real[i]) for i in np.flatnonzero(real_labels == labels[0]))


def test_damaged_idx_is_a_data_error(tmp_path):
    with gzip.open(tmp_path / "bad.gz", "wb") as fh:
        fh.write(b"\x01\x02\x03\x04garbage")
    with pytest.raises(DataError, match="cannot read IDX file"):
        fm.read_idx(tmp_path / "bad.gz")
    spec = get_task("fashion_mnist_probe")
    with pytest.raises(DataError, match="lacks t10k-images-idx3-ubyte.gz"):
        (tmp_path / "d").mkdir()
        for f in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
            (tmp_path / "d" / f).write_bytes(b"")
        fm.FashionMNISTProbe.check_data(spec, tmp_path / "d")
