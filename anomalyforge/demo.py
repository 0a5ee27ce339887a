"""The embedded demo data: defect-free texture tiles cut from photos bundled with scikit-image."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DEMO_TEXTURES = ("brick", "grass", "gravel")


def demo_images(tile: int = 256) -> dict[str, np.ndarray]:
    """Four tiles per bundled texture photo (brick, grass, gravel), grey uint8, named by origin."""
    import skimage.data

    images = {}
    for name in DEMO_TEXTURES:
        photo = np.ascontiguousarray(getattr(skimage.data, name)())
        h, w = photo.shape[:2]
        for k, (y, x) in enumerate([(0, 0), (0, w - tile), (h - tile, 0), (h - tile, w - tile)]):
            images[f"{name}_{k}.png"] = photo[y : y + tile, x : x + tile]
    return images


def write_demo_images(folder: str | Path, tile: int = 256) -> list[Path]:
    """Write the demo tiles as PNG files into ``folder``; returns their paths."""
    from curate.preview import save_png

    folder = Path(folder)
    return [save_png(folder / name, image) for name, image in demo_images(tile).items()]
