"""Figures of a pre-training run (matplotlib, Agg): the loss curve and a reconstruction grid."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from benchmark.plotting import pyplot


def read_loss_log(path: Path) -> tuple[list[int], list[float]]:
    iters, losses = [], []
    if not Path(path).exists():
        return iters, losses
    for line in Path(path).read_text().splitlines():
        try:
            row = json.loads(line)
            iters.append(int(row["iter"]))
            losses.append(float(row["loss"]))
        except (ValueError, KeyError):
            continue
    return iters, losses


def loss_curve(log_path: Path, out: Path, title: str = "") -> Path | None:
    """PNG of the masked-L1 loss per iteration (and a moving average) from ``loss_log.jsonl``."""
    iters, losses = read_loss_log(log_path)
    if not iters:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(iters, losses, lw=0.6, alpha=0.5, label="loss")
    w = max(1, len(losses) // 50)
    if w > 1:
        t = torch.tensor(losses)
        ma = t.unfold(0, w, 1).mean(1).tolist()
        ax.plot(iters[w - 1:], ma, lw=1.5, label=f"mean of {w}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("masked L1 (normalized pixels)")
    ax.set_title(f"SimMIM pre-training {title}".strip())
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return Path(out)


@torch.no_grad()
def reconstruction_figure(simmim, images: torch.Tensor, out: Path, seed: int = 0) -> Path:
    """Rows: input / masked input (masked patches grey) / reconstruction (the model's pixels on the masked
    patches, the input on the visible ones: the loss trains masked patches only), all un-normalized to [0, 1]."""
    from .data import denormalize
    from .mask import upsample_mask

    was_training = simmim.training
    simmim.eval()
    device = next(simmim.parameters()).device
    x = images.to(device)
    g = torch.Generator(device=device).manual_seed(seed)
    mask = simmim.mask_generator(x.shape[0], generator=g)
    rec, _ = simmim.reconstruct(x, mask)
    simmim.train(was_training)
    m = upsample_mask(mask, simmim.patch_size).to(x.dtype)
    shown_in = denormalize(x).cpu()
    masked = (denormalize(x) * (1 - m) + 0.5 * m).cpu()  # masked pixels grey
    recon = denormalize(rec.to(x.dtype) * m + x * (1 - m)).cpu()
    n = x.shape[0]
    plt = pyplot()
    fig, axes = plt.subplots(3, n, figsize=(1.6 * n, 5.0), dpi=120, squeeze=False)
    for j in range(n):
        for i, (row, name) in enumerate(((shown_in, "input"), (masked, "masked"), (recon, "reconstruction"))):
            ax = axes[i][j]
            ax.imshow(row[j].permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name)
    fig.suptitle(f"SimMIM {simmim.arch}: mask {simmim.mask_patch}px, ratio {simmim.mask_ratio}")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return Path(out)
