"""Reading normal and test images: plain folders and the MVTec AD layout.

Every image comes back as HxWx3 uint8 RGB whatever it was on disk (grey, grey+alpha, RGBA,
16-bit, palette). A file that cannot be read raises :class:`ImageReadError` naming the file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import cv2
import numpy as np

from .storage import Store, as_location, is_url

log = logging.getLogger(__name__)
T = TypeVar("T")

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})


class ImageReadError(ValueError):
    """An image file that cannot be decoded; the message names the file and the problem."""


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file (a local path or an fsspec URL) to HxWx3 uint8 RGB."""
    path = as_location(path)
    try:
        if is_url(path):
            import fsspec

            with fsspec.open(path, "rb") as handle:
                data = np.frombuffer(handle.read(), dtype=np.uint8)
        else:
            data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise ImageReadError(f"{path}: cannot open file ({error.strerror or error})") from error
    if data.size == 0:
        raise ImageReadError(f"{path}: file is empty")
    if data[:8].tobytes() == PNG_SIGNATURE and b"IEND" not in data[-12:].tobytes():
        # found here, so that libpng does not print its own error beside ours
        raise ImageReadError(f"{path}: truncated PNG (the file ends before its last chunk)")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageReadError(f"{path}: not a readable image (corrupt or unsupported format)")
    try:
        return to_rgb8(image, bgr=True)
    except ValueError as error:
        raise ImageReadError(f"{path}: {error}") from error


def draw_readable(
    n: int,
    load: Callable[[int], T],
    rng: np.random.Generator,
    bad: set[int],
    accept: Callable[[T], bool] = lambda item: True,
    what: str = "image",
) -> tuple[T, int] | None:
    """Draw random indices in ``[0, n)`` until one loads and is accepted; ``None`` if none does.

    Unreadable items are reported once and added to ``bad``. A known-bad index costs the same draw
    as finding it bad, so the result does not depend on what this process read before (the same
    output with any number of workers).
    """
    for _ in range(100 + 10 * n if n else 0):
        index = int(rng.integers(n))
        if index in bad:
            continue
        try:
            item = load(index)
        except ImageReadError as error:
            log.warning("skipping %s: %s", what, error)
            bad.add(index)
            continue
        if accept(item):
            return item, index
    return None


def read_mask(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Decode a ground-truth mask to float32 HxW in [0, 1] (any non-zero pixel is defect)."""
    path = Path(path)
    data = np.fromfile(path, dtype=np.uint8) if path.is_file() else np.zeros(0, np.uint8)
    mask = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
    if mask is None:
        raise ImageReadError(f"{path}: not a readable mask")
    if shape is not None and mask.shape != tuple(shape):
        mask = cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return (mask > 0).astype(np.float32)


def to_rgb8(image: np.ndarray, bgr: bool = False) -> np.ndarray:
    """Convert a decoded array (grey, alpha, 16-bit, float) to HxWx3 uint8 RGB."""
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif image.dtype in (np.float32, np.float64):
        scale = 255.0 if image.max(initial=0) <= 1.0 else 1.0
        image = np.clip(np.rint(image * scale), 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ValueError(f"unsupported pixel type {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim != 3 or image.shape[2] not in (2, 3, 4):
        raise ValueError(f"unsupported image shape {image.shape}")
    if image.shape[2] in (2, 4):  # composite over black using the alpha channel
        alpha = image[..., -1:].astype(np.float32) / 255.0
        colour = image[..., :-1].astype(np.float32) * alpha
        image = np.clip(np.rint(colour), 0, 255).astype(np.uint8)
        if image.shape[2] == 1:
            return cv2.cvtColor(image[..., 0], cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if bgr else np.ascontiguousarray(image)


def list_images(folder: str | Path) -> list[Path] | list[str]:
    """All image files below ``folder``, sorted (paths; URLs for a folder given as an fsspec URL);
    clear errors for a missing or empty folder."""
    store = Store(folder)
    if not store.exists():
        raise FileNotFoundError(f"input folder {folder} does not exist")
    if not store.is_dir():
        raise NotADirectoryError(f"input {folder} is not a folder")
    if store.local is not None:
        folder = store.local
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        files = [store.url(f) for f in store.files() if Path(f).suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise ValueError(f"input folder {folder} holds no images (looked for {suffixes})")
    return files


def is_mvtec_category(folder: str | Path) -> bool:
    return Store(folder).is_dir("train/good")


def normal_images_folder(folder: str | Path) -> Path | str:
    """Where a data folder's defect-free images are: ``train/good`` of an MVTec category, else the
    folder itself (a URL stays a URL)."""
    if is_mvtec_category(folder):
        return Store(folder).url("train/good") if is_url(folder) else Path(folder) / "train" / "good"
    return as_location(folder)


def normal_image_paths(folder: str | Path) -> list[Path] | list[str]:
    """Defect-free images of a data folder: ``train/good`` of an MVTec category, else every image."""
    return list_images(normal_images_folder(folder))


@dataclass(frozen=True)
class TestImage:
    """A test image of an MVTec-layout category: label 0 good, 1 defective, with its mask file."""

    path: Path
    defect: str
    mask_path: Path | None

    @property
    def label(self) -> int:
        return 0 if self.defect == "good" else 1


def mvtec_test_images(folder: str | Path, require_masks: bool = True) -> list[TestImage]:
    """The ``test/<defect>/`` images of an MVTec category with ``ground_truth/<defect>/<stem>_mask.png``
    (without ``require_masks``, a defect image without its mask has ``mask_path`` None: image labels only)."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{folder} does not exist")
    test_dir = folder / "test"
    if not test_dir.is_dir():
        raise FileNotFoundError(f"{folder} has no test/ folder (expected the MVTec AD layout)")
    images = []
    for defect_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        for path in list_images(defect_dir):
            mask = None
            if defect_dir.name != "good":
                mask = folder / "ground_truth" / defect_dir.name / f"{path.stem}_mask.png"
                if not mask.is_file():
                    if require_masks:
                        raise FileNotFoundError(f"{path}: mask {mask} is missing")
                    mask = None
            images.append(TestImage(path, defect_dir.name, mask))
    return images


class ImageFiles:
    """Lazily decoded images (a sequence of RGB arrays), e.g. the patch sources of :class:`~synth.NSA`.

    Unreadable files raise :class:`ImageReadError` when accessed; decoded images are cached.
    """

    def __init__(self, paths: list[str | Path], cache_size: int = 64) -> None:
        self.paths = [as_location(p) for p in paths]
        self.cache_size = cache_size
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        image = self._cache.get(index)
        if image is None:
            image = read_image(self.paths[index])
            if len(self._cache) >= self.cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[index] = image
        return image

    def __getstate__(self) -> dict:
        return {"paths": self.paths, "cache_size": self.cache_size, "_cache": {}}
