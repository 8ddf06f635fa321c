"""The reporting half of ``benchmark analyze``: CSVs, PNG plots and ``report.md`` from an :class:`Analysis`.

:func:`analyze` is the command's entry point: :func:`benchmark.analysis.compute.compute`, then :func:`write`.
The measures follow "Revealing the Dark Secrets of Masked Image Modeling" (Xie et al., Sec. 3), the ViT paper's
mean attention distance (Dosovitskiy et al., Fig. 11) and SimMIM's AvgDist (Xie et al., Fig. 3); the report
defines each one where it shows it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..plotting import pyplot
from .compute import AnalysedModel, Analysis, AvgDistPoint, compute

log = logging.getLogger("benchmark.analysis")

STAT_FILES = {"distance": "attention_distance", "entropy": "attention_entropy", "diversity": "head_diversity"}
STAT_LABELS = {"distance": "mean attention distance (px)", "entropy": "attention entropy (nats)",
               "diversity": "head diversity: mean KL to other heads (nats)"}
STAT_TITLES = {"distance": "Attention distance", "entropy": "Attention entropy", "diversity": "Head diversity"}
AVGDIST_COLUMNS = ["ratio", "mask_patch", "avg_dist_mean", "avg_dist_std", "img_size", "model_patch"]

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


def analyze(ckpts: list[Path], out: Path, images: Path | None = None, mini: bool = False, num_images: int = 128,
            batch_size: int = 16, device: str = "cpu", names: list[str] | None = None, avgdist: bool = True) -> Path:
    """Run every analysis on ``ckpts`` (canonical checkpoints) and write CSVs, PNGs and ``report.md`` to ``out``.

    Returns the report's path.
    """
    analysis = compute(ckpts, images=images, mini=mini, num_images=num_images, batch_size=batch_size,
                       device=device, names=names, avgdist=avgdist)
    return write(analysis, Path(out))


def write(analysis: Analysis, out: Path) -> Path:
    """Every CSV and plot of ``analysis``, then ``report.md``, in ``out`` (created); returns the report's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    models = analysis.models
    written = _write_stats(models, out)
    written += _write_cka(models, analysis.cross_cka, out)
    if analysis.avgdist:
        written += _write_avgdist(analysis.avgdist, models[0], out)
    report = _write_report(analysis, out)
    log.info("wrote %d files and %s", len(written), report)
    return report


# ------------------------------------------------------------------------------------------------ statistics
def _write_stats(models: list[AnalysedModel], out: Path) -> list[Path]:
    written = []
    for key, stem in STAT_FILES.items():
        rows = [{"model": m.name, "layer": li, "head": h, "value": float(v)}
                for m in models for li, vals in enumerate(m.stats[key]) for h, v in enumerate(vals)]
        csv = out / f"{stem}.csv"
        pd.DataFrame(rows, columns=["model", "layer", "head", "value"]).to_csv(csv, index=False)
        written += [csv, _dots_plot(models, key, out / f"{stem}.png")]
    return written


def _dots_plot(models: list[AnalysedModel], key: str, png: Path) -> Path:
    """One dot per head per layer (x = layer, y = value); models side by side sharing y (Dark Secrets Fig. 1/2)."""
    plt = pyplot()
    n = len(models)
    fig, axes = plt.subplots(1, n, figsize=(max(3.2, 0.28 * max(m.n_layers for m in models) + 2.2) * n, 3.6),
                             dpi=120, sharey=True, squeeze=False)
    for ax, m in zip(axes[0], models):
        for li, vals in enumerate(m.stats[key]):
            ok = np.isfinite(vals)
            ax.scatter(np.full(int(ok.sum()), li), vals[ok], s=14, alpha=0.75, color="tab:blue", edgecolors="none")
        ax.set_title(m.name, fontsize=10)
        ax.set_xlabel("layer")
        ax.set_xticks(range(0, m.n_layers, max(1, m.n_layers // 12)))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(STAT_LABELS[key])
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    return png


# ------------------------------------------------------------------------------------------------------- CKA
def _matrix_csv(mat: np.ndarray, path: Path) -> Path:
    """Square/rectangular CKA matrix: first column ``layer`` (row layer index), then one column per layer index."""
    df = pd.DataFrame(mat, index=pd.Index(range(mat.shape[0]), name="layer"),
                      columns=[str(c) for c in range(mat.shape[1])])
    df.to_csv(path, float_format="%.6f")
    return path


def _heatmap(mat: np.ndarray, png: Path, title: str, xlabel: str, ylabel: str) -> Path:
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.0), dpi=120)
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


def _write_cka(models: list[AnalysedModel], cross: np.ndarray | None, out: Path) -> list[Path]:
    written = []
    for m in models:
        written.append(_matrix_csv(m.cka, out / f"cka_{m.name}.csv"))
        written.append(_heatmap(m.cka, out / f"cka_{m.name}.png", f"CKA between layers: {m.name}", "layer", "layer"))
    if cross is not None:
        a, b = models[0], models[1]
        stem = f"cka_{a.name}_vs_{b.name}"
        written.append(_matrix_csv(cross, out / f"{stem}.csv"))
        written.append(_heatmap(cross, out / f"{stem}.png", f"CKA: {a.name} (rows) vs {b.name} (columns)",
                                f"layer of {b.name}", f"layer of {a.name}"))
    return written


# --------------------------------------------------------------------------------------------------- AvgDist
def _write_avgdist(points: list[AvgDistPoint], model: AnalysedModel, out: Path) -> list[Path]:
    csv = out / "avgdist.csv"
    pd.DataFrame([[getattr(p, c) for c in AVGDIST_COLUMNS] for p in points],
                 columns=AVGDIST_COLUMNS).to_csv(csv, index=False)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 3.6), dpi=120)
    for mp in sorted({p.mask_patch for p in points}):
        pts = [p for p in points if p.mask_patch == mp]
        ax.errorbar([p.ratio for p in pts], [p.avg_dist_mean for p in pts], yerr=[p.avg_dist_std for p in pts],
                    marker="o", ms=4, capsize=2, lw=1.2, label=f"mask patch {mp}")
    ax.set_xlabel("mask ratio")
    ax.set_ylabel("AvgDist (px)")
    ax.set_title(f"AvgDist at {model.img_size} px, model patch {model.patch_size}", fontsize=10)
    ax.grid(alpha=0.3)
    if points:
        ax.legend(fontsize=8)
    fig.tight_layout()
    png = out / "avgdist.png"
    fig.savefig(png)
    plt.close(fig)
    return [csv, png]


