"""Semantic tasks (CoG L1–L5, the 12 K12 datasets, iNat18): one adapter, a reader per dataset, two protocols.

The spec names the reader (``dataset.reader``, see tasks/semantic/readers/__init__.py) and, for CoG, the level;
the preset names the protocol:

* ``linear_probe`` — frozen, cached features + logistic regression with an Optuna search (tasks/semantic/probe.py);
  CoG's protocol, and the ``linear`` / ``ci`` presets of K12 and iNat18;
* ``finetune`` — the SimMIM fine-tune recipe on mmengine's Runner (tasks/semantic/finetune.py); the ``paper`` preset
  of K12 and iNat18, as the paper fine-tunes them.

The metric is the spec's primary metric: top-1, mean per-class accuracy (Aircraft, Pets, Caltech-101, Flowers-102)
or 11-point mAP (VOC2007). ``--subset N`` takes a deterministic, class-stratified N images of each split.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from benchmark.data import fingerprint
from benchmark.registry import TaskSpec
from tasks.base import TaskAdapter
from tasks.classification import linear_probe as lp
from tasks.semantic import probe, readers
from tasks.semantic.common import Split


def read_splits(spec: TaskSpec, root: Path) -> tuple[Split, Split]:
    name = spec.dataset["reader"]
    reader, root = readers.get(name), readers.reader_root(name, root)
    if "level" in spec.dataset:
        return reader.read_level(root, int(spec.dataset["level"]))
    return reader.read(root)


def stratified(split: Split, n: int) -> Split:
    """A deterministic class-stratified subset (the whole split when n is 0)."""
    if not n or n >= len(split):
        return split
    return split.subset(lp.stratified_subset(split.class_ids(), n))


def image_list_digest(split: Split) -> str:
    """Identity of exactly which images a split holds (part of the feature cache key)."""
    h = hashlib.sha256()
    if split.paths is not None:
        for p in split.paths:
            h.update(str(p).encode() + b"\0")
    else:
        h.update(np.ascontiguousarray(split.images).data)
    h.update(np.ascontiguousarray(split.labels).data)
    return h.hexdigest()[:16]


class SemanticTask(TaskAdapter):
    @classmethod
    def check_data(cls, spec: TaskSpec, root: Path) -> None:
        super().check_data(spec, root)
        read_splits(spec, root)  # metadata only: split / meta files, class coverage, empty folders

    @classmethod
    def make_mini(cls, spec: TaskSpec, out_dir: Path, seed: int) -> None:
        name = spec.dataset["reader"]
        readers.get(name).make_mini(readers.reader_root(name, out_dir), seed)

    @property
    def metric(self) -> str:
        return next(m.name for m in self.ctx.spec.metrics if m.primary)

    def run(self) -> dict[str, float]:
        ctx = self.ctx
        train, test = read_splits(ctx.spec, ctx.data_root)
        train, test = stratified(train, ctx.subset), stratified(test, ctx.subset)
        self.extra = {"train_images": len(train), "test_images": len(test), "classes": len(train.classes),
                      **{f"{s.name}:{k}": v for s in (train, test) for k, v in s.notes.items()}}
        protocol = ctx.params.get("protocol", "linear_probe")
        if protocol == "finetune":
            from tasks.semantic.finetune import finetune

            metrics = finetune(ctx, train, test, self.metric)
        elif protocol == "linear_probe":
            metrics = self.linear_probe(train, test)
        else:
            raise ValueError(f"unknown protocol {protocol!r} in preset {ctx.preset}")
        declared = {m.name for m in ctx.spec.metrics}
        return self.finish({k: v for k, v in metrics.items() if k in declared})

    # ------------------------------------------------------------------------------------------ linear probe

    def features(self, model, split: Split, which: str) -> tuple[torch.Tensor, np.ndarray]:
        ctx, p = self.ctx, self.ctx.params
        crop_pct, pool = float(p.get("crop_pct", 0.875)), p.get("pool", "avg")
        key = lp.cache_key("semantic-v1", ctx.ckpt_sha256, fingerprint(ctx.spec, ctx.data_root), ctx.spec.name,
                           which, image_list_digest(split), "timm-eval-bicubic", int(model.mim_meta["img_size"]),
                           crop_pct, pool)
        base = {"train": 0.0, "test": 0.3}[which]

        def compute():
            return probe.extract(model, split, probe.eval_transform(model, crop_pct), device=ctx.device,
                                 batch_size=int(p.get("extract_batch_size", 256)), workers=int(p.get("workers", 0)),
                                 pool=pool, progress=lambda f: ctx.progress(base + 0.3 * f, f"features {which}"))

        feats, kept, hit = probe.cached_extract(ctx.cache_dir / "features", key, compute)
        self.extra[f"features_{which}"] = "cache" if hit else "extracted"
        return feats, kept

    def linear_probe(self, train: Split, test: Split) -> dict[str, float]:
        ctx, p = self.ctx, self.ctx.params
        model = ctx.load_backbone()
        (xtr, ktr), (xte, kte) = self.features(model, train, "train"), self.features(model, test, "test")
        dev = ctx.device
        ytr, yte = torch.from_numpy(train.labels[ktr]), test.labels[kte]
        xtr, xte = probe.normalize(xtr).to(dev), probe.normalize(xte).to(dev)
        ytr = ytr.to(dev)
        common = dict(epochs=int(p.get("epochs", 100)), batch_size=int(p.get("batch_size", 1024)), seed=ctx.seed,
                      multilabel=train.multilabel)
        best = probe.search(xtr, ytr, train.class_ids()[ktr], len(train.classes), metric=self.metric,
                            trials=int(p.get("trials", 30)), parallel=int(p.get("parallel", 10)),
                            holdout=float(p.get("holdout", 0.2)), lr_range=tuple(p.get("lr_range", (0.1, 100.0))),
                            wd_range=tuple(p.get("wd_range", (1e-12, 1e-4))),
                            progress=lambda f, m: ctx.progress(0.6 + 0.35 * f, m), **common)
        self.extra["probe"] = {k: best[k] for k in ("lr", "wd", "holdout")}
        self.extra["probe_trials"] = best["trials"]
        return probe.fit_and_score(xtr, ytr, xte, yte, len(train.classes), lr=best["lr"], wd=best["wd"],
                                   metric=self.metric, **common)

