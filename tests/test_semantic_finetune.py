"""The classification fine-tune engine on tiny in-memory splits: it learns an easy rule, scores every metric,
skips and counts unreadable images, and runs the full mixup / RandAugment recipe."""

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.errors import DataError
from benchmark.registry import Metric, TaskSpec
from tasks.base import RunContext
from tasks.semantic import finetune as ft
from tasks.semantic import finetune_parts as parts
from tasks.semantic.common import Split
from tasks.semantic.metrics import map11

PALETTE = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])  # class = dominant colour: survives crops / flips
FAST = dict(iters=60, batch_size=32, lr=1.25e-3, warmup_iters=5, layer_decay=0.9, drop_path=0.0, mixup=0.0, cutmix=0.0,
            auto_augment=None, reprob=0.0, workers=0, test_batch_size=64)


def colour_images(labels: np.ndarray, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """Noise tinted by the RGB mask of each row of ``labels`` (N, 3) in {0, 1}."""
    noise = rng.integers(0, 90, size=(len(labels), size, size, 3))
    return np.clip(noise + 150 * labels[:, None, None, :], 0, 255).astype(np.uint8)


def single_label(n: int, seed: int, size: int = 32) -> Split:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % len(PALETTE)
    return Split([f"c{i}" for i in range(len(PALETTE))], y.astype(np.int64),
                 images=colour_images(PALETTE[y], rng, size), name=f"colours/{seed}")


def multi_label(n: int, seed: int) -> Split:
    """Three labels, one per colour channel; a few absent ones marked difficult (0) as VOC does."""
    rng = np.random.default_rng(seed)
    present = (rng.random((n, 3)) < 0.35).astype(np.int64)
    labels = np.where(present == 1, 1, -1).astype(np.int8)
    labels[(present == 0) & (rng.random((n, 3)) < 0.1)] = 0
    return Split(["r", "g", "b"], labels, images=colour_images(present, rng), name=f"channels/{seed}")


def on_disk(split: Split, folder: Path, corrupt: int) -> Split:
    """The split as JPEG files, the first ``corrupt`` of them truncated to garbage."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(split.images):
        path = folder / f"{i:04d}.jpg"
        Image.fromarray(img).save(path, quality=95)
        if i < corrupt:
            path.write_bytes(path.read_bytes()[:40])
        paths.append(path)
    return Split(split.classes, split.labels, paths=paths, name=split.name)


SPEC = TaskSpec(name="colours", suite="semantic", description="tiny fine-tune", dataset={}, presets={},
                metrics=(Metric("top1", "up", primary=True),))


def context(tmp_path: Path, ckpt: Path, *, drop: tuple[str, ...] = (), **params) -> RunContext:
    """A run context with FAST over the fine-tune's declared defaults (``drop``: keys left at their default)."""
    values = {k: v for k, v in dict(FAST, **params).items() if k not in drop}
    return RunContext(spec=SPEC, ckpt=ckpt, ckpt_sha256="", data_root=tmp_path, preset="test",
                      params=ft.SemanticFinetune.complete(ft.SemanticFinetune.params, values), seed=0, subset=0,
                      work_dir=tmp_path / "work", cache_dir=tmp_path / "cache")


def finetune(ctx: RunContext, train: Split, test: Split, metric: str) -> dict[str, float]:
    return ft.SemanticFinetune(ctx, train, test, metric).run()


def test_defaults_are_simmim_recipe_and_layer_decay_follows_the_family(tmp_path, tiny_vit_ckpt, tiny_swin_ckpt):
    vit = ft.SemanticFinetune(context(tmp_path, tiny_vit_ckpt, drop=("layer_decay", "mixup")), single_label(8, 0),
                              single_label(8, 1), "top1")
    assert vit.p["layer_decay"] == 0.65 and vit.p["mixup"] == 0.8 and vit.p["epochs"] == 100
    swin = ft.SemanticFinetune(context(tmp_path, tiny_swin_ckpt, drop=("layer_decay",)), single_label(8, 0),
                               single_label(8, 1), "top1")
    assert swin.p["layer_decay"] == 0.9
    assert ft.SemanticFinetune.params["lr"].default == 2.5e-3  # 1.25e-3 per 512 images at batch 1024


def test_batch_is_capped_by_the_training_set_and_even_when_mixing():
    assert ft.per_process_batch(64, 1000, 1, mixing=False) == 64
    assert ft.per_process_batch(64, 21, 1, mixing=True) == 20
    with pytest.raises(DataError, match="cannot fill a batch"):
        ft.per_process_batch(64, 1, 1, mixing=True)


def test_easy_rule_is_learned_well_above_chance(tmp_path, tiny_vit_ckpt):
    out = finetune(context(tmp_path, tiny_vit_ckpt), single_label(128, 0), single_label(64, 1), "top1")
    assert set(out) == {"top1"} and out["top1"] > 60  # chance is 25%


def test_multilabel_map11_beats_random_scores(tmp_path, tiny_vit_ckpt):
    test = multi_label(64, 1)
    out = finetune(context(tmp_path, tiny_vit_ckpt), multi_label(128, 0), test, "map11")
    rng = np.random.default_rng(0)
    chance = np.mean([map11(rng.random(test.labels.shape), test.labels)[0] for _ in range(20)])
    assert set(out) == {"map11"} and 0 <= out["map11"] <= 100 and out["map11"] > chance + 20


def test_mean_per_class_acc_leaves_unreadable_test_images_out(tmp_path, tiny_vit_ckpt, caplog):
    test = on_disk(single_label(120, 1), tmp_path / "test", corrupt=1)
    with caplog.at_level(logging.WARNING):
        task = ft.SemanticFinetune(context(tmp_path, tiny_vit_ckpt, iters=30), single_label(64, 0), test,
                                   "mean_per_class_acc")
        out = task.run()
    assert set(out) == {"top1", "mean_per_class_acc"} and out["mean_per_class_acc"] > 40
    assert task.extra["unreadable_test"] == 1  # stored with the result
    assert "1 of 120 test images could not be decoded" in caplog.text


def test_unreadable_training_image_is_replaced_counted_once_and_too_many_fail(tmp_path):
    split = on_disk(single_label(60, 0), tmp_path / "one", corrupt=1)
    ds = parts.SplitDataset(split, lambda img: np.asarray(img), train=True, size=32)
    assert int(ds[0]["data_samples"]["label"]) == split.labels[1]  # the next readable image stands in
    ds[0]
    assert ds.counter.bad == [split.paths[0]]
    test = parts.SplitDataset(split, lambda img: np.asarray(img), train=False, size=32)
    assert not test[0]["data_samples"]["valid"] and test[1]["data_samples"]["valid"]
    broken = parts.SplitDataset(on_disk(single_label(60, 0), tmp_path / "two", corrupt=2), lambda img: img, train=True,
                             size=32)
    with pytest.raises(DataError, match="2 of 60 images cannot be decoded"):
        broken[0]  # index 0 and its stand-in 1 are both unreadable: 2 > 1% of 60


def test_swin_pools_its_last_stage(tmp_path, tiny_swin_ckpt):
    out = finetune(context(tmp_path, tiny_swin_ckpt, iters=20), single_label(64, 0, size=64),
                      single_label(32, 1, size=64), "top1")
    assert out["top1"] > 60


def test_full_recipe_with_mixup_cutmix_randaugment_runs(tmp_path, tiny_vit_ckpt):
    ctx = context(tmp_path, tiny_vit_ckpt, iters=4, batch_size=8,
                  drop=("mixup", "cutmix", "auto_augment", "reprob", "drop_path", "layer_decay"))  # the recipe's
    train_tf, _ = parts.transforms(ctx.params, 32)
    assert "RandAugment" in repr(train_tf) and "RandomErasing" in repr(train_tf)
    out = finetune(ctx, single_label(32, 0), single_label(16, 1), "top1")
    assert 0 <= out["top1"] <= 100


def test_randaugment_at_magnitude_10_posterizes_to_black_instead_of_crashing():
    """rand-m9-mstd0.5 reaches magnitude 10 now and then; PosterizeIncreasing then keeps 0 bits, which Pillow >= 10
    refuses: the train transform must give the old Pillow result (a black image), never raise."""
    from timm.data import auto_augment

    parts.transforms({"auto_augment": "rand-m9-mstd0.5-inc1", "reprob": 0.0, "crop_pct": 0.875}, 32)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    op = auto_augment.AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=10)
    out = np.asarray(op(img))
    assert out.shape == (32, 32, 3) and out.max() == 0
    assert np.array_equal(np.asarray(op.aug_fn(img, 4)), np.asarray(img) & 0xF0)  # other levels: Pillow's own
