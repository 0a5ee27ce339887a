"""Choosing which synthetic anomalies to keep: mask sanity rules, an EAP threshold or top fraction,
per-generator quotas and near-duplicate removal. Every dropped sample gets a reason."""

from __future__ import annotations

import inspect
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np


@dataclass
class Candidate:
    """What selection needs to know about one scored sample."""

    index: int
    generator: str
    eap: float  # NaN when the sample could not be scored (empty mask)
    area: float  # mask area as a fraction of the image
    pixels: int  # labelled mask pixels (> 0)
    descriptor: np.ndarray | None = None  # pooled in-mask features (near-duplicate check)
    grid_mask: np.ndarray | None = None  # coarse binary mask (near-duplicate check)
    label: int = 1  # 0: an unchanged (normal) sample


@dataclass
class Selection:
    kept: list[int]
    dropped: dict[int, str] = field(default_factory=dict)  # index -> reason

    def reasons(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for reason in self.dropped.values():
            key = reason.split(":")[0]
            counts[key] = counts.get(key, 0) + 1
        return counts


def mask_problem(candidate: Candidate, min_pixels: int, min_area: float, max_area: float) -> str | None:
    """Why a mask is unusable (empty, covering the image, too small), or None."""
    if candidate.pixels == 0 or candidate.area <= 0:
        return "empty mask"
    if candidate.area >= max_area:
        return f"whole-image mask: covers {candidate.area:.0%} (limit {max_area:.0%})"
    if candidate.pixels < min_pixels or candidate.area < min_area:
        return f"tiny mask: {candidate.pixels} pixels"
    return None


def near_duplicate(a: Candidate, b: Candidate, similarity: float, overlap: float) -> bool:
    """Same place (mask IoU >= ``overlap``) and same look (descriptor cosine >= ``similarity``)."""
    if a.descriptor is None or b.descriptor is None or a.grid_mask is None or b.grid_mask is None:
        return False
    inter = np.logical_and(a.grid_mask, b.grid_mask).sum()
    union = np.logical_or(a.grid_mask, b.grid_mask).sum()
    if union == 0 or inter / union < overlap:
        return False
    na, nb = np.linalg.norm(a.descriptor), np.linalg.norm(b.descriptor)
    return bool(na > 0 and nb > 0 and float(a.descriptor @ b.descriptor) / (na * nb) >= similarity)


def resolve_quota(quota: float, total: int) -> int:
    """A quota is a count (>= 1) or a fraction of the generator's samples (< 1)."""
    return int(quota) if quota >= 1 else int(np.floor(quota * total))


def cap_per_generator(alive: list[Candidate], limits: Mapping[str, int], dropped: dict[int, str], reason: str) -> list[Candidate]:
    """Keep at most ``limits[g]`` of generator ``g``'s samples, best first (``alive`` is sorted by EAP);
    generators without a limit keep all. ``reason`` is formatted with ``name`` and ``limit``."""
    taken: Counter[str] = Counter()
    kept = []
    for c in alive:
        limit = limits.get(c.generator)
        if limit is not None and taken[c.generator] >= limit:
            dropped[c.index] = reason.format(name=c.generator, limit=limit)
            continue
        taken[c.generator] += 1
        kept.append(c)
    return kept


class SelectionOptionError(ValueError):
    """A selection option out of range, or one that needs another (``needs``); ``option`` names it so
    that each caller can say it in its own words (a recipe key, a command-line flag)."""

    def __init__(self, option: str, problem: str, needs: str | None = None) -> None:
        self.option, self.problem, self.needs = option, problem, needs
        super().__init__(f"{option}: {self.explain()}")

    def explain(self, name: Callable[[str], str] = str) -> str:
        """The problem, with the missing option named by ``name``."""
        return self.problem if self.needs is None else f"{self.problem}: give {name(self.needs)} too"


def check_selection(
    top_fraction: float | None = None,
    per_generator: bool = False,
    quotas: Mapping[str, float] | None = None,
    max_area: float = 0.9,
    **_other: Any,
) -> None:
    """The rules on the selection options, in one place: :func:`select`, the recipe check and
    curation (before it scores) call it. Raises :class:`SelectionOptionError`."""
    if top_fraction is not None and not 0.0 < top_fraction <= 1.0:
        raise SelectionOptionError("top_fraction", f"must be in (0, 1], got {top_fraction}")
    if per_generator and top_fraction is None:
        raise SelectionOptionError("per_generator", "applies the top fraction to each generator's samples", needs="top_fraction")
    if not 0.0 < max_area <= 1.0:
        raise SelectionOptionError("max_area", f"must be in (0, 1], got {max_area}")
    for name, quota in (quotas or {}).items():
        if quota < 0:
            raise SelectionOptionError("quotas", f"quota of {name!r} must not be negative, got {quota}")


def select(
    candidates: list[Candidate],
    top_fraction: float | None = None,
    threshold: float | None = None,
    quotas: Mapping[str, float] | None = None,
    min_pixels: int = 16,
    min_area: float = 0.0,
    max_area: float = 0.9,
    duplicate_similarity: float | None = 0.98,
    duplicate_overlap: float = 0.5,
    per_generator: bool = False,
) -> Selection:
    """Keep the best samples by EAP. Order: mask rules, unscored, threshold, near-duplicates (the higher
    EAP stays), per-generator quotas, then the top fraction of all candidates, or with ``per_generator``
    of each generator's own candidates: the generated mix is kept, so a generator whose anomalies score
    higher on the whole cannot crowd out the others."""
    check_selection(top_fraction, per_generator, quotas, max_area)
    quotas = dict(quotas or {})
    dropped: dict[int, str] = {}
    alive = []
    for c in candidates:
        problem = mask_problem(c, min_pixels, min_area, max_area)
        if c.label == 0:
            dropped[c.index] = "unchanged sample: not an anomaly"
        elif problem:
            dropped[c.index] = problem
        elif not np.isfinite(c.eap):
            dropped[c.index] = "unscored"
        elif threshold is not None and c.eap < threshold:
            dropped[c.index] = f"below threshold: EAP {c.eap:.3f} < {threshold}"
        else:
            alive.append(c)
    alive.sort(key=lambda c: (-c.eap, c.index))
    if duplicate_similarity is not None:
        unique: list[Candidate] = []
        for c in alive:
            twin = next((u for u in unique if near_duplicate(c, u, duplicate_similarity, duplicate_overlap)), None)
            if twin is None:
                unique.append(c)
            else:
                dropped[c.index] = f"near duplicate: of sample {twin.index}"
        alive = unique
    totals = Counter(c.generator for c in candidates)
    if quotas:
        limits = {name: resolve_quota(quota, totals[name]) for name, quota in quotas.items()}
        alive = cap_per_generator(alive, limits, dropped, "over quota: {name} keeps {limit}")
    if top_fraction is not None and per_generator:
        limits = {name: int(np.ceil(top_fraction * total)) for name, total in totals.items()}
        alive = cap_per_generator(alive, limits, dropped, f"not in top fraction of {{name}}: {top_fraction}")
    elif top_fraction is not None:
        budget = int(np.ceil(top_fraction * len(candidates)))
        for c in alive[budget:]:
            dropped[c.index] = f"not in top fraction: {top_fraction}"
        alive = alive[:budget]
    return Selection(sorted(c.index for c in alive), dropped)


# The options a user sets (command line, recipe); their defaults are select's own, read from its signature.
SELECTION_OPTIONS = ("top_fraction", "per_generator", "threshold", "quotas", "min_pixels", "max_area",
                     "duplicate_similarity")
SELECTION_DEFAULTS = {name: inspect.signature(select).parameters[name].default for name in SELECTION_OPTIONS}
