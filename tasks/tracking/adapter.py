"""Single-object tracking: GOT-10k and LaSOT, with a tracker built on the backbone under test (docs/protocols.md).

Trackers (tasks/tracking/model.py), picked by the checkpoint's family:

* plain ViT / BEiT-style ViT -> **one-stream** (OSTrack): template and search crops share the patch embedding,
  the pre-trained position embedding is resized to each grid, the joint tokens run through the backbone's blocks,
  a centre head reads the search tokens; focal + GIoU + L1 losses; OSTrack's candidate elimination (``ce_*``:
  search tokens the template's centre attends to least leave the trunk at blocks 3, 6, 9, keep 0.7) in ``paper``;
* Swin / SwinV2 -> **two-stream** (SwinTrack): the backbone on each crop (shared weights), stride-16 tokens into a
  small fusion transformer, SwinTrack's response-map head; varifocal + GIoU losses.

Training (``TrainedTask``): template / search pairs from the training sequences (tasks/tracking/crops.py:
``PairDataset``: OSTrack's sampler, jitter and augmentation for one-stream; SwinTrack's interval frame pairs, frame
range scaled by the frame rate and ColorJitter 0.4 for two-stream); AdamW with the backbone's lr x ``backbone_lr_mult``
(and layer decay if asked), drop path, gradient clipping, a linear warm-up (``warmup_frac`` of the run), the
``step`` schedule (x0.1 at ``milestones_frac`` of the run). A run is ``epochs`` x ``samples_per_epoch`` pairs
(``iters`` wins); every pair of the run is a fresh draw, from a training source picked by ``dataset_weights``
when set. Design-dependent parameters left ``null`` take the published value of the checkpoint's design
(``DESIGN_RECIPES`` for GOT-10k, ``LASOT_RECIPES`` for LaSOT; the two-stream fusion transformer's size from
the backbone's size, ``SWINTRACK_SIZES``).

Evaluation: one-pass tracking of every sequence (tasks/tracking/parts.py), scored with the official definitions
(tasks/tracking/metrics.py); the tracker's speed is stored as ``fps`` with the result.

* ``got10k``: trains on GOT-10k ``train`` only (its protocol forbids other training data), scores ``val``: AO,
  SR50, SR75 (percent). The val boxes are written as ``got10k_val_results.zip`` (the official toolkit's layout);
  when ``test/list.txt`` exists the test sequences are tracked too and ``got10k_test_submission.zip`` (the
  evaluation server's format) is written into the run dir.
* ``lasot``: trains on LaSOT ``training_set.txt`` (plus GOT-10k ``train`` when ``with_got10k`` is set: the
  ``paper`` preset does, from ``<data-root>/got10k``), scores the sequences of ``testing_set.txt``: success AUC,
  precision at 20 px, normalized precision at 0.20 (percent); boxes in ``lasot_results/<seq>.txt``.

``--subset N`` keeps the first N sequences of every split (list order).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from benchmark.errors import BenchmarkError, DataError
from tasks import openmmlab as mm
from tasks.base import Param

# The published recipes per design; a parameter left null in the preset takes its design's value here.
# one-stream: OSTrack-256 (ViT-B, with candidate elimination); two-stream: SwinTrack (the fusion
# transformer's size follows the backbone's size, SWINTRACK_SIZES). GOT-10k trains on the GOT-10k-only configs,
# LaSOT on the full-data configs (LASOT_RECIPES: only the length differs).
OSTRACK_SOURCE = "OSTrack experiments/ostrack/vitb_256_mae_ce_32x4_got10k_ep100.yaml"
OSTRACK_LASOT_SOURCE = "OSTrack experiments/ostrack/vitb_256_mae_ce_32x4_ep300.yaml"
SWINTRACK_SOURCE = "SwinTrack config/SwinTrack/Tiny/config.yaml + runs.yaml (Base: config/SwinTrack/Base/)"
_ONE_STREAM = dict(
    template_size=128, search_size=256, lr=4e-4, epochs=100.0, samples_per_epoch=60_000, milestones_frac=[0.8],
    clip_grad=0.1, warmup_frac=0.0, drop_path=0.1, flip_prob=0.5, max_gap=200,
    # candidate elimination: CE_LOC, CE_KEEP_RATIO; CE_START_EPOCH 20 and CE_WARM_EPOCH 50 of the 100 epochs
    ce_layers=[3, 6, 9], ce_keep_ratio=0.7, ce_start_frac=0.2, ce_warm_frac=0.5,
    frame_sampling="causal", fps_scaled_gap=False, brightness=0.2, color_jitter=0.0, crop_rule="ostrack")
_TWO_STREAM = dict(
    template_size=112, search_size=224, lr=5e-4, epochs=300.0, samples_per_epoch=131_072, milestones_frac=[0.7],
    clip_grad=0.1, warmup_frac=0.01, drop_path=0.2, flip_prob=0.0, max_gap=100,
    frame_sampling="interval", fps_scaled_gap=True, brightness=0.0, color_jitter=0.4, crop_rule="swintrack")
DESIGN_RECIPES: dict[str, mm.FamilyRecipe] = {
    "one-stream": mm.FamilyRecipe(OSTRACK_SOURCE, _ONE_STREAM),
    "two-stream": mm.FamilyRecipe(SWINTRACK_SOURCE, _TWO_STREAM),
}
# LaSOT (full-data training): OSTrack 300 epochs, x0.1 at 240; SwinTrack's length is the same as for GOT-10k
LASOT_RECIPES: dict[str, mm.FamilyRecipe] = {
    "one-stream": mm.FamilyRecipe(OSTRACK_LASOT_SOURCE, {**_ONE_STREAM, "epochs": 300.0,  # CE: epoch 20, warm 80
                                                          "ce_start_frac": 20 / 300, "ce_warm_frac": 80 / 300}),
    "two-stream": DESIGN_RECIPES["two-stream"],
}
DESIGN_DEFAULTS = {design: recipe.values for design, recipe in DESIGN_RECIPES.items()}  # bench_tracking reads these
# SwinTrack's fusion transformer per backbone size (Tiny: config/SwinTrack/Tiny/config.yaml, Base:
# config/SwinTrack/Base/config.yaml; SwinTrack publishes no Small / Large config: Small takes Tiny's, Large Base's)
SWINTRACK_SIZES = {"tiny": dict(fusion_dim=384, fusion_layers=4), "small": dict(fusion_dim=384, fusion_layers=4),
                   "base": dict(fusion_dim=512, fusion_layers=8), "large": dict(fusion_dim=512, fusion_layers=8)}


def swin_size(arch: str) -> str:
    """'tiny' | 'small' | 'base' | 'large' from a timm Swin / SwinV2 name (e.g. swinv2_base_window8_256); names
    without a size word count as 'base' (the suite's backbones)."""
    name = str(arch).lower()
    return next((size for size in ("tiny", "small", "base", "large") if f"_{size}" in name), "base")


class _TrackingTask(mm.TrainedTask):
    scope = "mmengine"
    train_share = 0.8
    family_recipes = {"plain": DESIGN_RECIPES["one-stream"], "swin": DESIGN_RECIPES["two-stream"]}
    params: ClassVar[dict[str, Param]] = {
        **mm.TrainedTask.params,
        "batch_size": Param(128, int, "TOTAL batch of pairs over all processes (lr is for this batch)"),
        "lr": Param(None, float, "peak lr for the total batch (null: the design's, 4e-4 one-stream / 5e-4 "
                                 "two-stream)", nullable=True),
        "epochs": Param(None, float, "epochs of samples_per_epoch pairs (null: the design's, 100 / 300)",
                        nullable=True),
        "samples_per_epoch": Param(None, int, "pairs per epoch (null: the design's, 60,000 / 131,072)",
                                   nullable=True),
        "schedule": Param("step", str, "lr schedule after the warm-up", choices=mm.SCHEDULES),
        "milestones_frac": Param(None, list, "step schedule: x0.1 at these fractions of the run (null: the "
                                             "design's, 0.8 / 0.7)", nullable=True),
        "weight_decay": Param(1e-4, float, "AdamW weight decay"),
        # OSTrack (`lib/train/base_functions.py` `get_optimizer_scheduler`) and SwinTrack (`runners/training/common/
        # optimization/optimizer/params.py`) hand every parameter to AdamW with the one weight decay
        "no_decay_rule": Param("none", str, "parameters without weight decay: none (both official trackers decay "
                                            "every parameter), 1d or norms", choices=("1d", "norms", "none")),
        "clip_grad": Param(None, float, "max gradient L2 norm (null: the design's, 0.1 for both)", nullable=True),
        "warmup_frac": Param(None, float, "linear lr warm-up (from warmup_ratio x lr) over this fraction of the run, "
                                          "used when warmup_iters and warmup_epochs are null (null: the design's, "
                                          "0 one-stream / 0.01 two-stream)", nullable=True),
        "drop_path": Param(None, float, "stochastic depth rate of the backbone (null: the design's, 0.1 "
                                        "one-stream / 0.2 two-stream)", nullable=True),
        "backbone_lr_mult": Param(0.1, float, "the backbone's lr relative to the heads'"),
        "template_size": Param(None, int, "template crop in px (null: the design's, 128 / 112)", nullable=True),
        "search_size": Param(None, int, "search crop in px (null: the design's, 256 / 224)", nullable=True),
        "template_factor": Param(2.0, float, "template crop context factor (see crop_rule)"),
        "search_factor": Param(4.0, float, "search crop context factor (see crop_rule)"),
        "crop_rule": Param(None, str, "crop geometry in training and tracking: ostrack (side sqrt(w*h) x factor, "
                                      "jittered box, aspect kept) or swintrack (SiamFC's side sqrt((w+p)(h+p)), "
                                      "p = (factor-1)(w+h)/2, scale jittered per axis, centre shift from (w+h)/2) "
                                      "(null: the design's, ostrack / swintrack)", nullable=True,
                           choices=("ostrack", "swintrack")),
        "center_jitter": Param(3.0, float, "search centre jitter (OSTrack's center jitter factor; SwinTrack's "
                                           "translation jitter factor under crop_rule=swintrack)"),
        "scale_jitter": Param(0.25, float, "search scale jitter (log-normal sigma; per axis of the crop under "
                                           "crop_rule=swintrack)"),
        "max_gap": Param(None, int, "largest frame gap between template and search frame (null: the design's, "
                                    "200 one-stream / 100 two-stream)", nullable=True),
        "frame_sampling": Param(None, str, "template/search frames: causal (search after the template, OSTrack) or "
                                           "interval (two visible frames at most max_gap apart, either order, "
                                           "SwinTrack) (null: the design's, causal / interval)", nullable=True,
                                choices=("causal", "interval")),
        "fps_scaled_gap": Param(None, bool, "scale max_gap by the sequence's frame rate / 30 (GOT-10k 10 Hz: x1/3, "
                                            "SwinTrack's adaptive frame range) (null: the design's, false / true)",
                                nullable=True),
        "min_frames": Param(20, int, "training sequences with fewer frames are skipped"),
        "gray_prob": Param(0.05, float, "probability of a grayscale pair"),
        "flip_prob": Param(None, float, "probability of mirroring both crops (null: the design's, 0.5 one-stream "
                                        "/ 0 two-stream)", nullable=True),
        "brightness": Param(None, float, "brightness jitter (x U(1-b, 1+b)) per crop (null: the design's, 0.2 "
                                         "one-stream / 0 two-stream)", nullable=True),
        "color_jitter": Param(None, float, "torchvision ColorJitter(c, c, c) (brightness, contrast, saturation, no "
                                           "hue) per crop, 0 = off (null: the design's, 0 one-stream / 0.4 "
                                           "two-stream)", nullable=True),
        "head_channels": Param(256, int, "width of the one-stream centre head"),
        "ce_layers": Param(None, list, "one-stream candidate elimination (OSTrack's CE): after these blocks (0-based) "
                                       "the search tokens the template's centre token attends to least leave the "
                                       "trunk; [] = off (null: the design's, [3, 6, 9] one-stream)", nullable=True),
        "ce_keep_ratio": Param(None, float, "share of the present search tokens each CE block keeps, also the "
                                            "test-time rate (null: the design's, 0.7)", nullable=True),
        "ce_start_frac": Param(None, float, "CE starts at this fraction of the run (in its epochs; null: the "
                                            "design's, OSTrack's epoch 20: 0.2 GOT-10k, 20/300 LaSOT)",
                               nullable=True),
        "ce_warm_frac": Param(None, float, "the CE keep rate falls from 1 to ce_keep_ratio (cosine, per epoch) over "
                                           "this fraction of the run (null: the design's, OSTrack's 50 of 100 epochs "
                                           "GOT-10k, 80 of 300 LaSOT)", nullable=True),
        "fusion_dim": Param(None, int, "width of the two-stream fusion transformer (null: SwinTrack's for the "
                                       "backbone's size, 384 Tiny / 512 Base and Large)", nullable=True),
        "fusion_layers": Param(None, int, "encoder layers of the two-stream fusion transformer (null: SwinTrack's "
                                          "for the backbone's size, 4 Tiny / 8 Base and Large)", nullable=True),
        "fusion_heads": Param(8, int, "attention heads of the fusion transformer"),
        "fusion_drop_path": Param(0.1, float, "stochastic depth of the fusion layers (rising linearly to this rate)"),
        "fusion_drop_path_warmup": Param(0.5, float, "fusion drop path is off for this fraction of the run, then "
                                                     "at fusion_drop_path (SwinTrack's constant warm-up)"),
        "dataset_weights": Param(None, list, "sampling weights of the training sources in order (LaSOT: [LaSOT "
                                             "train, GOT-10k train]): a pair picks a source by weight, then a "
                                             "sequence of it uniformly (null: every sequence equally likely)",
                                 nullable=True),
        "decode_workers": Param(4, int, "processes decoding frames ahead during evaluation"),
        "export_backbone": Param(False, bool, "not available for trackers (their trunk drops the class token and "
                                              "replaces the position embedding)", choices=(False,)),
    }

    # -- parameters ----------------------------------------------------------------------------------------------
    def training_params(self) -> dict[str, Any]:
        from benchmark.families import family

        p = super().training_params()
        arch = str(self.meta["arch"])
        design = "two-stream" if family(arch) == "swin" else "one-stream"
        if design == "two-stream":
            for key, value in SWINTRACK_SIZES[swin_size(arch)].items():
                if p[key] is None:
                    p[key] = value
        iters_per_epoch = int(p["samples_per_epoch"]) / int(p["batch_size"])
        if not p["iters"]:
            p["iters"] = max(1, int(float(p["epochs"]) * int(p["samples_per_epoch"]) // int(p["batch_size"])))
        # the warm-up in the trackers' epochs (samples_per_epoch pairs; the harness's epoch would be the whole run)
        if p["warmup_iters"] is None:
            if p["warmup_epochs"] is not None:
                p["warmup_iters"] = int(round(float(p["warmup_epochs"]) * iters_per_epoch))
            elif p["warmup_frac"]:
                p["warmup_iters"] = int(round(float(p["warmup_frac"]) * int(p["iters"])))
        weights = p["dataset_weights"]
        if weights is not None and (not weights or any(float(w) < 0 for w in weights)
                                    or not sum(float(w) for w in weights) > 0):
            raise BenchmarkError(f"dataset_weights={weights}: need non-negative weights with a positive sum",
                                 "e.g. --set 'dataset_weights=[1,1]', or null for uniform over sequences")
        if design == "one-stream" and p["ce_layers"]:
            if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in p["ce_layers"]):
                raise BenchmarkError(f"ce_layers={p['ce_layers']}: need block indices counted from 0",
                                     "e.g. --set 'ce_layers=[3,6,9]' (OSTrack), or [] for no candidate elimination")
            if not 0 < float(p["ce_keep_ratio"] if p["ce_keep_ratio"] is not None else 1.0) <= 1:
                raise BenchmarkError(f"ce_keep_ratio={p['ce_keep_ratio']} is not in (0, 1]",
                                     "OSTrack keeps 0.7; 1 turns candidate elimination off")
            if any(float(p[k] or 0) < 0 for k in ("ce_start_frac", "ce_warm_frac")):
                raise BenchmarkError(f"ce_start_frac={p['ce_start_frac']}, ce_warm_frac={p['ce_warm_frac']}: "
                                     "need fractions >= 0", "OSTrack GOT-10k: 0.2 and 0.5")
        p["design"] = design
        return p

    def _ce_model_args(self) -> dict[str, Any]:
        """Candidate elimination for the tracker model: the blocks, the keep ratio and OSTrack's schedule in the
        run's epochs (``iters / epochs`` steps each, so a shortened run keeps the schedule's shape)."""
        p = self.p
        if p["design"] != "one-stream" or not p["ce_layers"]:
            return {}
        iters = int(p["iters"])
        epochs = float(p["epochs"] or iters * int(p["batch_size"]) / int(p["samples_per_epoch"]))
        return dict(ce_layers=[int(i) for i in p["ce_layers"]],
                    ce_keep_ratio=float(p["ce_keep_ratio"] if p["ce_keep_ratio"] is not None else 1.0),
                    ce_start_epoch=round(float(p["ce_start_frac"] or 0) * epochs, 6),
                    ce_warm_epochs=round(float(p["ce_warm_frac"] or 0) * epochs, 6), ce_epoch_iters=iters / epochs)

    # -- what a subclass supplies --------------------------------------------------------------------------------
    def train_sequences(self) -> tuple[list, dict[str, int]]:
        raise NotImplementedError

    def evaluations(self) -> list[mm.Evaluation]:
        raise NotImplementedError

    # -- the harness's hooks -------------------------------------------------------------------------------------
    def register(self) -> None:
        from . import parts  # noqa: F401 - MIMTracker and MIMTrackingMetric in mmengine's registries

    def subset(self, sequences: list) -> list:
        return sequences[: self.ctx.subset] if self.ctx.subset else sequences

    def datasets(self) -> mm.TaskData:
        from .crops import PairDataset

        p = self.p
        sequences, sources = self.train_sequences()
        groups = weights = None
        if p["dataset_weights"] is not None:
            counts = list(sources.values())
            if len(p["dataset_weights"]) < len(counts):
                raise BenchmarkError(f"dataset_weights={p['dataset_weights']} has {len(p['dataset_weights'])} "
                                     f"weights for the {len(counts)} training sources {list(sources)}",
                                     "give one weight per source, in that order")
            groups = [i for i, n in enumerate(counts) for _ in range(n)]
            weights = [float(w) for w in p["dataset_weights"][:len(counts)]]  # a source not read drops out
        pairs = PairDataset(sequences, int(p["iters"]) * int(p["batch_size"]), template_size=p["template_size"],
                            search_size=p["search_size"], template_factor=p["template_factor"],
                            search_factor=p["search_factor"], center_jitter=p["center_jitter"],
                            scale_jitter=p["scale_jitter"], max_gap=p["max_gap"], min_frames=p["min_frames"],
                            gray_prob=p["gray_prob"], flip_prob=p["flip_prob"], brightness=p["brightness"],
                            seed=self.ctx.seed, sequence_groups=groups,
                            group_weights=weights, frame_sampling=p["frame_sampling"],
                            fps_scaled_gap=p["fps_scaled_gap"], color_jitter=p["color_jitter"],
                            crop_rule=p["crop_rule"])
        evaluations = self.evaluations()
        counted = {ev.name: len(ev.dataset) for ev in evaluations}
        return mm.TaskData(
            train=pairs, evaluations=evaluations,
            summary=f"{len(pairs.sequences)} training sequences ({pairs.skipped} too short), "
                    + ", ".join(f"{n} {name} sequences" for name, n in counted.items()),
            extra=dict(train_sources=sources, train_sequences=len(pairs.sequences),
                       train_sequences_skipped=pairs.skipped, design=p["design"],
                       **{f"{name}_sequences": n for name, n in counted.items()}),
            digest=dict(train=[s.name for s in pairs.sequences], eval=counted))

    def model(self) -> dict:
        p = self.p
        return dict(type="MIMTracker", checkpoint=str(self.ctx.ckpt), template_size=p["template_size"],
                    search_size=p["search_size"], template_factor=p["template_factor"],
                    search_factor=p["search_factor"], crop_rule=p["crop_rule"], drop_path=p["drop_path"],
                    head_channels=p["head_channels"],
                    fusion_heads=p["fusion_heads"], fusion_drop_path=p["fusion_drop_path"],
                    fusion_drop_path_warmup_iters=int(round(float(p["fusion_drop_path_warmup"]) * int(p["iters"]))),
                    **self._ce_model_args(),
                    allow_partial=self.ctx.allow_partial, decode_workers=p["decode_workers"],
                    **{k: p[k] for k in ("fusion_dim", "fusion_layers") if p[k] is not None})

    def evaluation(self, name: str, sequences: list, **metric: Any) -> mm.Evaluation:
        from .parts import SequenceDataset

        return mm.Evaluation(name, SequenceDataset(sequences), dict(type="MIMTrackingMetric", **metric))

    def metrics(self, results: dict[str, dict[str, float]]) -> dict[str, float]:
        scored = results[self.scored]
        self.extra.update(fps=round(scored["fps"], 2), eval_frames=int(scored["frames"]))
        return {m.name: float(scored[m.name]) for m in self.ctx.spec.metrics}

    scored: ClassVar[str] = ""  # the evaluation whose scores are the task's metrics


class GOT10k(_TrackingTask):
    scored = "val"

    @classmethod
    def check_data(cls, spec, root: Path) -> None:
        super().check_data(spec, root)
        from .layout import check_got10k

        check_got10k(root)

    @classmethod
    def make_mini(cls, spec, out_dir: Path, seed: int) -> None:
        from .mini import make_got10k

        make_got10k(out_dir, seed=seed)

    def train_sequences(self) -> tuple[list, dict[str, int]]:
        from .sequences import got10k_sequences

        train = self.subset(got10k_sequences(self.ctx.data_root, "train"))
        return train, {"got10k_train": len(train)}

    def evaluations(self) -> list[mm.Evaluation]:
        from .sequences import got10k_sequences

        root, out = self.ctx.data_root, self.ctx.work_dir
        evals = [self.evaluation("val", self.subset(got10k_sequences(root, "val")), benchmark="got10k",
                                 results_zip=str(out / "got10k_val_results.zip"))]
        if (root / "test" / "list.txt").is_file():
            evals.append(self.evaluation("test", self.subset(got10k_sequences(root, "test")), benchmark="got10k",
                                         score=False, results_zip=str(out / "got10k_test_submission.zip")))
            self.extra["submission"] = str(out / "got10k_test_submission.zip")
        return evals


class LaSOT(_TrackingTask):
    scored = "test"
    family_recipes = {"plain": LASOT_RECIPES["one-stream"], "swin": LASOT_RECIPES["two-stream"]}
    params: ClassVar[dict[str, Param]] = {
        **_TrackingTask.params,
        "with_got10k": Param(False, bool, "also train on GOT-10k train, read from <data-root>/got10k"),
    }

    @classmethod
    def check_data(cls, spec, root: Path) -> None:
        super().check_data(spec, root)
        from .layout import check_lasot

        check_lasot(root)

    @classmethod
    def make_mini(cls, spec, out_dir: Path, seed: int) -> None:
        from .mini import make_lasot

        make_lasot(out_dir, seed=seed)

    def train_sequences(self) -> tuple[list, dict[str, int]]:
        from .sequences import got10k_sequences, lasot_sequences

        train = self.subset(lasot_sequences(self.ctx.data_root, "train"))
        sources = {"lasot_train": len(train)}
        if self.p["with_got10k"]:
            got = self.ctx.data_root.parent / "got10k"
            if not (got / "train" / "list.txt").is_file():
                raise DataError(f"with_got10k is set but {got / 'train' / 'list.txt'} does not exist",
                                "put GOT-10k beside LaSOT under the data root, or --set with_got10k=false")
            extra = self.subset(got10k_sequences(got, "train"))
            train, sources["got10k_train"] = train + extra, len(extra)
        return train, sources

    def evaluations(self) -> list[mm.Evaluation]:
        from .sequences import lasot_sequences

        return [self.evaluation("test", self.subset(lasot_sequences(self.ctx.data_root, "test")),
                                benchmark="lasot", results_dir=str(self.ctx.work_dir / "lasot_results"))]
