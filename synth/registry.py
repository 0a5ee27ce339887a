"""The generators and the diffusion backends by name (the CLI's choices, recipes and saved models read
these tables), and building a generator or a weighted mix from names and options."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .common.registry import Registry

GENERATORS = Registry("generator", {
    "cutpaste": "synth.cutpaste:CutPaste",
    "nsa": "synth.nsa:NSA",
    "draem": "synth.draem:DRAEM",
    "diffusion": "synth.diffusion.generator:DefectDiffusion",
    "mix": "synth.mix:Mix",
})
BACKENDS = Registry("diffusion backend", {
    "scratch": "synth.diffusion.scratch:ScratchDefectDiffusion",
    "pretrained": "synth.diffusion.inpainting:PretrainedDefectDiffusion",
})
MIXABLE = tuple(name for name in GENERATORS.names() if name != "mix")
DEFAULT_MIX = {"cutpaste": 1.0, "nsa": 1.0, "draem": 1.0}


def parse_weights(text: str, default: float | None = None) -> dict[str, float]:
    """``"cutpaste=1,nsa=2"`` -> ``{"cutpaste": 1.0, "nsa": 2.0}``, the one reading of mix weights and
    per-generator quotas on the command line (``name:value`` is accepted too). With a ``default``, a bare
    name takes it (``"draem,nsa"``)."""
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.replace(":", "=").partition("=")
        name = name.strip()
        if not name:
            raise ValueError(f"weights must look like cutpaste=1,nsa=2,draem=1; got {text!r}")
        if not sep:
            if default is None:
                raise ValueError(f"weights must look like cutpaste=1,nsa=2,draem=1; got {part!r}")
            weights[name] = default
            continue
        try:
            weights[name] = float(value)
        except ValueError:
            raise ValueError(f"weight of {name!r} is not a number: {value!r}") from None
    return weights


def build_generator(
    name: str,
    sources: Sequence[Any] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    weights: Mapping[str, float] | None = None,
):
    """A generator by name with per-generator keyword ``options``; ``mix`` mixes the others with
    ``weights`` (CutPaste, NSA and DRAEM equally by default). ``sources`` are the normal images NSA
    takes patches from. ``diffusion`` loads a fitted few-shot generator: its options are
    ``model`` (the folder ``save_pretrained`` wrote) plus settings to override (e.g. ``defect``)."""
    options = dict(options or {})
    unknown = [k for k in options if k not in GENERATORS]
    if unknown:
        raise ValueError(f"options given for unknown generators: {sorted(unknown)}")

    def make(kind: str):
        kwargs = dict(options.get(kind, {}))
        if kind == "mix":
            raise ValueError("a mix cannot hold another mix")
        if kind == "diffusion":
            if not kwargs.get("model"):
                raise ValueError("the diffusion generator needs a fitted model folder: options diffusion.model=DIR")
            return GENERATORS.get(kind).from_pretrained(kwargs.pop("model"), **kwargs)
        if kind == "nsa":
            kwargs["sources"] = sources
        return GENERATORS.get(kind)(**kwargs)

    if name != "mix":
        return make(name)
    weights = dict(weights or DEFAULT_MIX)
    for kind in weights:
        if kind not in MIXABLE:
            raise ValueError(f"unknown generator {kind!r} in mix weights; choose from {', '.join(MIXABLE)}")
    kinds = [k for k, w in weights.items() if w > 0]
    return GENERATORS.get("mix")([make(k) for k in kinds], [weights[k] for k in kinds], **options.get("mix", {}))
