"""The registered parts of the tracking tasks: the mmengine model around a tracker, the evaluation dataset of whole
sequences, one-pass tracking, and the metric. Imported only when a tracking task runs (``register()``).

One-pass evaluation (OSTrack's / SwinTrack's test loop): the template is cropped once from frame 1 around the given
box (``template_factor`` x its size); every later frame is searched in a crop of ``search_factor`` x the last box,
centred on it (the design's ``crop_rule``: OSTrack's sqrt(w*h) x factor, or SwinTrack's SiamFC context with the box
raised to at least 10 x 10 px for the search crop); the tracker's response map is combined with its design's Hann
window (``tracker.decode``) and the box is mapped back to the image: ``ostrack`` clips it to the image (``clip_box``,
a 10-pixel margin) and reports that; ``swintrack`` reports it as predicted and searches the next frame around it held
inside the image (``swintrack_update``). Frame 1 is reported as the given box (the GOT-10k and LaSOT toolkits both
expect it). No template update, no re-detection. Frames are decoded ahead by a DataLoader (``decode_workers``
processes); the per-frame time covers cropping, the forward pass and the box, not the decoding, and gives the
tracker's speed (``fps``) stored with the result. Under DDP, mmengine's test loop gives each rank its share of the
sequences and gathers the results on rank 0, where the metric scores them and writes the result files.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.registry import METRICS, MODELS
from torch.utils.data import DataLoader, Dataset

from benchmark.errors import TaskFailed

from .crops import TEST_MIN_SIZE, crop_around, normalize
from .metrics import SequenceResult, got10k_scores, lasot_scores
from .model import build_tracker, ce_keep_rate
from .sequences import Sequence, load_frame
from .submission import write_got10k_submission

log = logging.getLogger(__name__)

CLIP_MARGIN = 10  # px: OSTrack keeps at least this much of a box inside the image


def clip_box(box: np.ndarray, width: int, height: int, margin: int = CLIP_MARGIN) -> np.ndarray:
    """OSTrack's ``clip_box``: the box (x, y, w, h) kept inside the image, at least ``margin`` px of it visible."""
    margin = min(margin, width // 2, height // 2)
    x1, y1, w, h = (float(v) for v in box)
    x2, y2 = x1 + w, y1 + h
    x1, x2 = min(max(0.0, x1), width - margin), min(max(float(margin), x2), float(width))
    y1, y2 = min(max(0.0, y1), height - margin), min(max(float(margin), y2), float(height))
    return np.array([x1, y1, max(float(margin), x2 - x1), max(float(margin), y2 - y1)])


def swintrack_update(state: np.ndarray, pred: np.ndarray, width: int, height: int) -> np.ndarray:
    """SwinTrack's next search centre (``SiamFCCurationParameterSimpleProvider.update``): the predicted box (x, y,
    w, h) with its corners held in [0.5, size - 0.5] (``bbox_restrict_in_image_boundary_``); a box left empty by
    that keeps the previous ``state``. (SwinTrack reports the predicted box itself, unclipped.)"""
    x1, y1, w, h = (float(v) for v in pred)
    x1, y1 = max(x1, 0.5), max(y1, 0.5)
    x2, y2 = min(float(pred[0]) + w, width - 0.5), min(float(pred[1]) + h, height - 0.5)
    if not (x1 < x2 and y1 < y2):
        return np.asarray(state, dtype=np.float64)
    return np.array([x1, y1, x2 - x1, y2 - y1])


# ------------------------------------------------------------------------------------------------- data
class SequenceDataset(Dataset):
    """Whole sequences for one-pass evaluation: item ``i`` is ``{'sequence': {...}}`` (file names, ground truth,
    labels), collated as a list by mmengine's pseudo_collate; frames are decoded by the model's frame loader."""

    def __init__(self, sequences: list[Sequence]):
        self.sequences = list(sequences)

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, i: int) -> dict:
        s = self.sequences[i]
        return {"sequence": _Item(dict(name=s.name, frames=[str(f) for f in s.frames], boxes=np.asarray(s.boxes),
                                       visible=np.asarray(s.visible), resolution=s.resolution,
                                       cover=None if s.cover is None else np.asarray(s.cover)))}


class _Item:
    """One sequence as an opaque object: mmengine's pseudo_collate would transpose a dict of lists."""

    def __init__(self, fields: dict):
        self.fields = fields


class _Frames(Dataset):
    def __init__(self, frames: list[str]):
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> np.ndarray:
        return load_frame(Path(self.frames[i]))


# ------------------------------------------------------------------------------------------------- model
def _stacked(x):
    """A batch as one tensor: mmengine's pseudo_collate hands over a list of per-sample tensors."""
    return torch.stack(list(x)) if isinstance(x, (list, tuple)) else x


