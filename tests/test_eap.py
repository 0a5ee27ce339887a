"""EAP against a direct, slow implementation of the formula, and the reference's rule for k."""

import numpy as np
import pytest
import torch

from curate.posterior import (
    ExpectedAnomalyPosterior,
    draw_subsets,
    minimum_k,
    prior_from_fraction,
)


def slow_eap(normals, points, members, ks, prior, groups=None):
    """The formula point by point: kNN balls, rarity, density proxy q, detector f, phi, mean over subsets."""
    b0, b1 = prior
    groups = np.arange(len(normals)) if groups is None else np.asarray(groups)
    total = np.zeros(len(points))
    for member, k in zip(members, ks):
        xs = normals[member]
        gs = groups[member]
        n = len(xs)
        dist = np.sqrt(((xs[:, None, :] - xs[None, :, :]) ** 2).sum(-1))
        radius = np.array([np.sort(dist[i])[k] for i in range(n)])  # k-th nearest other normal

        def rarity(x):
            d = np.sqrt(((xs - x) ** 2).sum(-1))
            inside = [radius[i] for i in range(n) if d[i] < radius[i]]
            return min(inside) if inside else None

        inv_normals = 0.0
        for x in xs:
            r = rarity(x)
            inv_normals += 0.0 if r is None or r == 0 else 1.0 / r
        loo = np.array([min(dist[i, j] for j in range(n) if gs[j] != gs[i]) for i in range(n)])
        for p, x in enumerate(points):
            r = rarity(x)
            inv = 0.0 if r is None else 1.0 / r
            q = inv / (inv + inv_normals)
            score = np.sqrt(((xs - x) ** 2).sum(-1)).min()
            f = np.mean(loo <= score)
            total[p] += (b1 + n * q * f) / (b0 + b1 + n * q)
    return total / len(members)


def clouds(seed=0, n=60, m=6):
    """Normals, then m points like them, m towards the edge of their support, 4 far away."""
    rng = np.random.default_rng(seed)
    normals = rng.normal(0, 1, (n, 3))
    points = np.concatenate([
        rng.normal(0, 1, (m, 3)),
        rng.normal(0, 1, (m, 3)) + np.array([1.5, 0, 0]),
        rng.normal(0, 0.5, (4, 3)) + 40.0,
    ])
    return normals, points


@pytest.mark.parametrize("k,grouped", [(3, False), (10, False), ("auto", False), (5, True)])
def test_eap_matches_direct_formula(k, grouped):
    normals, points = clouds()
    groups = np.arange(len(normals)) // 3 if grouped else None
    eap = ExpectedAnomalyPosterior(n_subsets=7, k=k, seed=3).fit(normals, groups=groups)
    fast = eap.posterior(points)
    slow = slow_eap(normals, points, eap.members_, [m.k for m in eap.subsets_], eap.prior_, groups)
    np.testing.assert_allclose(fast, slow, rtol=1e-4, atol=1e-6)
    assert fast.shape == (len(points),) and np.all((fast >= 0) & (fast <= 1))


def test_eap_shrinks_off_support_points_to_the_prior_and_ranks_edge_points_first():
    normals, points = clouds(1, n=400, m=100)
    eap = ExpectedAnomalyPosterior(n_subsets=20, k=10, seed=0).fit(normals)
    values = eap.posterior(points)
    b0, b1 = eap.prior_
    np.testing.assert_allclose(values[200:], b1 / (b0 + b1))  # in no ball: exactly the prior mean
    assert values[100:200].mean() > values[:100].mean() + 0.03
    assert values[:100].mean() > values[200:].mean() + 0.1


def test_eap_chunks_and_seed():
    normals, points = clouds(2)
    whole = ExpectedAnomalyPosterior(n_subsets=5, k=5, seed=1).fit(normals).posterior(points)
    chunked = ExpectedAnomalyPosterior(n_subsets=5, k=5, seed=1, chunk_size=3).fit(normals).posterior(points)
    np.testing.assert_allclose(whole, chunked, rtol=1e-6)
    other = ExpectedAnomalyPosterior(n_subsets=5, k=5, seed=2).fit(normals).posterior(points)
    assert not np.allclose(whole, other)


