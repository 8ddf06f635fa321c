"""``benchmark analyze``: attention distance / entropy / head diversity, layer CKA and SimMIM's AvgDist, as CSVs,
PNG plots and a Markdown report (PROTOCOLS.md, "Analyses"; Dark Secrets of MIM Sec. 3; ViT paper Fig. 11).

Streaming: the images are read, transformed and pushed through each model one batch at a time. Every attention map
is reduced to per-head numbers inside its hook (benchmark.analysis.capture), so at most one layer's map of one
batch exists at any moment; CKA keeps only its running HSIC sums (benchmark.analysis.metrics.MinibatchCKA). The one
thing kept across batches is the first model's pooled block features (images × Σ block widths floats, 4.7 MB for
128 images of a ViT-B), needed to pair its minibatches with the second model's for the cross-model CKA.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import BenchmarkError, DataError
from . import capture, metrics

log = logging.getLogger("benchmark.analysis")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
RATIOS = (0.1, 0.3, 0.5, 0.7, 0.9)
MASK_PATCHES = (4, 8, 16, 32)
MIN_BATCH = 4  # the unbiased HSIC of minibatch CKA divides by n - 3
STAT_FILES = {"distance": "attention_distance", "entropy": "attention_entropy", "diversity": "head_diversity"}
STAT_LABELS = {"distance": "mean attention distance (px)", "entropy": "attention entropy (nats)",
               "diversity": "head diversity: mean KL to other heads (nats)"}


# ------------------------------------------------------------------------------------------------------ images
class FolderImages:
    """The first ``n`` images (jpg/jpeg/png, recursive, sorted by relative path) of a folder."""

    def __init__(self, root: Path, n: int):
        root = Path(root)
        if not root.exists():
            raise DataError(f"image folder not found: {root}", "pass --images DIR with .jpg/.png files, or --data mini")
        if not root.is_dir():
            raise DataError(f"--images must be a folder, got the file {root}", "pass the folder that holds the images")
        files = sorted((p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                       key=lambda p: p.relative_to(root).as_posix())
        if not files:
            raise DataError(f"no images (.jpg/.jpeg/.png) in {root}", "add images or pass --data mini")
        if len(files) < n:
            raise DataError(f"{root} holds {len(files)} images, fewer than the {n} asked for",
                            f"lower --num-images to at most {len(files)} or add images")
        self.files = files[:n]
        self.description = f"the first {n} of {len(files)} images (sorted) in `{root}`"

    def __len__(self) -> int:
        return len(self.files)

    def batch(self, idx: list[int], size: int) -> torch.Tensor:
        from PIL import Image, UnidentifiedImageError

        from tasks.classification.linear_probe import eval_transform

        transform = eval_transform(size, crop_pct=1.0)  # short side to size (bicubic), centre crop, ImageNet stats
        out = []
        for i in idx:
            try:
                with Image.open(self.files[i]) as im:
                    out.append(transform(im.convert("RGB")))
            except (OSError, UnidentifiedImageError) as exc:
                raise DataError(f"cannot read image {self.files[i]}: {exc}", "remove or replace the file") from exc
        return torch.stack(out)


def _normalize(x: torch.Tensor) -> torch.Tensor:
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)
    return (x - mean) / std


class MiniImages:
    """The real Fashion-MNIST test images: deterministic and class-balanced (round robin over the classes, each
    class in file order), grey rendered as RGB at the model's size (bilinear), ImageNet mean/std."""

    def __init__(self, n: int):
        from tasks.classification.fashion_mnist import DEBIAN_ROOT, FILES, load_split

        if not all((DEBIAN_ROOT / f).exists() for f in FILES["test"]):
            raise DataError(f"the real Fashion-MNIST files are not in {DEBIAN_ROOT}",
                            "install them: apt-get install dataset-fashion-mnist (`make setup` does this)")
        images, labels = load_split(DEBIAN_ROOT, "test")
        if len(images) < n:
            raise DataError(f"Fashion-MNIST test holds {len(images)} images, fewer than the {n} asked for",
                            f"lower --num-images to at most {len(images)} or use --images DIR")
        per_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
        order = [idx[i] for i in range(max(map(len, per_class))) for idx in per_class if i < len(idx)]
        self.images = images[np.asarray(order[:n])]
        self.description = (f"{n} Fashion-MNIST test images (real data; class-balanced, the first of each class "
                            f"in file order), grey as RGB")

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, idx: list[int], size: int) -> torch.Tensor:
        import torch.nn.functional as F

        x = torch.from_numpy(self.images[idx]).float().div_(255).unsqueeze(1)
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return _normalize(x.expand(-1, 3, -1, -1))


