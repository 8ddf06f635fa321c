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
from typing import Any, ClassVar

import numpy as np

from benchmark.data import fingerprint
from benchmark.registry import TaskSpec
from tasks.base import Param, TaskAdapter
from tasks.semantic import readers
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
    from tasks.semantic import probe

    return split.subset(probe.stratified_subset(split.class_ids(), n))


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


PROTOCOLS = ("linear_probe", "finetune")
PROTOCOL = Param("linear_probe", str, "linear_probe (frozen features) or finetune (end to end)", choices=PROTOCOLS)


class SemanticTask(TaskAdapter):
    # the linear probe's parameters; the fine-tune's are SemanticFinetune.params
    params: ClassVar[dict[str, Param]] = {
        **TaskAdapter.params,
        "protocol": PROTOCOL,
        "trials": Param(30, int, "Optuna trials of the (lr, wd) search"),
        "parallel": Param(10, int, "trials trained together in one batched run"),
        "epochs": Param(100, int, "epochs of each logistic-regression fit"),
        "batch_size": Param(1024, int, "batch of the logistic-regression SGD"),
        "holdout": Param(0.2, float, "class-stratified share of the training split the search scores on"),
        "lr_range": Param([0.1, 100.0], list, "log-uniform search range of the SGD learning rate"),
        "wd_range": Param([1e-12, 1e-4], list, "log-uniform search range of the weight decay"),
        "extract_batch_size": Param(256, int, "batch of the frozen-feature extraction"),
        "workers": Param(0, int, "DataLoader workers decoding images for the extraction"),
        "crop_pct": Param(0.875, float, "evaluation centre-crop fraction"),
        "pool": Param("avg", str, "avg: mean of the final-normed patch tokens; token: the model's pre-logits",
                      choices=("avg", "token")),
    }

    @classmethod
    def declared_params(cls, preset: dict[str, Any]) -> dict[str, Param]:
        if preset.get("protocol") == "finetune":
            from tasks.semantic.finetune import SemanticFinetune

            return {**SemanticFinetune.params, "protocol": PROTOCOL}
        return cls.params

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
        return self.ctx.spec.primary.name

    def trained_task(self):
        if self.ctx.params["protocol"] != "finetune":
            return None
        from tasks.semantic.finetune import SemanticFinetune

        train, test = read_splits(self.ctx.spec, self.ctx.data_root)
        return SemanticFinetune(self.ctx, train, test, self.metric)

    def run(self) -> dict[str, float]:
        ctx = self.ctx
        train, test = read_splits(ctx.spec, ctx.data_root)
        train, test = stratified(train, ctx.subset), stratified(test, ctx.subset)
        self.extra.update({"train_images": len(train), "test_images": len(test), "classes": len(train.classes),
                           **{f"{s.name}:{k}": v for s in (train, test) for k, v in s.notes.items()}})
        if ctx.params["protocol"] == "finetune":
            from tasks.semantic.finetune import SemanticFinetune

            trained = SemanticFinetune(ctx, train, test, self.metric)
            metrics = trained.run()
            self.extra.update(trained.extra)
        else:
            metrics = self.linear_probe(train, test)
        declared = {m.name for m in ctx.spec.metrics}
        return {k: v for k, v in metrics.items() if k in declared}

    # ------------------------------------------------------------------------------------------ linear probe

    def features(self, model, split: Split, which: str) -> tuple[Any, np.ndarray]:
        from tasks.semantic import probe

        ctx, p = self.ctx, self.ctx.params
        crop_pct, pool = float(p["crop_pct"]), p["pool"]
        key = probe.cache_key("semantic-v1", ctx.ckpt_sha256, fingerprint(ctx.spec, ctx.data_root), ctx.spec.name,
                           which, image_list_digest(split), "timm-eval-bicubic", int(model.mim_meta["img_size"]),
                           crop_pct, pool)
        base = {"train": 0.0, "test": 0.3}[which]

        def compute():
            return probe.extract(model, split, probe.eval_transform(model, crop_pct), device=ctx.device,
                                 batch_size=int(p["extract_batch_size"]), workers=int(p["workers"]),
                                 pool=pool, progress=lambda f: ctx.progress(base + 0.3 * f, f"features {which}"))

        feats, kept, hit = probe.cached_extract(ctx.cache_dir / "features", key, compute)
        self.extra[f"features_{which}"] = "cache" if hit else "extracted"
        self.extra[f"unreadable_{which}"] = len(split) - len(kept)  # skipped images, stored with the result
        return feats, kept

    def linear_probe(self, train: Split, test: Split) -> dict[str, float]:
        import torch

        from tasks.semantic import probe

        ctx, p = self.ctx, self.ctx.params
        model = ctx.load_backbone()
        (xtr, ktr), (xte, kte) = self.features(model, train, "train"), self.features(model, test, "test")
        dev = ctx.device
        ytr, yte = torch.from_numpy(train.labels[ktr]), test.labels[kte]
        xtr, xte = probe.normalize(xtr).to(dev), probe.normalize(xte).to(dev)
        ytr = ytr.to(dev)
        common = dict(epochs=int(p["epochs"]), batch_size=int(p["batch_size"]), seed=ctx.seed,
                      multilabel=train.multilabel)
        best = probe.search(xtr, ytr, train.class_ids()[ktr], len(train.classes), metric=self.metric,
                            trials=int(p["trials"]), parallel=int(p["parallel"]),
                            holdout=float(p["holdout"]), lr_range=tuple(p["lr_range"]),
                            wd_range=tuple(p["wd_range"]),
                            progress=lambda f, m: ctx.progress(0.6 + 0.35 * f, m), **common)
        self.extra["probe"] = {k: best[k] for k in ("lr", "wd", "holdout")}
        self.extra["probe_trials"] = best["trials"]
        return probe.fit_and_score(xtr, ytr, xte, yte, len(train.classes), lr=best["lr"], wd=best["wd"],
                                   metric=self.metric, **common)