def loop_minimum_k(normals, anomalies, min_k):
    """The reference procedure: grow k until every labelled anomaly lies in some ball."""
    from scipy.stats import beta

    n = len(normals)
    dist = np.sqrt(((normals[:, None] - normals[None]) ** 2).sum(-1))
    to_anom = np.sqrt(((anomalies[:, None] - normals[None]) ** 2).sum(-1))
    k_values = np.zeros(len(anomalies), int)
    k = min_k
    while True:
        radius = np.sort(dist, axis=1)[:, k]
        inside = (to_anom < radius[None]).any(1)
        k_values[inside & (k_values == 0)] = k
        if inside.all() or k + 1 >= n:
            k_values[k_values == 0] = n - 1
            break
        k += 1
    p = (k_values - min_k) / (n - 1 - min_k)
    kstar = int(beta.ppf(0.95, 1 + p.sum(), 1 + len(p) - p.sum()) * (n - 1 - min_k) + min_k)
    return max(min(n - 1, kstar), min_k)


def test_minimum_k_follows_the_reference_procedure():
    rng = np.random.default_rng(0)
    normals = rng.normal(0, 1, (40, 2))
    near = rng.normal(0, 1.5, (5, 2))
    far = np.array([[6.0, 0.0], [0.0, 3.0]])
    d = torch.cdist(torch.tensor(normals), torch.tensor(normals)).float()
    for anomalies in (near, np.concatenate([near, far]), np.zeros((0, 2))):
        a = torch.cdist(torch.tensor(anomalies), torch.tensor(normals)).float() if len(anomalies) else torch.zeros(0, 40)
        assert minimum_k(d, a, 5) == loop_minimum_k(normals, anomalies, 5)
    # without labelled anomalies the rule gives the 95 % quantile of the uniform prior
    assert minimum_k(d, torch.zeros(0, 40), 5) == int(0.95 * 34 + 5)


def test_prior_and_subsets():
    assert prior_from_fraction(0.0) == (0.99, 0.01)
    assert prior_from_fraction(0.2) == pytest.approx((0.8, 0.2))
    rng = np.random.default_rng(0)
    members = draw_subsets(1000, 50, 0.1, rng)
    rates = members.mean(1)
    assert members.shape == (50, 1000) and rates.min() > 0.05 and rates.max() < 1.0
    again = draw_subsets(1000, 50, 0.1, np.random.default_rng(0))
    assert np.array_equal(members, again)


def test_errors():
    with pytest.raises(ValueError, match="at least 7 normal points"):
        ExpectedAnomalyPosterior().fit(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="k must be"):
        ExpectedAnomalyPosterior(k=0).fit(np.random.default_rng(0).normal(size=(20, 2)))


def test_support_scales_the_density_and_zero_support_gives_the_prior():
    normals, points = clouds()
    eap = ExpectedAnomalyPosterior(n_subsets=5, k=5, seed=0).fit(normals)
    plain = eap.posterior(points)
    np.testing.assert_allclose(eap.posterior(points, np.ones(len(points))), plain, rtol=1e-6)
    b0, b1 = eap.prior_
    np.testing.assert_allclose(eap.posterior(points, np.zeros(len(points))), b1 / (b0 + b1))
    half = eap.posterior(points, np.full(len(points), 0.5))
    inside = plain != b1 / (b0 + b1)
    assert np.all(np.abs(half - b1 / (b0 + b1)) <= np.abs(plain - b1 / (b0 + b1)) + 1e-9)  # nearer the prior
    assert np.any(np.abs(half - plain)[inside] > 1e-3)
    with pytest.raises(ValueError, match="one value in \\[0, 1\\] per point"):
        eap.posterior(points, np.full(3, 0.5))
    with pytest.raises(ValueError, match="one value in \\[0, 1\\] per point"):
        eap.posterior(points, np.full(len(points), 1.5))
