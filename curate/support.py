"""Is a sample's image on the normal images' support? Its patches outside the mask must themselves be
normal patches.

A synthetic anomaly changes the image inside its mask only, so everything outside it should look like
the normal images, patch by patch. The statistic of an image is the median distance of its outside
patches to their nearest normal patch (the distance the kNN detectors compute); the normal images'
own statistics, each against the patches of the other images, are the reference. An image from
another domain whose mean feature happens to sit near the normals' (a wood-like texture photo on wood)
still has patches that no normal image has.

The support is 1 over the range of the normal images' statistics and falls linearly to 0 at a margin
beyond their largest as wide as their upper half (largest minus median): an anomaly's influence on the
patches next to its mask moves a sample within the normals' range, an image from another domain lands
far beyond it (1.7 to 3 times the median in the curation benchmark, against at most 1.4 for
in-domain samples). The EAP multiplies its density proxy by it (the joint density of the masked region
and the rest of the image, taken as a product), so an off-support image is shrunk to the prior the way
the paper shrinks a point off the normal support.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from detectors.memory import nearest


def spread_cells(cells: torch.Tensor, n: int) -> torch.Tensor:
    """At most ``n`` of ``cells`` (grid indices in raster order), evenly spread: no randomness, so a
    sample's statistic does not depend on what else is in its batch."""
    if len(cells) <= n:
        return cells
    return cells[torch.linspace(0, len(cells) - 1, n).round().long()]


def outside_cells(coverage: torch.Tensor, border: int, max_cells: int) -> torch.Tensor:
    """Grid cells at least ``border`` cells away from any masked cell, at most ``max_cells`` of them;
    when the mask leaves no such cell, the unmasked cells; when it covers everything, every cell."""
    masked = coverage > 0
    near = F.max_pool2d(masked.float()[None, None], 2 * border + 1, stride=1, padding=border)[0, 0] > 0 if border else masked
    for candidates in (~near, ~masked, torch.ones_like(masked)):
        cells = candidates.flatten().nonzero().flatten()
        if len(cells):
            return spread_cells(cells, max_cells)
    return torch.zeros(0, dtype=torch.long)


class OutsideSupport:
    """The normal images' outside-patch statistics, and the support of new images.

    ``fit(bank, bank_images, cells, cell_images)``: ``bank`` the normal patches (M x C) and the image
    each comes from; ``cells`` patches of every normal image and their image. An image's reference
    statistic ignores the bank patches of its own image, as a new image has none there.
    """

    def fit(self, bank: torch.Tensor, bank_images: torch.Tensor, cells: torch.Tensor, cell_images: torch.Tensor) -> "OutsideSupport":
        self.bank_ = bank.float().contiguous()
        distances = torch.empty(len(cells))
        for start in range(0, len(cells), 1024):
            block = torch.cdist(cells[start : start + 1024].float(), self.bank_)
            own = cell_images[start : start + 1024, None] == bank_images[None, :]
            distances[start : start + 1024] = block.masked_fill_(own, float("inf")).amin(1)
        images = torch.unique(cell_images)
        self.reference_ = torch.stack([distances[cell_images == i].median() for i in images]).sort().values
        return self

    def statistic(self, cells: torch.Tensor, owner: torch.Tensor, n_samples: int) -> torch.Tensor:
        """Median nearest-normal distance of each sample's cells (``owner``: the sample of each row);
        NaN for a sample without cells."""
        distances, _ = nearest(cells, self.bank_)
        out = torch.full((n_samples,), float("nan"))
        for i in torch.unique(owner).tolist():
            out[i] = distances[owner == i].median()
        return out

    def support(self, statistic: torch.Tensor) -> torch.Tensor:
        """1 up to the largest reference statistic, then linearly down to 0 at a margin beyond it as
        wide as the reference's upper half; 1 where the statistic is NaN (no cell to judge)."""
        top, middle = self.reference_[-1], self.reference_.median()
        value = ((2 * top - middle - statistic) / (top - middle).clamp_min(1e-6)).clamp(0.0, 1.0)
        return torch.where(torch.isnan(statistic), torch.ones_like(value), value)
