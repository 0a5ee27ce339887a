"""The Expected Anomaly Posterior (Perini et al.): how surely a detector calls a point anomalous,
shrunk towards the prior where the point lies off the normal data's support.

For each of S random subsets of the training data a detector ``f_s`` (probability of anomaly) is
fitted and a density proxy ``q_s`` is taken from k-nearest-neighbour balls around the normals:

    phi_s(x) = (b1 + N_s q_s(x) f_s(x)) / (b0 + b1 + N_s q_s(x)),    EAP(x) = mean_s phi_s(x)

Points here are feature vectors; :class:`~curate.scorer.EAPScorer` turns images and masks into
points. This module is the vectorised computation, streamed over chunks of points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import beta as beta_distribution


def pairwise_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (float32, clamped at zero) between the rows of ``a`` and ``b``."""
    return torch.cdist(a.float(), b.float()).clamp_min_(0.0)


def prior_from_fraction(fraction: float, floor: float = 0.01) -> tuple[float, float]:
    """Beta prior ``(b0, b1) = (1 - g, g)`` with ``g`` the labelled anomaly fraction, at least ``floor``."""
    g = min(max(float(fraction), float(floor)), 1.0)
    return 1.0 - g, g


def draw_subsets(n_points: int, n_subsets: int, min_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """``n_subsets`` x ``n_points`` membership: for each subset a rate ``p ~ U(min_fraction, 0.99)``, then
    every training point is kept with probability ``p`` (the reference implementation's scheme)."""
    rates = rng.uniform(min(min_fraction, 0.99), 0.99, size=n_subsets)
    return rng.random((n_subsets, n_points)) < rates[:, None]


def minimum_k(normal_distances: torch.Tensor, anomaly_distances: torch.Tensor, min_k: int, quantile: float = 0.95) -> int:
    """Ball size ``k`` so that the labelled anomalies lie in the normals' kNN balls (reference rule).

    Each labelled anomaly needs the smallest ``k >= min_k`` whose balls contain it; with ``p*`` those
    values rescaled to [0, 1], ``k`` is the ``quantile`` of Beta(1 + sum p*, 1 + n - sum p*) mapped back.
    Without labelled anomalies this is the ``quantile`` of the uniform distribution.

    ``normal_distances``: N x N between the normals (zero diagonal); ``anomaly_distances``: A x N.
    """
    n = normal_distances.shape[0]
    if n <= min_k + 1:
        return n - 1
    if anomaly_distances.shape[0]:
        ordered = normal_distances.sort(dim=1).values  # column j: radius of the ball of size j
        # smallest j with ordered[i, j] > d(a, i), per ball i; then the best ball
        first = torch.searchsorted(ordered.contiguous(), anomaly_distances.T.contiguous(), right=True)  # N x A
        k_values = first.min(dim=0).values.clamp(min=min_k).clamp(max=n - 1).double().numpy()
    else:
        k_values = np.zeros(0)
    p_star = (k_values - min_k) / (n - 1 - min_k)
    a, b = 1.0 + p_star.sum(), 1.0 + len(p_star) - p_star.sum()
    k = int(beta_distribution.ppf(quantile, a, b) * (n - 1 - min_k) + min_k)
    return max(min(n - 1, k), min_k)


@dataclass
class SubsetModel:
    """What subset ``s`` needs to score new points, as full-length vectors over all normals.

    ``radius``: kNN-ball radius of each normal in the subset, 0 elsewhere (an empty ball).
    ``excluded``: 0 for normals in the subset, +inf elsewhere (added to distances for the detector).
    ``normal_scores``: the subset normals' leave-one-out detector scores, sorted (for f_s).
    ``inverse_rarity_sum``: sum over the subset normals of 1 / r(x_i).
    """

    radius: torch.Tensor
    excluded: torch.Tensor
    normal_scores: torch.Tensor
    inverse_rarity_sum: float
    n_normals: int
    k: int


def ball_rarity(distances: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Rarity r(x): the smallest radius among the balls that contain x (distance strictly below the
    radius); +inf where x lies in no ball. ``distances``: P x N, ``radius``: N."""
    inside = distances < radius
    return torch.where(inside, radius, torch.full_like(distances, float("inf"))).amin(dim=1)


def fit_subset(normal_distances: torch.Tensor, members: torch.Tensor, k: int, groups: torch.Tensor | None = None) -> SubsetModel:
    """Detector and density proxy of one subset, from the normals' distance matrix. ``groups`` marks
    normals that come from the same image: a normal's detector score is its distance to the nearest
    normal of another group, as a new image's patch has no sibling among the normals."""
    index = members.nonzero().flatten()
    inner = normal_distances[index][:, index]
    n_s = len(index)
    k = min(k, n_s - 1)
    # the k-th nearest other normal: position k in the sorted row (position 0 is the point itself)
    radius_inner = torch.kthvalue(inner, k + 1, dim=1).values
    # detector: distance to the nearest other normal (of another image) in the subset
    if groups is None:
        same = torch.eye(n_s, dtype=torch.bool)
    else:
        g = groups[index]
        same = g[:, None] == g[None, :]
    loo = inner.masked_fill(same, float("inf"))
    normal_scores = loo.amin(dim=1).sort().values
    rarity = ball_rarity(inner, radius_inner)
    inverse = torch.where(torch.isfinite(rarity) & (rarity > 0), 1.0 / rarity, torch.zeros_like(rarity))
    radius = torch.zeros(normal_distances.shape[0])
    radius[index] = radius_inner
    excluded = torch.full((normal_distances.shape[0],), float("inf"))
    excluded[index] = 0.0
    return SubsetModel(radius, excluded, normal_scores, float(inverse.sum()), n_s, k)


def anomaly_probability(scores: torch.Tensor, normal_scores: torch.Tensor) -> torch.Tensor:
    """f_s: the detector score calibrated to [0, 1] as its empirical quantile among the subset's
    normals (their leave-one-out scores): the fraction of normals that score at most as high."""
    return torch.searchsorted(normal_scores, scores.contiguous(), right=True).float() / len(normal_scores)


def subset_posterior(
    distances: torch.Tensor, model: SubsetModel, prior: tuple[float, float], support: torch.Tensor | None = None,
) -> torch.Tensor:
    """phi_s of points given their distances (P x N) to all normals; ``support`` (P, in [0, 1])
    multiplies the density proxy, for evidence of the support that the points' features do not carry."""
    b0, b1 = prior
    f = anomaly_probability((distances + model.excluded).amin(dim=1), model.normal_scores)
    rarity = ball_rarity(distances, model.radius)
    inverse = torch.where(torch.isfinite(rarity), 1.0 / rarity, torch.zeros_like(rarity))
    q = inverse / (inverse + model.inverse_rarity_sum)
    if support is not None:
        q = q * support
    n_q = model.n_normals * q
    return (b1 + n_q * f) / (b0 + b1 + n_q)


class ExpectedAnomalyPosterior:
    """EAP of feature points against a set of normal feature points (and optional labelled anomalies).

    ``k``: kNN-ball size, or ``"auto"`` for the reference rule (:func:`minimum_k`, per subset).
    ``prior``: ``(b0, b1)``; default from the labelled anomaly fraction with ``prior_floor``.
    """

    def __init__(
        self,
        n_subsets: int = 100,
        k: int | str = "auto",
        min_k: int = 5,
        prior: tuple[float, float] | None = None,
        prior_floor: float = 0.01,
        chunk_size: int = 2048,
        seed: int = 0,
    ) -> None:
        self.n_subsets = n_subsets
        self.k = k
        self.min_k = min_k
        self.prior = prior
        self.prior_floor = prior_floor
        self.chunk_size = chunk_size
        self.seed = seed

    def fit(
        self,
        normals: np.ndarray | torch.Tensor,
        anomalies: np.ndarray | torch.Tensor | None = None,
        groups: np.ndarray | torch.Tensor | None = None,
    ) -> "ExpectedAnomalyPosterior":
        """``normals``: N x D points; ``anomalies``: labelled anomalies (prior and k only); ``groups``:
        an id per normal (e.g. its image) so a normal's detector score ignores its own group."""
        normals = torch.as_tensor(normals, dtype=torch.float32)
        groups = None if groups is None else torch.as_tensor(np.asarray(groups), dtype=torch.long)
        if groups is not None and groups.shape != (normals.shape[0],):
            raise ValueError(f"groups must have one id per normal ({normals.shape[0]}), got shape {tuple(groups.shape)}")
        anomalies = torch.zeros((0, normals.shape[1])) if anomalies is None else torch.as_tensor(anomalies, dtype=torch.float32)
        n, a = normals.shape[0], anomalies.shape[0]
        if n < self.min_k + 2:
            raise ValueError(f"EAP needs at least {self.min_k + 2} normal points, got {n}")
        if self.k != "auto" and (not isinstance(self.k, int) or self.k < 1):
            raise ValueError(f"k must be a positive integer or 'auto', got {self.k!r}")
        self.prior_ = tuple(self.prior) if self.prior is not None else prior_from_fraction(a / (n + a), self.prior_floor)
        rng = np.random.default_rng(self.seed)
        # the reference draws subsets over all training points; anomalies only steer k here
        members = draw_subsets(n + a, self.n_subsets, (self.min_k + 1 + a) / (n + a), rng)
        self.normals_ = normals
        distances = pairwise_distances(normals, normals)
        distances = (distances + distances.T) / 2  # exactly symmetric, so ball membership is consistent
        distances.fill_diagonal_(0.0)
        anomaly_distances = pairwise_distances(anomalies, normals) if a else torch.zeros((0, n))
        self.subsets_, self.members_ = [], []
        for row in members:
            normal_members = torch.from_numpy(row[:n])
            if int(normal_members.sum()) < self.min_k + 2:  # too few normals to build balls: add some back
                normal_members[torch.from_numpy(rng.permutation(n)[: self.min_k + 2])] = True
            if self.k == "auto":
                index = normal_members.nonzero().flatten()
                k = minimum_k(distances[index][:, index], anomaly_distances[:, index], self.min_k)
            else:
                k = self.k
            self.subsets_.append(fit_subset(distances, normal_members, k, groups))
            self.members_.append(normal_members.numpy())
        return self

    def posterior(self, points: np.ndarray | torch.Tensor, support: np.ndarray | torch.Tensor | None = None) -> np.ndarray:
        """EAP of each point (P,), computed in chunks so memory stays bounded. ``support`` (P, in
        [0, 1]), when given, multiplies each point's density proxy (see :func:`subset_posterior`)."""
        points = torch.as_tensor(points, dtype=torch.float32)
        if support is not None:
            support = torch.as_tensor(support, dtype=torch.float32)
            if support.shape != (points.shape[0],) or bool(((support < 0) | (support > 1)).any()):
                raise ValueError(f"support must hold one value in [0, 1] per point ({points.shape[0]})")
        out = np.zeros(points.shape[0], np.float64)
        for start in range(0, points.shape[0], self.chunk_size):
            distances = pairwise_distances(points[start : start + self.chunk_size], self.normals_)
            chunk_support = None if support is None else support[start : start + self.chunk_size]
            total = torch.zeros(distances.shape[0], dtype=torch.float64)
            for model in self.subsets_:
                total += subset_posterior(distances, model, self.prior_, chunk_support).double()
            out[start : start + distances.shape[0]] = (total / len(self.subsets_)).numpy()
        return out