@MODELS.register_module(name="MIMTracker")
class TrackerModel(BaseModel):
    """A tracker of :func:`tasks.tracking.model.build_tracker` as an mmengine model.

    ``mode='loss'``: a batch of the pair dataset (template, search, box) -> the tracker's losses;
    ``mode='predict'``: ``sequence`` (a list of sequence dicts) -> one tracking result per sequence.

    Candidate elimination (one-stream, ``ce_layers``): training step ``s`` (0-based) falls in epoch
    ``floor(s / ce_epoch_iters) + 1`` of the run (OSTrack counts epochs from 1), whose keep rate is OSTrack's
    schedule (:func:`tasks.tracking.model.ce_keep_rate` from ``ce_start_epoch`` over ``ce_warm_epochs`` down to
    ``ce_keep_ratio``); tracking uses ``ce_keep_ratio``.
    """

    def __init__(self, checkpoint: str, template_size: int, search_size: int, template_factor: float = 2.0,
                 search_factor: float = 4.0, crop_rule: str = "ostrack", drop_path: float = 0.0,
                 head_channels: int = 256,
                 fusion_dim: int = 384, fusion_layers: int = 4, fusion_heads: int = 8, fusion_drop_path: float = 0.1,
                 fusion_drop_path_warmup_iters: int = 0, ce_layers: list | tuple = (), ce_keep_ratio: float = 1.0,
                 ce_start_epoch: float = 0.0, ce_warm_epochs: float = 0.0, ce_epoch_iters: float = 1.0,
                 allow_partial: bool = False, decode_workers: int = 0, data_preprocessor: dict | None = None):
        super().__init__(data_preprocessor=data_preprocessor)
        # named `backbone` like every task model here; its `trunk` is the checkpoint's (loaded and checked)
        self.backbone = build_tracker(checkpoint, template_size=int(template_size), search_size=int(search_size),
                                      drop_path=float(drop_path), head_channels=int(head_channels),
                                      fusion_dim=int(fusion_dim), fusion_layers=int(fusion_layers),
                                      fusion_heads=int(fusion_heads), fusion_drop_path=float(fusion_drop_path),
                                      ce_layers=[int(i) for i in ce_layers], ce_keep_ratio=float(ce_keep_ratio),
                                      allow_partial=bool(allow_partial))
        self.ce_start_epoch, self.ce_warm_epochs = float(ce_start_epoch), float(ce_warm_epochs)
        self.ce_epoch_iters = max(float(ce_epoch_iters), 1e-9)
        self.ce = bool(getattr(self.backbone, "ce_layers", ())) and getattr(self.backbone, "ce_keep_ratio", 1.0) < 1
        self.template_factor, self.search_factor = float(template_factor), float(search_factor)
        self.crop_rule = str(crop_rule)  # the training pairs' crop geometry (crops.crop_around's rule)
        # SwinTrack's drop-path warm-up: the fusion layers' drop path is off for the first
        # ``fusion_drop_path_warmup_iters`` training steps, then at ``fusion_drop_path``; the step count is a buffer,
        # so a resumed run continues where it stopped
        self.fusion_drop_path = float(fusion_drop_path)
        self.fusion_drop_path_warmup_iters = int(fusion_drop_path_warmup_iters)
        self.register_buffer("train_steps", torch.zeros((), dtype=torch.long))
        self._fusion_rate: float | None = None
        self.decode_workers = int(decode_workers)

    def init_weights(self) -> None:
        """The weights come from the checkpoint (trunk) and the heads' own initialisation: nothing to redo."""

    def forward(self, template=None, search=None, box=None, sequence=None, mode: str = "tensor"):
        if mode == "predict":
            return [self.track(item.fields) for item in sequence]
        kwargs = {}
        if mode == "loss" and self.training and (self.ce or hasattr(self.backbone, "set_fusion_drop_path")):
            steps = int(self.train_steps)
            if hasattr(self.backbone, "set_fusion_drop_path"):
                rate = 0.0 if steps < self.fusion_drop_path_warmup_iters else self.fusion_drop_path
                if rate != self._fusion_rate:
                    self.backbone.set_fusion_drop_path(rate)
                    self._fusion_rate = rate
            if self.ce:
                kwargs["ce_keep_rate"] = self.ce_keep_rate(steps)
            self.train_steps += 1
        out = self.backbone(_stacked(template), _stacked(search), **kwargs)
        if mode == "loss":
            return self.backbone.loss(out, _stacked(box).float())
        return out

    def ce_keep_rate(self, step: int) -> float:
        """Candidate elimination's keep rate at training step ``step`` (0-based): OSTrack's per-epoch schedule."""
        epoch = math.floor(step / self.ce_epoch_iters + 1e-9) + 1
        return ce_keep_rate(epoch, self.ce_start_epoch, self.ce_warm_epochs, self.backbone.ce_keep_ratio)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def track(self, seq: dict[str, Any]) -> dict[str, Any]:
        """One pass over a sequence: boxes (N, 4) x, y, w, h in pixels (frame 1: the given box) and per-frame
        seconds (decoding excluded)."""
        tracker, dev = self.backbone, self.device
        cuda = dev.type == "cuda"
        frames = seq["frames"]
        boxes = np.zeros((len(frames), 4))
        times = np.zeros(len(frames))
        window = tracker.hann_window().to(dev)
        loader = DataLoader(_Frames(frames), batch_size=None, shuffle=False, num_workers=self.decode_workers)
        template = None
        state = np.asarray(seq["boxes"][0], dtype=np.float64)
        for i, image in enumerate(loader):
            image = np.asarray(image)
            start = time.perf_counter()
            height, width = image.shape[:2]
            if i == 0:
                z = crop_around(image, state, self.template_factor, tracker.template_size, rule=self.crop_rule)
                template = normalize(z.image)[None].to(dev)
                boxes[0] = state
            else:
                x = crop_around(image, state, self.search_factor, tracker.search_size, rule=self.crop_rule,
                                min_size=TEST_MIN_SIZE.get(self.crop_rule, 0.0))
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                    out = tracker(template, normalize(x.image)[None].to(dev))
                box, _ = tracker.decode(out, window)
                cx, cy, w, h = (box[0].float().cpu().numpy() * tracker.search_size).tolist()
                pred = x.to_image(np.array([cx - w / 2, cy - h / 2, w, h]))
                if self.crop_rule == "swintrack":  # reports the box as predicted, searches around it held in view
                    boxes[i], state = pred, swintrack_update(state, pred, width, height)
                else:  # OSTrack: the clipped box is both the answer and the next search centre
                    boxes[i] = state = clip_box(pred, width, height)
            if cuda:
                torch.cuda.synchronize(dev)
            times[i] = time.perf_counter() - start
        return dict(name=seq["name"], pred=boxes, times=times, gt=seq["boxes"], visible=seq["visible"],
                    cover=seq["cover"], resolution=seq["resolution"])