def batches(n: int, batch_size: int) -> list[list[int]]:
    """Consecutive index batches; a last batch smaller than MIN_BATCH joins the one before (minibatch CKA)."""
    out = [list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]
    if len(out) > 1 and len(out[-1]) < MIN_BATCH:
        out[-2].extend(out.pop())
    return out


# ---------------------------------------------------------------------------------------------------- analysis
def _names(ckpts: list[Path], names: list[str] | None) -> list[str]:
    if names:
        if len(names) != len(ckpts):
            raise BenchmarkError(f"{len(names)} --name for {len(ckpts)} --ckpt", "give one --name per --ckpt, or none")
        raw = list(names)
    else:
        raw = [Path(c).stem for c in ckpts]
    safe = [re.sub(r"[^\w.-]+", "_", n).strip("._") or "model" for n in raw]
    if names and len(set(safe)) != len(safe):
        raise BenchmarkError(f"model names {raw} are not distinct (as file names: {safe})", "give distinct --name")
    out: list[str] = []
    for s in safe:  # default names from file stems: make them distinct
        cand, k = s, 2
        while cand in out:
            cand, k = f"{s}_{k}", k + 1
        out.append(cand)
    return out


def _device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise BenchmarkError(f"unknown device {device!r}", "use cpu or cuda") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BenchmarkError("--device cuda but no CUDA GPU is visible", "use --device cpu")
    return dev


def _check_models(ckpts: list[Path]) -> None:
    """Fail before any compute: every checkpoint readable, canonical and with attention layers."""
    from ..checkpoint import build_model, load_canonical

    for p in ckpts:
        ckpt = load_canonical(p)
        model = build_model(ckpt.meta)
        model.mim_meta = ckpt.meta
        capture.attention_layers(model, name=str(p))
        del model


def analyze(ckpts: list[Path], out: Path, images: Path | None = None, mini: bool = False, num_images: int = 128,
            batch_size: int = 16, device: str = "cpu", names: list[str] | None = None, avgdist: bool = True) -> Path:
    """Run every analysis on ``ckpts`` (canonical checkpoints) and write CSVs, PNGs and ``report.md`` to ``out``.

    Returns the report's path.
    """
    from ..checkpoint import load_backbone

    t0 = time.time()
    ckpts = [Path(c) for c in ckpts]
    if not ckpts:
        raise BenchmarkError("no checkpoint to analyse", "pass --ckpt FILE (repeatable)")
    if (images is None) == (not mini):
        raise BenchmarkError("give exactly one image source", "pass --images DIR or --data mini")
    if num_images < MIN_BATCH:
        raise BenchmarkError(f"--num-images {num_images} is too few: minibatch CKA needs at least {MIN_BATCH}",
                             "use --num-images 128 (the ViT paper's count) or at least 4")
    if batch_size < MIN_BATCH:
        raise BenchmarkError(f"--batch-size {batch_size} is too small: minibatch CKA needs at least {MIN_BATCH} "
                             "images per batch", "use --batch-size 16")
    labels = _names(ckpts, names)
    dev = _device(device)
    source = FolderImages(images, num_images) if images is not None else MiniImages(num_images)
    _check_models(ckpts)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = batches(len(source), batch_size)

    models: list[dict] = []
    first_feats: list[list[torch.Tensor]] = []   # model 0's features per batch, for the cross-model CKA
    cross: metrics.MinibatchCKA | None = None
    for mi, (path, name) in enumerate(zip(ckpts, labels)):
        tm = time.time()
        model = load_backbone(path).to(dev).eval()
        meta = model.mim_meta
        layers = capture.attention_layers(model, name=str(path))
        size = int(meta["img_size"])
        sums = {k: [torch.zeros(l.num_heads, dtype=torch.float64) for l in layers] for k in STAT_FILES}
        count = 0
        within = metrics.MinibatchCKA(len(layers))
        keep = mi == 0 and len(ckpts) >= 2
        pair = mi == 1 and len(first_feats) == len(plan)
        if pair:
            cross = metrics.MinibatchCKA(models[0]["n_layers"], len(layers))
        for bi, idx in enumerate(plan):
            x = source.batch(idx, size).to(dev)
            stats, feats = capture.collect(model, x, name=str(path))
            for k in STAT_FILES:
                for l, v in enumerate(stats[k]):
                    sums[k][l] += v
            count += stats["count"]
            within.update(feats)
            if keep:
                first_feats.append(feats)
            if pair:
                cross.update(first_feats[bi], feats)
        models.append({"name": name, "path": str(path), "arch": meta.get("arch"), "img_size": size,
                       "patch_size": int(meta.get("patch_size", 0)), "method": meta.get("method", ""),
                       "layers": [l.name for l in layers], "n_layers": len(layers),
                       "images": count, "stats": {k: [(s / count).numpy() for s in sums[k]] for k in STAT_FILES},
                       "cka": within.compute(), "seconds": time.time() - tm})
        log.info("analysed %s (%s, %d layers, %d images) in %.1f s", name, meta.get("arch"), len(layers), count,
                 time.time() - tm)
        del model
        if mi >= 1:
            first_feats = []

    written = _write_stats(models, out)
    written += _write_cka(models, cross, out)
    avg_rows = _avgdist(models[0]) if avgdist else []
    if avgdist:
        written += _write_avgdist(avg_rows, models[0], out)
    report = _write_report(models, cross is not None, avg_rows, source.description, out, batch_size, str(dev),
                           time.time() - t0)
    log.info("wrote %d files and %s", len(written), report)
    return report


