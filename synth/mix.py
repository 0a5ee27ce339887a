"""Weighted mixture of generators: each sample comes from one generator drawn by weight."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .base import AnomalyGenerator, Sample, check_image


class Mix(AnomalyGenerator):
    """Draw a generator by weight for every sample; the sample keeps that generator's name.

    Args:
        generators: the generators to mix.
        weights: relative weights (equal when ``None``).
        p_unchanged: probability of returning the image unchanged, before any generator is drawn.
    """

    name = "mix"

    def __init__(
        self, generators: Sequence[AnomalyGenerator], weights: Sequence[float] | None = None, p_unchanged: float = 0.0
    ) -> None:
        super().__init__(p_unchanged)
        if not generators:
            raise ValueError("Mix needs at least one generator")
        weights = [1.0] * len(generators) if weights is None else [float(w) for w in weights]
        if len(weights) != len(generators) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"need one non-negative weight per generator with a positive sum, got {weights}")
        self.generators = list(generators)
        self.weights = weights

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> Sample:
        image = check_image(image)
        if rng.random() < self.p_unchanged:
            return self.unchanged(image)
        total = sum(self.weights)
        index = int(rng.choice(len(self.generators), p=[w / total for w in self.weights]))
        return self.generators[index](image, rng)

    def generate_rgb(self, image, rng):  # pragma: no cover - Mix samples through __call__
        raise TypeError("Mix draws its samples through its generators")

    def get_config(self) -> dict:
        return {
            "generators": [{"name": g.name, **g.get_config()} for g in self.generators],
            "weights": self.weights,
            "p_unchanged": self.p_unchanged,
        }
