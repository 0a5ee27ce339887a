"""The outside-patch support test: normal images are on the support, foreign ones are not, whatever
their mean feature."""

import numpy as np
import torch

from curate.support import OutsideSupport, outside_cells


def fitted(n_images=40, cells=16, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    bank = torch.from_numpy(rng.normal(0, 1, (n_images * 10, dim))).float()
    bank_images = torch.arange(n_images).repeat_interleave(10)
    reference = torch.from_numpy(rng.normal(0, 1, (n_images * cells, dim))).float()
    reference_images = torch.arange(n_images).repeat_interleave(cells)
    return OutsideSupport().fit(bank, bank_images, reference, reference_images), rng


def test_normal_images_keep_their_support_and_foreign_ones_with_a_normal_mean_lose_it():
    support, rng = fitted()
    n, cells, dim = 30, 16, 8
    normal = torch.from_numpy(rng.normal(0, 1, (n * cells, dim))).float()
    # foreign cells: each far from every normal patch, yet their mean is the normals' mean (0)
    signs = torch.from_numpy(np.where(np.arange(n * cells) % 2 == 0, 1.0, -1.0)).float()[:, None]
    foreign = signs * torch.full((n * cells, dim), 4.0)
    owner = torch.arange(n).repeat_interleave(cells)
    assert foreign.reshape(n, cells, dim).mean(1).abs().max() < 1e-6
    on = support.support(support.statistic(normal, owner, n))
    off = support.support(support.statistic(foreign, owner, n))
    assert on.mean() > 0.9 and on.min() > 0.5
    assert torch.all(off == 0)


def test_support_is_one_over_the_normal_range_then_falls_to_zero():
    support, _ = fitted()
    top, middle = float(support.reference_[-1]), float(support.reference_.median())
    margin = top - middle
    statistic = torch.tensor([0.0, middle, top, top + margin / 2, top + margin * 1.01, float("nan")])
    np.testing.assert_allclose(support.support(statistic).numpy(), [1, 1, 1, 0.5, 0, 1], atol=1e-5)
    no_cells = support.statistic(torch.zeros(0, 8), torch.zeros(0, dtype=torch.long), 2)
    assert torch.isnan(no_cells).all()


def test_outside_cells_keep_away_from_the_mask_and_are_spread():
    coverage = torch.zeros(8, 8)
    coverage[2:4, 2:4] = 0.5
    cells = outside_cells(coverage, border=1, max_cells=100)
    rows, cols = cells // 8, cells % 8
    assert len(cells) == 64 - 16 and not bool(((rows >= 1) & (rows <= 4) & (cols >= 1) & (cols <= 4)).any())
    few = outside_cells(coverage, border=1, max_cells=5)
    assert len(few) == 5 and few[0] == cells[0] and few[-1] == cells[-1]
    everything = torch.ones(8, 8)
    assert len(outside_cells(everything, border=1, max_cells=100)) == 64  # nothing outside: judge it all
    assert len(outside_cells(torch.zeros(8, 8), border=2, max_cells=100)) == 64
