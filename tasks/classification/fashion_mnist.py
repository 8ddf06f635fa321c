"""Fashion-MNIST linear probe: the suite's smoke task on real data (Debian package ``dataset-fashion-mnist``).

The probe is the suite's one linear probe (tasks/semantic/probe.py): frozen, cached, L2-normalised features (28 px
grey images resized bilinearly to the backbone's input size, replicated to 3 channels, ImageNet mean/std); lr and
weight decay chosen from the preset's ``lrs`` × ``wds`` grid on a stratified ``holdout`` of train (top-1 on the
hold-out; every grid point trained at once as one batched model); retrained on all of train and scored on test
(top-1 and mean per-class accuracy).

Layout (the original IDX files, gzip-compressed, as Zalando ships them and Debian installs them in
/usr/share/datasets/fashion-mnist)::

    train-images-idx3-ubyte.gz  train-labels-idx1-ubyte.gz  t10k-images-idx3-ubyte.gz  t10k-labels-idx1-ubyte.gz

``--data mini`` writes a class-balanced subset of the real files in the same layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmark.data import fingerprint
from benchmark.errors import DataError
from benchmark.fashion_mnist import CLASSES, DEBIAN_ROOT, FILES, load_split, write_idx
from benchmark.registry import TaskSpec
from tasks.base import Param, TaskAdapter

if TYPE_CHECKING:
    import torch

MINI_SIZES = {"train": 2000, "test": 500}


class FashionMNISTProbe(TaskAdapter):
    params = {
        **TaskAdapter.params,
        "train_limit": Param(0, int, "class-balanced cap on the training images (0: all 60,000)"),
        "test_limit": Param(0, int, "class-balanced cap on the test images (0: all 10,000)"),
        "epochs": Param(100, int, "SGD epochs of every probe (grid points and the final retrain)"),
        "batch_size": Param(1024, int, "probe mini-batch size"),
        "lrs": Param([0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0], list, "learning rates of the search grid"),
        "wds": Param([0.0, 1.0e-6, 1.0e-4], list, "weight decays of the search grid"),
        "holdout": Param(0.2, float, "fraction of each training class held out to choose (lr, wd)"),
        "parallel": Param(0, int, "grid points trained together as one batched model (0: the whole grid)"),
        "pool": Param("avg", str, "avg: mean of the final-normed patch tokens; token: the model's pooled "
                                  "pre-logits", choices=("avg", "token")),
        "extract_batch_size": Param(256, int, "images per forward pass of the feature extraction"),
    }

    @classmethod
    def make_mini(cls, spec: TaskSpec, out_dir: Path, seed: int) -> None:
        if not all((DEBIAN_ROOT / f).exists() for pair in FILES.values() for f in pair):
            raise DataError(f"the real Fashion-MNIST files are not in {DEBIAN_ROOT}",
                            "install them: apt-get install dataset-fashion-mnist (`make setup` does this)")
        from tasks.semantic import probe

        out_dir.mkdir(parents=True, exist_ok=True)
        for split, (img_file, lbl_file) in FILES.items():
            images, labels = load_split(DEBIAN_ROOT, split)
            idx = probe.stratified_subset(labels, MINI_SIZES[split], seed=seed)
            write_idx(out_dir / img_file, images[idx])
            write_idx(out_dir / lbl_file, labels[idx].astype(np.uint8))

    def transform(self, model) -> callable:
        """uint8 (N, 28, 28) -> normalised float (N, 3, S, S) at the backbone's input size."""
        import torch
        import torch.nn.functional as F
        from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        size = int(model.mim_meta["img_size"])
        # ImageNet mean/std, as SimMIM pre-training (timm's pretrained_cfg says 0.5/0.5 for ViTs)
        mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)

        def apply(batch: torch.Tensor) -> torch.Tensor:
            x = batch.float().div_(255).unsqueeze(1)
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            return (x.expand(-1, 3, -1, -1) - mean) / std

        return apply

    def features(self, model, split: str, images: np.ndarray, data_id: str) -> torch.Tensor:
        from tasks.semantic import probe

        ctx, p = self.ctx, self.ctx.params
        key = probe.cache_key("fashion_mnist-v2", ctx.ckpt_sha256, data_id, split, len(images),
                              "gray3-bilinear-imagenet-meanstd", int(model.mim_meta["img_size"]), p["pool"])
        base = {"train": 0.0, "test": 0.35}[split]

        def compute() -> tuple[torch.Tensor, np.ndarray]:
            feats = probe.extract_features(model, images, self.transform(model), device=ctx.device,
                                           batch_size=p["extract_batch_size"], pool=p["pool"],
                                           progress=lambda f: ctx.progress(base + 0.35 * f, f"features {split}"))
            return feats, np.arange(len(images))

        feats, _, hit = probe.cached_extract(ctx.cache_dir / "features", key, compute)
        self.extra[f"features_{split}"] = "cache" if hit else "extracted"
        return feats

    def run(self) -> dict[str, float]:
        import torch

        from tasks.semantic import probe

        ctx, p = self.ctx, self.ctx.params
        data_id = fingerprint(ctx.spec, ctx.data_root)
        splits = {}
        for split, limit in (("train", p["train_limit"]), ("test", p["test_limit"])):
            images, labels = load_split(ctx.data_root, split)
            # --subset applies to each split; the preset's limits cap it further (both class-balanced).
            n = min(x for x in (ctx.subset, limit, len(labels)) if x) if (ctx.subset or limit) else 0
            idx = probe.stratified_subset(labels, n)
            splits[split] = (images[idx], labels[idx])
            self.extra[f"{split}_images"] = len(idx)
        model = ctx.load_backbone()
        feats = {s: probe.normalize(self.features(model, s, splits[s][0], data_id)).to(ctx.device) for s in splits}
        y_train = torch.from_numpy(splits["train"][1]).to(ctx.device)
        grid = (p["lrs"], p["wds"])
        common = dict(epochs=p["epochs"], batch_size=p["batch_size"], seed=ctx.seed, multilabel=False)
        best = probe.search(feats["train"], y_train, splits["train"][1], len(CLASSES), metric="top1", grid=grid,
                            parallel=p["parallel"] or len(p["lrs"]) * len(p["wds"]), holdout=p["holdout"],
                            progress=lambda f, m: ctx.progress(0.7 + 0.25 * f, m), **common)
        self.extra["probe"] = {k: best[k] for k in ("lr", "wd", "holdout")}
        self.extra["probe_trials"] = best["trials"]
        # mean_per_class_accuracy as the scored metric: fit_and_score then reports top-1 as well
        out = probe.fit_and_score(feats["train"], y_train, feats["test"], splits["test"][1], len(CLASSES),
                                  lr=best["lr"], wd=best["wd"], metric="mean_per_class_accuracy", **common)
        return {"top1": out["top1"], "mean_per_class_acc": out["mean_per_class_accuracy"]}
