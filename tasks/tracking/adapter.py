"""Single-object tracking: GOT-10k and LaSOT, with a tracker built on the backbone under test (docs/protocols.md).

Trackers (tasks/tracking/model.py), picked by the checkpoint's family:

* plain ViT / BEiT-style ViT -> **one-stream** (OSTrack): template and search crops share the patch embedding,
  the pre-trained position embedding is resized to each grid, the joint tokens run through the backbone's blocks,
  a centre head reads the search tokens; focal + GIoU + L1 losses;
* Swin / SwinV2 -> **two-stream** (SwinTrack): the backbone on each crop (shared weights), stride-16 tokens into a
  small fusion transformer, SwinTrack's response-map head; varifocal + GIoU losses.

Training (``TrainedTask``): template / search pairs from the training sequences (tasks/tracking/crops.py:
``PairDataset``, OSTrack's sampler, jitter and augmentation); AdamW with the backbone's lr x ``backbone_lr_mult``
(and layer decay if asked), drop path, gradient clipping, the ``step`` schedule (x0.1 at ``milestones_frac`` of
the run). A run is ``epochs`` x ``samples_per_epoch`` pairs (``iters`` wins); every pair of the run is a fresh
draw. Design-dependent parameters left ``null`` take the published value of the checkpoint's design
(``DESIGN_DEFAULTS``).

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

from benchmark.errors import DataError
from tasks import openmmlab as mm
from tasks.base import Param

# The published recipes per design; a parameter left null in the preset takes its design's value here.
# one-stream: OSTrack-256's GOT-10k-only config; two-stream: SwinTrack-T's (see docs/protocols.md for what is
# unverified).
OSTRACK_SOURCE = "OSTrack experiments/ostrack/vitb_256_mae_ce_32x4_got10k_ep100.yaml"
SWINTRACK_SOURCE = "SwinTrack config/SwinTrack/Tiny/config.yaml"
DESIGN_RECIPES: dict[str, mm.FamilyRecipe] = {
    "one-stream": mm.FamilyRecipe(OSTRACK_SOURCE, dict(
        template_size=128, search_size=256, lr=4e-4, epochs=100.0, samples_per_epoch=60_000, milestones_frac=[0.8],
        clip_grad=0.1)),
    "two-stream": mm.FamilyRecipe(SWINTRACK_SOURCE, dict(
        template_size=112, search_size=224, lr=5e-4, epochs=300.0, samples_per_epoch=131_072, milestones_frac=[0.7],
        clip_grad=None)),
}
DESIGN_DEFAULTS = {design: recipe.values for design, recipe in DESIGN_RECIPES.items()}  # bench_tracking reads these


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
        "clip_grad": Param(None, float, "max gradient L2 norm (null: the design's, 0.1 one-stream / none "
                                        "two-stream)", nullable=True),
        "drop_path": Param(0.1, float, "stochastic depth rate of the backbone"),
        "backbone_lr_mult": Param(0.1, float, "the backbone's lr relative to the heads'"),
        "template_size": Param(None, int, "template crop in px (null: the design's, 128 / 112)", nullable=True),
        "search_size": Param(None, int, "search crop in px (null: the design's, 256 / 224)", nullable=True),
        "template_factor": Param(2.0, float, "template crop side / sqrt(box area)"),
        "search_factor": Param(4.0, float, "search crop side / sqrt(box area)"),
        "center_jitter": Param(3.0, float, "search centre jitter (OSTrack's factor)"),
        "scale_jitter": Param(0.25, float, "search scale jitter (log-normal sigma)"),
        "max_gap": Param(200, int, "largest frame gap between template and search frame"),
        "min_frames": Param(20, int, "training sequences with fewer frames are skipped"),
        "gray_prob": Param(0.05, float, "probability of a grayscale pair"),
        "flip_prob": Param(0.5, float, "probability of mirroring both crops"),
        "brightness": Param(0.2, float, "brightness jitter (x U(1-b, 1+b))"),
        "head_channels": Param(256, int, "width of the one-stream centre head"),
        "fusion_dim": Param(384, int, "width of the two-stream fusion transformer"),
        "fusion_layers": Param(4, int, "encoder layers of the two-stream fusion transformer"),
        "fusion_heads": Param(8, int, "attention heads of the fusion transformer"),
        "decode_workers": Param(4, int, "processes decoding frames ahead during evaluation"),
        "export_backbone": Param(False, bool, "not available for trackers (their trunk drops the class token and "
                                              "replaces the position embedding)", choices=(False,)),
    }

    # -- parameters ----------------------------------------------------------------------------------------------
    def training_params(self) -> dict[str, Any]:
        from benchmark.families import family

        p = super().training_params()
        design = "two-stream" if family(str(self.meta["arch"])) == "swin" else "one-stream"
        if not p["iters"]:
            p["iters"] = max(1, int(float(p["epochs"]) * int(p["samples_per_epoch"]) // int(p["batch_size"])))
        p["design"] = design
        return p

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
        pairs = PairDataset(sequences, int(p["iters"]) * int(p["batch_size"]), template_size=p["template_size"],
                            search_size=p["search_size"], template_factor=p["template_factor"],
                            search_factor=p["search_factor"], center_jitter=p["center_jitter"],
                            scale_jitter=p["scale_jitter"], max_gap=p["max_gap"], min_frames=p["min_frames"],
                            gray_prob=p["gray_prob"], flip_prob=p["flip_prob"], brightness=p["brightness"],
                            seed=self.ctx.seed)
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
                    search_factor=p["search_factor"], drop_path=p["drop_path"], head_channels=p["head_channels"],
                    fusion_dim=p["fusion_dim"], fusion_layers=p["fusion_layers"], fusion_heads=p["fusion_heads"],
                    allow_partial=self.ctx.allow_partial, decode_workers=p["decode_workers"])

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
