"""The presets: where anomalies may go. ``texture``: anywhere (a surface filling the image);
``object``: on the object only, the background estimated from the image border. One table for the
``generate`` and ``fit-defects`` commands, the recipes and the detectors' on-the-fly generators."""

from __future__ import annotations

from typing import Any

PRESETS = ("texture", "object")


def preset_options(preset: str, textures: str | None = None) -> dict[str, dict[str, Any]]:
    """Per-generator options a preset implies (``textures``: DRAEM's anomaly source folder)."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    on_object = "border" if preset == "object" else None
    return {
        "cutpaste": {"background": on_object},
        "nsa": {"preset": preset},
        "draem": {"background": on_object, "texture_dir": textures},
        "diffusion": {"background": on_object},
    }