# ----------------------------------------------------------------------------------------------------- outputs
def _plt():
    from pretrain.figures import _plt as plt_

    return plt_()


def _write_stats(models: list[dict], out: Path) -> list[Path]:
    import pandas as pd

    written = []
    for key, stem in STAT_FILES.items():
        rows = [{"model": m["name"], "layer": l, "head": h, "value": float(v)}
                for m in models for l, vals in enumerate(m["stats"][key]) for h, v in enumerate(vals)]
        csv = out / f"{stem}.csv"
        pd.DataFrame(rows, columns=["model", "layer", "head", "value"]).to_csv(csv, index=False)
        written += [csv, _dots_plot(models, key, out / f"{stem}.png")]
    return written


def _dots_plot(models: list[dict], key: str, png: Path) -> Path:
    """One dot per head per layer (x = layer, y = value); models side by side sharing y (Dark Secrets Fig. 1/2)."""
    plt = _plt()
    n = len(models)
    fig, axes = plt.subplots(1, n, figsize=(max(3.2, 0.28 * max(m["n_layers"] for m in models) + 2.2) * n, 3.6),
                             dpi=120, sharey=True, squeeze=False)
    for ax, m in zip(axes[0], models):
        for l, vals in enumerate(m["stats"][key]):
            ok = np.isfinite(vals)
            ax.scatter(np.full(int(ok.sum()), l), vals[ok], s=14, alpha=0.75, color="tab:blue", edgecolors="none")
        ax.set_title(m["name"], fontsize=10)
        ax.set_xlabel("layer")
        ax.set_xticks(range(0, m["n_layers"], max(1, m["n_layers"] // 12)))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(STAT_LABELS[key])
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    return png


def _matrix_csv(mat: np.ndarray, path: Path) -> Path:
    """Square/rectangular CKA matrix: first column ``layer`` (row layer index), then one column per layer index."""
    import pandas as pd

    df = pd.DataFrame(mat, index=pd.Index(range(mat.shape[0]), name="layer"),
                      columns=[str(c) for c in range(mat.shape[1])])
    df.to_csv(path, float_format="%.6f")
    return path


def _heatmap(mat: np.ndarray, png: Path, title: str, xlabel: str, ylabel: str) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 4.0), dpi=120)
    from matplotlib.ticker import MaxNLocator

    im = ax.imshow(mat, origin="lower", cmap="magma", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="auto")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label="linear CKA")
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    return png


