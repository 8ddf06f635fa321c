"""SimMIM mask generator: exact masked count, cell structure, shapes, seeds, variants and bad configs."""

from __future__ import annotations

import math

import pytest
import torch

from benchmark.errors import BenchmarkError
from pretrain.mask import MaskGenerator, upsample_mask


@pytest.mark.parametrize("input_size,mask_patch,model_patch,ratio,cells,masked,grid", [
    (192, 32, 4, 0.6, 36, 22, 48),    # official Swin: 6×6 cells, ceil(21.6) = 22, ×8 → 48×48 tokens
    (224, 32, 16, 0.6, 49, 30, 14),   # official ViT: 7×7 cells, ceil(29.4) = 30, ×2 → 14×14 tokens
    (32, 8, 4, 0.6, 16, 10, 8),       # tiny CPU config
    (32, 8, 4, 0.5, 16, 8, 8),
    (64, 16, 16, 0.75, 16, 12, 4),    # mask patch = model patch (no repetition)
])
def test_exact_count_and_shape(input_size, mask_patch, model_patch, ratio, cells, masked, grid):
    gen = MaskGenerator(input_size, mask_patch, model_patch, ratio)
    assert gen.token_count == cells and gen.mask_count == masked == math.ceil(cells * ratio - 1e-9)
    m = gen(16, generator=torch.Generator().manual_seed(0))
    assert m.shape == (16, grid, grid) and m.dtype == torch.float32
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    scale = mask_patch // model_patch
    # every sample masks exactly `masked` cells, i.e. masked × scale² tokens
    assert (m.sum(dim=(1, 2)) == masked * scale * scale).all()
    # each cell is constant: the cell mask repeated to token resolution
    cellview = m.view(16, grid // scale, scale, grid // scale, scale)
    assert torch.equal(cellview.amax(dim=(2, 4)), cellview.amin(dim=(2, 4)))
    assert (cellview.amax(dim=(2, 4)).sum(dim=(1, 2)) == masked).all()


def test_seeded_reproducible_and_random_per_sample():
    gen = MaskGenerator(192, 32, 4, 0.6)
    a = gen(8, generator=torch.Generator().manual_seed(123))
    b = gen(8, generator=torch.Generator().manual_seed(123))
    c = gen(8, generator=torch.Generator().manual_seed(124))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert len({tuple(x.flatten().tolist()) for x in a}) == 8  # samples differ within a batch
    torch.manual_seed(5)
    d = gen(4)
    torch.manual_seed(5)
    assert torch.equal(d, gen(4))  # the global RNG also makes it reproducible


def test_every_cell_gets_masked_uniformly():
    gen = MaskGenerator(32, 8, 4, 0.6)
    cells = gen.cells(4000, generator=torch.Generator().manual_seed(0))
    freq = cells.mean(0)
    assert torch.allclose(freq, torch.full_like(freq, 10 / 16), atol=0.04)


def test_ratio_extremes_and_float_ceil():
    assert MaskGenerator(224, 32, 16, 0.0)(2).sum() == 0
    assert MaskGenerator(224, 32, 16, 1.0)(2).mean() == 1
    # mathematically ceil(25 × 0.6) = 15; naive float ceil gives 16 (0.6 × 25 = 15.000000000000002)
    assert MaskGenerator(160, 32, 16, 0.6).mask_count == 15


def test_upsample_mask_to_pixels():
    m = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    px = upsample_mask(m, 4)
    assert px.shape == (1, 1, 8, 8)
    assert px[0, 0, :4, :4].eq(1).all() and px[0, 0, :4, 4:].eq(0).all() and px[0, 0, 4:, 4:].eq(1).all()


@pytest.mark.parametrize("args,words", [
    ((225, 32, 4, 0.6), "not divisible by the mask patch"),
    ((192, 32, 5, 0.6), "not divisible by the model's patch"),
    ((192, 32, 4, 1.5), "ratio"),
    ((192, 0, 4, 0.6), "positive integer"),
])
def test_bad_configs(args, words):
    with pytest.raises(BenchmarkError, match=words):
        MaskGenerator(*args)


def test_batched_generation_is_fast():
    import time

    gen = MaskGenerator(192, 32, 4, 0.6)
    t = time.perf_counter()
    m = gen(2048)
    assert m.shape == (2048, 48, 48)
    assert time.perf_counter() - t < 2.0  # one argsort for the whole batch (a loader would need ~ms per sample)
