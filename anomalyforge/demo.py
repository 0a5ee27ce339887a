"""The embedded demo data: defect-free texture tiles cut from photos bundled with scikit-image."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DEMO_TEXTURES = ("brick", "grass", "gravel")


def demo_images(tile: int = 256) -> dict[str, np.ndarray]:
    """Each bundled texture photo (brick, grass, gravel; 512 x 512) cut into a grid of non-overlapping
    ``tile`` x ``tile`` tiles, grey uint8, named by origin (four tiles per photo at the default size)."""
    import skimage.data

    images = {}
    for name in DEMO_TEXTURES:
        photo = np.ascontiguousarray(getattr(skimage.data, name)())
        h, w = photo.shape[:2]
        corners = [(y, x) for y in range(0, h - tile + 1, tile) for x in range(0, w - tile + 1, tile)]
        for k, (y, x) in enumerate(corners):
            images[f"{name}_{k}.png"] = photo[y : y + tile, x : x + tile]
    return images


def write_demo_images(folder: str | Path, tile: int = 256) -> list[Path]:
    """Write the demo tiles as PNG files into ``folder``; returns their paths."""
    from synth.common.pictures import save_png

    folder = Path(folder)
    return [save_png(folder / name, image) for name, image in demo_images(tile).items()]
