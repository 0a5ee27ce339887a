"""Anomaly source textures for DRAEM: a folder of photos (like DTD) or the bundled fallback."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np

from .common.readers import IMAGE_SUFFIXES, ImageReadError, draw_readable, read_image

BUNDLED = ("brick", "grass", "gravel", "immunohistochemistry")


class TextureSource:
    """Indexable collection of RGB texture images, decoded lazily and kept in a small cache.

    Args:
        folder: directory of texture images (searched recursively). ``None`` uses the textures
            bundled with scikit-image (brick, grass, gravel, a stained tissue slide).
        cache_size: how many decoded textures to keep in memory.
    """

    def __init__(self, folder: str | Path | None = None, cache_size: int = 128) -> None:
        self.folder = None if folder is None else Path(folder)
        self.cache_size = cache_size
        self._names: list[str] | None = None
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._bad: set[int] = set()

    @property
    def names(self) -> Sequence[str]:
        if self._names is None:
            if self.folder is None:
                self._names = list(BUNDLED)
            else:
                if not self.folder.is_dir():
                    raise FileNotFoundError(f"texture folder {self.folder} does not exist")
                self._names = sorted(
                    str(p) for p in self.folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                )
                if not self._names:
                    raise FileNotFoundError(f"texture folder {self.folder} holds no images")
        return self._names

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> np.ndarray:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        name = self.names[index]
        if self.folder is None:
            import skimage.data

            image = np.ascontiguousarray(getattr(skimage.data, name)())
            if image.ndim == 2:
                image = np.repeat(image[..., None], 3, axis=2)
        else:
            image = read_image(name)
        self._cache[index] = image
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return image

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """A random readable texture and its name; unreadable files are reported once and skipped."""
        drawn = draw_readable(len(self.names), self.__getitem__, rng, self._bad, what="texture")
        if drawn is None:
            raise ImageReadError(f"no readable texture in {self.folder}")
        texture, index = drawn
        return texture, Path(self.names[index]).name

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()  # workers decode their own copies
        return state
