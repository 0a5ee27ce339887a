"""Training anomalies for the trained detectors, drawn from the ``synth`` generators."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from synth.base import AnomalyGenerator
from synth.registry import build_generator, parse_weights

from .base import Anomaly


def make_generator(
    spec: str | AnomalyGenerator | None,
    options: dict[str, dict[str, Any]] | None,
    sources: Sequence[np.ndarray],
) -> AnomalyGenerator | None:
    """``"draem,nsa,cutpaste"`` -> an equal-weight mix; one name -> that generator; ``"none"`` -> None.
    Weights may be given as ``"draem=2,nsa=1"``."""
    if spec is None or isinstance(spec, AnomalyGenerator):
        return spec
    spec = spec.strip()
    if spec in ("", "none"):
        return None
    weights = parse_weights(spec, default=1.0)
    options = {k: dict(v) for k, v in (options or {}).items() if k in weights or k == "mix"}
    if len(weights) == 1 and "mix" not in weights:
        return build_generator(next(iter(weights)), sources, options)
    return build_generator("mix", sources, options, weights)


def synthesise(
    images: Sequence[np.ndarray],
    generator: AnomalyGenerator,
    n: int,
    seed: int,
    progress: bool = True,
) -> list[Anomaly]:
    """``n`` anomalies made from the images in turn (sample ``i`` seeded by ``(seed, i)``), each with
    its generator and source index; samples whose mask came out empty are dropped."""
    out = []
    for i in tqdm(range(n), desc=f"synthesise {generator.name}", unit="img", disable=not progress):
        sample = generator(images[i % len(images)], np.random.default_rng([seed, i]))
        if sample.is_anomalous and sample.mask.max() > 0:
            out.append(Anomaly(sample.image, sample.mask, sample.generator, i % len(images)))
    return out
