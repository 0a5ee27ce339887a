"""Build generators by name, as the CLI and recipes name them."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .base import AnomalyGenerator
from .cutpaste import CutPaste
from .draem import DRAEM
from .mix import Mix
from .nsa import NSA

GENERATORS = ("cutpaste", "nsa", "draem", "diffusion", "mix")
MIXABLE = ("cutpaste", "nsa", "draem", "diffusion")


def build_generator(
    name: str,
    sources: Sequence[np.ndarray] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    weights: Mapping[str, float] | None = None,
) -> AnomalyGenerator:
    """A generator by name with per-generator keyword ``options``; ``mix`` mixes the others with
    ``weights`` (CutPaste, NSA and DRAEM equally by default). ``sources`` are the normal images NSA
    takes patches from. ``diffusion`` loads a fitted few-shot generator: its options are
    ``model`` (the folder ``save_pretrained`` wrote) plus settings to override (e.g. ``defect``)."""
    options = dict(options or {})
    unknown = set(options) - set(GENERATORS)
    if unknown:
        raise ValueError(f"options given for unknown generators: {sorted(unknown)}")

    def make(kind: str) -> AnomalyGenerator:
        kwargs = dict(options.get(kind, {}))
        if kind == "cutpaste":
            kwargs.setdefault("variant", "union")
            return CutPaste(**kwargs)
        if kind == "nsa":
            return NSA(sources=sources, **kwargs)
        if kind == "draem":
            return DRAEM(**kwargs)
        if kind == "diffusion":
            from .diffusion import load_defect_diffusion

            if not kwargs.get("model"):
                raise ValueError("the diffusion generator needs a fitted model folder: options diffusion.model=DIR")
            return load_defect_diffusion(kwargs.pop("model"), **kwargs)
        raise ValueError(f"unknown generator {kind!r}; choose from {', '.join(GENERATORS)}")

    if name != "mix":
        return make(name)
    weights = dict(weights or {"cutpaste": 1.0, "nsa": 1.0, "draem": 1.0})
    for kind in weights:
        if kind not in MIXABLE:
            raise ValueError(f"unknown generator {kind!r} in mix weights; choose from {', '.join(MIXABLE)}")
    kinds = [k for k, w in weights.items() if w > 0]
    return Mix([make(k) for k in kinds], [weights[k] for k in kinds], **options.get("mix", {}))
