"""A memory of known defects: the patches of a few real defects, beside the memory of normal ones.

The normal memory (PatchCore) scores a patch by how far it is from every normal patch; it cannot know
that a patch, only a little unlike the normals, is very like a defect seen before. With a few real
defects, each patch's distance to the nearest of their patches is that knowledge: the two distances
make a nearest-neighbour two-class score, ``d_normal / (d_normal + d_defect)``: near 0 at a patch like
the normals, 1/2 at one as near a known defect as a normal patch, near 1 at one like a known defect.
Abdali et al. 2025 ("Anomalous Samples for Few-Shot Anomaly Detection", arXiv 2507.23712) add such
a memory of anomalous samples' features to a normal memory's score, fused with weights chosen on a
validation. The ratio, not the difference ``d_normal - d_defect``: a defect of a kind never seen is
far from both memories, and its difference, dominated by the large distance to the known defects,
can fall below a normal patch's, where the ratio, which compares the two distances, stays above in
the case the tests build (the two forms scored alike on the shots' own validation,
docs/measurements.md).

The hybrid uses it for the image score only, with a weight chosen on the real defects themselves,
each half scored against a memory of the other half's (``detectors.hybrid``).
"""

from __future__ import annotations

import torch

from .memory import coreset_bank, dense_nearest_maps

DEFECT_BANK_SIZE = 2000  # patches kept from the real defects' masks (greedy coreset): bounds predict's extra cost


def defect_rows(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The patches (rows, P x C) of patch maps (N x C x h x w) under their masks on the feature grid
    (N x 1 x h x w)."""
    channels = maps.shape[1]
    rows = maps.permute(0, 2, 3, 1).reshape(-1, channels)
    return rows[masks.reshape(-1) > 0].float()


def defect_bank(maps: torch.Tensor, masks: torch.Tensor, seed: int = 0, size: int = DEFECT_BANK_SIZE) -> torch.Tensor:
    """A memory of the defects' patches: at most ``size`` of them, chosen by the greedy coreset so
    that large defects do not crowd out small ones' kinds of patch."""
    rows = defect_rows(maps, masks)
    if not len(rows):
        raise ValueError("no defect patches: the masks are empty on the feature grid")
    return coreset_bank(rows, size, seed)


def defect_evidence(patches: torch.Tensor, normal_distance: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """Per patch (B x 1 x h x w), from its distance to the nearest normal patch: that distance's share
    of the sum with the distance to the nearest known defect patch. One matrix product, so that it
    exports to ONNX with the rest."""
    defect_distance = dense_nearest_maps(patches.float(), bank)[0]
    return normal_distance / (normal_distance + defect_distance).clamp_min(1e-6)