# ---------------------------------------------------------------------------------------------------- report
def _layer_table(models: list[AnalysedModel], key: str) -> list[str]:
    depth = max(m.n_layers for m in models)
    lines = ["| layer | " + " | ".join(m.name for m in models) + " |",
             "|---:|" + "---:|" * len(models)]
    for li in range(depth):
        cells = []
        for m in models:
            vals = m.stats[key][li] if li < m.n_layers else None
            ok = vals[np.isfinite(vals)] if vals is not None else np.array([])
            cells.append(f"{ok.mean():.4g}" if ok.size else "")
        lines.append(f"| {li} | " + " | ".join(cells) + " |")
    return lines


def _avgdist_section(points: list[AvgDistPoint], m0: AnalysedModel) -> list[str]:
    patches = sorted({p.mask_patch for p in points})
    lines = ["## AvgDist of SimMIM masks", "",
             "SimMIM Fig. 3: the mean Euclidean distance (px) from each masked pixel to the nearest visible one, "
             f"over 32 random SimMIM masks per point, at {m0.name}'s geometry ({m0.img_size} px input, model "
             f"patch {m0.patch_size}); one line per mask patch size (sizes that do not divide the input or are "
             "not a multiple of the model patch are left out). A property of the masking, not of the weights.", "",
             "![AvgDist](avgdist.png)", "",
             "| ratio | " + " | ".join(f"mask patch {mp}" for mp in patches) + " |",
             "|---:|" + "---:|" * len(patches)]
    for ratio in sorted({p.ratio for p in points}):
        cells = [f"{p.avg_dist_mean:.2f} ± {p.avg_dist_std:.2f}" if np.isfinite(p.avg_dist_mean)
                 else "undefined (no visible pixel)"
                 for p in sorted((p for p in points if p.ratio == ratio), key=lambda p: p.mask_patch)]
        lines.append(f"| {ratio:g} | " + " | ".join(cells) + " |")
    return lines


def _write_report(analysis: Analysis, out: Path) -> Path:
    models = analysis.models
    lines = ["# Attention and representation analyses", "",
             f"Images: {analysis.source}. Batch {analysis.batch_size}, device {analysis.device}, "
             f"{analysis.seconds:.1f} s in all. Layers are numbered from 0 in forward order (ViT: `blocks.l`; "
             "Swin: every block of every stage).", "",
             "| model | checkpoint | arch | method | input px | patch | attention layers | s |",
             "|---|---|---|---|---:|---:|---:|---:|"]
    for m in models:
        lines.append(f"| {m.name} | `{m.path}` | {m.arch} | {m.method} | {m.img_size} | "
                     f"{m.patch_size} | {m.n_layers} | {m.seconds:.1f} |")
    for key, stem in STAT_FILES.items():
        lines += ["", f"## {STAT_TITLES[key]}", "", DEFINITIONS[key] + f" One dot per head; `{stem}.csv` has every "
                  "value (columns model, layer, head, value); the table gives the mean over heads.", "",
                  f"![{STAT_TITLES[key]}]({stem}.png)", "", *_layer_table(models, key)]
    lines += ["", "## CKA between layers", "",
              "Linear CKA between the blocks' outputs (tokens mean-pooled over space, prefix tokens excluded), as "
              "minibatch CKA with the unbiased HSIC estimator over the image batches (Nguyen et al. 2021, Eq. 3; Gram "
              "diagonals zeroed): CKA = Σ_b HSIC₁(K_b, L_b) / sqrt(Σ_b HSIC₁(K_b, K_b) · Σ_b HSIC₁(L_b, L_b)). "
              "1 = the same representation up to rotation and isotropic scaling, ≈0 = unrelated. Dark Secrets "
              "Fig. 4: the layers of MIM models are more similar to each other. Matrices in `cka_<model>.csv` "
              "(rows and columns: layers).", ""]
    for m in models:
        off = m.cka[~np.eye(m.n_layers, dtype=bool)]
        off = off[np.isfinite(off)]
        lines += [f"![CKA {m.name}](cka_{m.name}.png)", "",
                  f"{m.name}: mean off-diagonal CKA {off.mean():.3f}." if off.size else f"{m.name}: one layer.", ""]
    if analysis.cross_cka is not None:
        a, b = models[0].name, models[1].name
        lines += [f"Across models, {a} (rows) vs {b} (columns): `cka_{a}_vs_{b}.csv`.", "",
                  f"![CKA {a} vs {b}](cka_{a}_vs_{b}.png)", ""]
    if analysis.avgdist:
        lines += _avgdist_section(analysis.avgdist, models[0])
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