def _write_cka(models: list[dict], cross, out: Path) -> list[Path]:
    written = []
    for m in models:
        written.append(_matrix_csv(m["cka"], out / f"cka_{m['name']}.csv"))
        written.append(_heatmap(m["cka"], out / f"cka_{m['name']}.png", f"CKA between layers: {m['name']}",
                                "layer", "layer"))
    if cross is not None:
        a, b = models[0], models[1]
        mat = cross.compute()
        stem = f"cka_{a['name']}_vs_{b['name']}"
        written.append(_matrix_csv(mat, out / f"{stem}.csv"))
        written.append(_heatmap(mat, out / f"{stem}.png", f"CKA: {a['name']} (rows) vs {b['name']} (columns)",
                                f"layer of {b['name']}", f"layer of {a['name']}"))
    return written


def _avgdist(model: dict) -> list[dict]:
    """SimMIM AvgDist on the grid RATIOS × MASK_PATCHES at the first model's geometry. Mask patches that do not
    divide the image, are smaller than the model patch, or are not a multiple of it are skipped; a point where
    every pixel ends up masked (a 1-cell grid) is kept with NaN (AvgDist is undefined there)."""
    img, patch = model["img_size"], model["patch_size"]
    rows = []
    for ratio in RATIOS:
        for mp in MASK_PATCHES:
            if img % mp or mp < patch or mp % patch:
                continue
            try:
                row = metrics.avg_dist_grid(img, patch, [ratio], [mp])[0]
            except ValueError:
                row = {"ratio": float(ratio), "mask_patch": mp, "avg_dist_mean": float("nan"),
                       "avg_dist_std": float("nan")}
            rows.append({**row, "img_size": img, "model_patch": patch})
    return rows


def _write_avgdist(rows: list[dict], model: dict, out: Path) -> list[Path]:
    import pandas as pd

    csv = out / "avgdist.csv"
    pd.DataFrame(rows, columns=["ratio", "mask_patch", "avg_dist_mean", "avg_dist_std", "img_size",
                                "model_patch"]).to_csv(csv, index=False)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.0, 3.6), dpi=120)
    for mp in sorted({r["mask_patch"] for r in rows}):
        pts = [r for r in rows if r["mask_patch"] == mp]
        ax.errorbar([r["ratio"] for r in pts], [r["avg_dist_mean"] for r in pts], yerr=[r["avg_dist_std"] for r in pts],
                    marker="o", ms=4, capsize=2, lw=1.2, label=f"mask patch {mp}")
    ax.set_xlabel("mask ratio")
    ax.set_ylabel("AvgDist (px)")
    ax.set_title(f"AvgDist at {model['img_size']} px, model patch {model['patch_size']}", fontsize=10)
    ax.grid(alpha=0.3)
    if rows:
        ax.legend(fontsize=8)
    fig.tight_layout()
    png = out / "avgdist.png"
    fig.savefig(png)
    plt.close(fig)
    return [csv, png]


DEFINITIONS = {
    "distance": (
        "For layer l, head h and image n, A is the post-softmax attention over the spatial tokens (prefix tokens "
        "such as CLS dropped, rows renormalised); token i sits at pixel p_i = patch·(row, col). "
        "D(l,h) = mean_n mean_i Σ_j A_ij ‖p_i − p_j‖₂, in input pixels (ViT paper Fig. 11; Dark Secrets Fig. 1). "
        "Swin: per window, with window-local positions × the stage's effective patch (4·2^stage px), averaged over "
        "windows; in shifted-window blocks the pairs timm masks (different sub-regions of a rolled window) are "
        "excluded, so the remaining distances are true pixel distances."),
    "entropy": (
        "Mean over images and queries of −Σ_j A_ij log A_ij (nats), same attention as above; log N is uniform "
        "attention over N tokens, 0 a single token (Dark Secrets Sec. 3.1)."),
    "diversity": (
        "Per head, the KL divergence KL(A_h ‖ A_g) between its (eps-smoothed) attention distribution and that of "
        "each other head g of the same layer, per query, averaged over the other heads, queries and images (Dark "
        "Secrets Sec. 3.2; the paper's exact pairing is unverified). Layers with one head have none (not plotted)."),
}


def _layer_table(models: list[dict], key: str) -> list[str]:
    depth = max(m["n_layers"] for m in models)
    lines = ["| layer | " + " | ".join(m["name"] for m in models) + " |",
             "|---:|" + "---:|" * len(models)]
    for l in range(depth):
        cells = []
        for m in models:
            vals = m["stats"][key][l] if l < m["n_layers"] else None
            ok = vals[np.isfinite(vals)] if vals is not None else np.array([])
            cells.append(f"{ok.mean():.4g}" if ok.size else "")
        lines.append(f"| {l} | " + " | ".join(cells) + " |")
    return lines


