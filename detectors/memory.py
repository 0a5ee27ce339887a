"""Memory banks of normal patch features: greedy coreset selection and nearest-neighbour search."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from synth.common.threads import follow_neighbours


def greedy_coreset(
    features: torch.Tensor,
    n: int,
    seed: int = 0,
    projection_dim: int = 128,
    max_candidates: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Indices of ``n`` rows chosen by greedy k-centre selection (PatchCore; distances on a random
    projection to ``projection_dim`` dimensions).

    With ``max_candidates``, the centres are chosen among that many rows drawn at random, which bounds
    the cost (each step scans every candidate) on large training sets.
    """
    total = features.shape[0]
    if n >= total:
        return torch.arange(total)
    generator = torch.Generator().manual_seed(seed)
    candidates = None
    if max_candidates is not None and total > max_candidates:
        candidates = torch.randperm(total, generator=generator)[:max_candidates].sort().values
        features = features[candidates]
        total = max_candidates
    x = features.float()
    if x.shape[1] > projection_dim:
        projection = torch.randn(x.shape[1], projection_dim, generator=generator) / projection_dim**0.5
        x = x @ projection
    norms = (x * x).sum(1)
    chosen = torch.empty(n, dtype=torch.long)
    chosen[0] = int(torch.randint(total, (1,), generator=generator))
    centre = x[chosen[0]]
    min_dist = norms - 2 * (x @ centre) + centre @ centre
    for i in tqdm(range(1, n), desc="coreset", unit="pt", disable=not progress, mininterval=1.0):
        follow_neighbours()
        index = int(torch.argmax(min_dist))
        chosen[i] = index
        centre = x[index]
        torch.minimum(min_dist, norms - 2 * (x @ centre) + centre @ centre, out=min_dist)
    return chosen if candidates is None else candidates[chosen]


def coreset_bank(patches: torch.Tensor, n: int, seed: int = 0, candidates_per_centre: int = 20, progress: bool = False) -> torch.Tensor:
    """``n`` rows of ``patches`` (P x C) chosen by the greedy coreset (all of them when P <= n)."""
    n = max(1, min(n, len(patches)))
    index = greedy_coreset(patches, n, seed=seed, max_candidates=candidates_per_centre * n, progress=progress)
    return patches[index].float().contiguous()


def nearest(queries: torch.Tensor, bank: torch.Tensor, chunk: int = 2048, bank_chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean distance of each row of ``queries`` (N x C) to its nearest row of ``bank`` (M x C),
    and that row's index. Blocked over queries and bank rows so that each distance block stays in
    cache (1.7x faster than one block per query chunk on a 10,000-row bank)."""
    bank = bank.float()
    bank_norms = (bank * bank).sum(1)
    distances, indices = [], []
    for start in range(0, len(queries), chunk):
        q = queries[start : start + chunk].float()
        best = best_index = None
        for b in range(0, len(bank), bank_chunk):
            squared = torch.addmm(bank_norms[b : b + bank_chunk], q, bank[b : b + bank_chunk].T, alpha=-2.0)
            value, index = squared.min(1)
            if best is None:
                best, best_index = value, index
            else:
                closer = value < best
                best = torch.where(closer, value, best)
                best_index = torch.where(closer, index + b, best_index)
        distances.append(best.add_((q * q).sum(1)).clamp_min_(0).sqrt_())
        indices.append(best_index)
    if not distances:
        return queries.new_zeros(0), torch.zeros(0, dtype=torch.long)
    return torch.cat(distances), torch.cat(indices)


def nearest_maps(features: torch.Tensor, bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For patch maps (B x C x h x w): the distance to the nearest bank row (B x 1 x h x w) and the
    residual, feature minus that nearest normal feature (B x C x h x w)."""
    b, c, h, w = features.shape
    flat = features.permute(0, 2, 3, 1).reshape(-1, c).float()
    distance, index = nearest(flat, bank)
    residual = flat - bank[index].to(flat.dtype)
    return distance.view(b, 1, h, w), residual.view(b, h, w, c).permute(0, 3, 1, 2)


def dense_nearest_maps(patches: torch.Tensor, bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """As :func:`nearest_maps`, but the distance map and the nearest rows themselves (B x C x h x w), in
    one matrix product: no loop whose count depends on the batch, so that it traces into an ONNX
    graph with a dynamic batch (and is fast for a small bank)."""
    b, c, h, w = patches.shape
    flat = patches.permute(0, 2, 3, 1).reshape(-1, c)
    squared = (flat * flat).sum(1, keepdim=True) - 2.0 * flat @ bank.T + (bank * bank).sum(1)[None]
    best, index = squared.min(1)
    distance = best.clamp_min(0).sqrt().reshape(b, 1, h, w)
    nearest_rows = bank[index].reshape(b, h, w, c).permute(0, 3, 1, 2)
    return distance, nearest_rows