# ------------------------------------------------------------------------------------------------- metric
@METRICS.register_module(name="MIMTrackingMetric")
class TrackingMetric(BaseMetric):
    """Scores the tracked sequences (``benchmark`` = 'got10k' | 'lasot', the official definitions in
    tasks/tracking/metrics.py) and writes the raw results for the official toolkits: ``results_zip`` (GOT-10k's
    server / toolkit format: ``<seq>/<seq>_001.txt`` + ``<seq>_time.txt``) and / or ``results_dir`` (one
    ``<seq>.txt`` of x,y,w,h lines per sequence, the LaSOT toolkit's format). ``score=False`` (GOT-10k test: no
    ground truth) only writes the files."""

    def __init__(self, benchmark: str, score: bool = True, results_zip: str | None = None,
                 results_dir: str | None = None, **kwargs):
        super().__init__(**kwargs)
        if benchmark not in ("got10k", "lasot"):
            raise ValueError(f"unknown tracking benchmark {benchmark!r}")
        self.benchmark, self.score = benchmark, bool(score)
        self.results_zip, self.results_dir = results_zip, results_dir

    def process(self, data_batch: Any, data_samples: list[dict]) -> None:
        self.results.extend(data_samples)

    def compute_metrics(self, results: list[dict]) -> dict[str, float]:
        results = sorted(results, key=lambda r: r["name"])
        names = [r["name"] for r in results]
        if len(set(names)) != len(names):  # DDP pads the last rank's share with repeats
            results = list({r["name"]: r for r in results}.values())
        frames = sum(len(r["times"]) for r in results)
        seconds = float(sum(np.sum(r["times"][1:]) for r in results))
        tracked = sum(len(r["times"]) - 1 for r in results)
        out: dict[str, float] = {"sequences": float(len(results)), "frames": float(frames),
                                 "fps": tracked / seconds if seconds > 0 else float("nan")}
        if self.results_zip:
            path = write_got10k_submission(Path(self.results_zip), {r["name"]: [r["pred"]] for r in results},
                                           {r["name"]: [r["times"]] for r in results})
            log.info("tracking results for the official toolkit / server: %s", path)
        if self.results_dir:
            folder = Path(self.results_dir)
            folder.mkdir(parents=True, exist_ok=True)
            for r in results:
                np.savetxt(folder / f"{r['name']}.txt", r["pred"], fmt="%.4f", delimiter=",")
            log.info("per-sequence boxes: %s", folder)
        if not self.score:
            return out
        scored = [SequenceResult(name=r["name"], pred=r["pred"], gt=np.asarray(r["gt"]), visible=r["visible"],
                                 cover=r["cover"], resolution=r["resolution"]) for r in results]
        scores = got10k_scores(scored) if self.benchmark == "got10k" else lasot_scores(scored)
        picked = {k: float(v) for k, v in scores.items()
                  if isinstance(v, (int, float, np.floating)) and k not in out}
        if not picked:
            raise TaskFailed(f"the {self.benchmark} scorer returned no number", "this is a bug; please report it")
        return {**out, **picked}
