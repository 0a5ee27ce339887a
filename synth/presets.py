"""The presets: where anomalies may go. ``texture``: anywhere (a surface filling the image);
``object``: on the object only, the background estimated from the image border. One table for the
``generate`` and ``fit-defects`` commands, the recipes and the detectors' on-the-fly generators."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PRESETS = ("texture", "object")
AUTO = "auto"  # decided from the normal images (guess_preset)


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
        "transplant": {"background": on_object},
    }


def resolve_preset(preset: str, folder: str | Path) -> str:
    """``preset`` itself, or for ``auto`` the one the normal images in ``folder`` suggest."""
    return guess_preset(folder) if preset == AUTO else preset


def guess_preset(folder: str | Path, threshold: float = 12.0) -> str:
    """``"object"`` when the normal images have a near-uniform border (an object on a background),
    else ``"texture"``; decides where synthetic anomalies may go."""
    import numpy as np

    from .common.readers import ImageReadError, normal_image_paths, read_image
    from .foreground import background_colour

    spreads = []
    for path in normal_image_paths(folder)[:8]:
        try:
            image = read_image(path).astype(np.float32)
        except ImageReadError:
            continue
        border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
        spreads.append(float(np.abs(border - background_colour(image.astype(np.uint8))).mean()))
    return "object" if spreads and float(np.median(spreads)) < threshold else "texture"