def _write_report(models: list[dict], has_cross: bool, avg_rows: list[dict], source: str, out: Path,
                  batch_size: int, device: str, seconds: float) -> Path:
    lines = ["# Attention and representation analyses", "",
             f"Images: {source}. Batch {batch_size}, device {device}, {seconds:.1f} s in all. Layers are numbered "
             "from 0 in forward order (ViT: `blocks.l`; Swin: every block of every stage).", "",
             "| model | checkpoint | arch | method | input px | patch | attention layers | s |",
             "|---|---|---|---|---:|---:|---:|---:|"]
    for m in models:
        lines.append(f"| {m['name']} | `{m['path']}` | {m['arch']} | {m['method']} | {m['img_size']} | "
                     f"{m['patch_size']} | {m['n_layers']} | {m['seconds']:.1f} |")
    titles = {"distance": "Attention distance", "entropy": "Attention entropy", "diversity": "Head diversity"}
    for key, stem in STAT_FILES.items():
        lines += ["", f"## {titles[key]}", "", DEFINITIONS[key] + f" One dot per head; `{stem}.csv` has every value "
                  "(columns model, layer, head, value); the table gives the mean over heads.", "",
                  f"![{titles[key]}]({stem}.png)", "", *_layer_table(models, key)]
    lines += ["", "## CKA between layers", "",
              "Linear CKA between the blocks' outputs (tokens mean-pooled over space, prefix tokens excluded), as "
              "minibatch CKA with the unbiased HSIC estimator over the image batches (Nguyen et al. 2021, Eq. 3; Gram "
              "diagonals zeroed): CKA = Σ_b HSIC₁(K_b, L_b) / sqrt(Σ_b HSIC₁(K_b, K_b) · Σ_b HSIC₁(L_b, L_b)). "
              "1 = the same representation up to rotation and isotropic scaling, ≈0 = unrelated. Dark Secrets "
              "Fig. 4: the layers of MIM models are more similar to each other. Matrices in `cka_<model>.csv` "
              "(rows and columns: layers).", ""]
    for m in models:
        off = m["cka"][~np.eye(m["n_layers"], dtype=bool)]
        off = off[np.isfinite(off)]
        lines += [f"![CKA {m['name']}](cka_{m['name']}.png)", "",
                  f"{m['name']}: mean off-diagonal CKA {off.mean():.3f}." if off.size else f"{m['name']}: one layer.",
                  ""]
    if has_cross:
        a, b = models[0]["name"], models[1]["name"]
        lines += [f"Across models, {a} (rows) vs {b} (columns): `cka_{a}_vs_{b}.csv`.", "",
                  f"![CKA {a} vs {b}](cka_{a}_vs_{b}.png)", ""]
    if avg_rows:
        m0 = models[0]
        lines += ["## AvgDist of SimMIM masks", "",
                  "SimMIM Fig. 3: the mean Euclidean distance (px) from each masked pixel to the nearest visible one, "
                  f"over 32 random SimMIM masks per point, at {m0['name']}'s geometry ({m0['img_size']} px input, model "
                  f"patch {m0['patch_size']}); one line per mask patch size (sizes that do not divide the input or are "
                  "not a multiple of the model patch are left out). A property of the masking, not of the weights.", "",
                  "![AvgDist](avgdist.png)", "",
                  "| ratio | " + " | ".join(f"mask patch {mp}" for mp in sorted({r['mask_patch'] for r in avg_rows}))
                  + " |", "|---:|" + "---:|" * len({r["mask_patch"] for r in avg_rows})]
        for ratio in sorted({r["ratio"] for r in avg_rows}):
            cells = [f"{r['avg_dist_mean']:.2f} ± {r['avg_dist_std']:.2f}" if np.isfinite(r["avg_dist_mean"])
                     else "undefined (no visible pixel)" for r in
                     sorted((r for r in avg_rows if r["ratio"] == ratio), key=lambda r: r["mask_patch"])]
            lines.append(f"| {ratio:g} | " + " | ".join(cells) + " |")
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
