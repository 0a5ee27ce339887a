"""Training anomalies for the trained detectors, drawn from the ``synth`` generators."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from synth.base import AnomalyGenerator
from synth.registry import build_generator, parse_weights

from .base import Anomaly

DEFAULT_SYNTH = "draem,nsa,cutpaste"


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
    keys: Sequence[int] = (),
) -> list[Anomaly]:
    """``n`` anomalies made from the images in turn (sample ``i`` seeded by ``(seed, *keys, i)``),
    each with its generator and source index; samples whose mask came out empty are dropped."""
    out = []
    for i in tqdm(range(n), desc=f"synthesise {generator.name}", unit="img", disable=not progress):
        sample = generator(images[i % len(images)], np.random.default_rng([seed, *keys, i]))
        if sample.is_anomalous and sample.mask.max() > 0:
            out.append(Anomaly(sample.image, sample.mask, sample.generator, i % len(images)))
    return out


class SyntheticAnomalies:
    """Mixin of the detectors that learn from synthetic anomalies: the generators that make them.

    Args:
        synth: generators for the training anomalies (``"draem,nsa,cutpaste"``, one name, or ``"none"``
            to use only the anomalies passed to ``fit``).
        synth_options: keyword arguments per generator (as for :func:`synth.build_generator`).
    """

    uses_anomalies = True

    def __init__(self, synth: str = DEFAULT_SYNTH, synth_options: dict[str, dict[str, Any]] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.synth = synth
        self.synth_options = synth_options

    def make_generator(self, sources: Sequence[np.ndarray]) -> AnomalyGenerator | None:
        """The training anomalies' generator, its sources drawn from ``sources`` (None for ``"none"``)."""
        return make_generator(self.synth, self.synth_options, sources)

    def calibration_generator(self, sources: Sequence[np.ndarray]) -> AnomalyGenerator:
        """The generator of the anomalies made on held-out normals to calibrate the threshold: the
        detector's own, or the default mix with its options when it has none."""
        spec = self.synth if self.synth and self.synth != "none" else DEFAULT_SYNTH
        return make_generator(spec, self.synth_options, sources)
