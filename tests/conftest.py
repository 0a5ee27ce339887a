from pathlib import Path

import cv2
import numpy as np
import pytest


@pytest.fixture(autouse=True)
def threads_stay_put():
    """A command run in this process makes its thread count follow the machine's load; the tests
    after it compare runs bit for bit, so the count stops following when the test ends."""
    yield
    from synth.common import threads

    threads._watch.owner = None


def write_images(folder: Path, images: list[np.ndarray], prefix: str) -> list[Path]:
    """Write images as ``folder/<prefix><k>.png`` and return their paths."""
    folder.mkdir(parents=True)
    paths = [folder / f"{prefix}{k}.png" for k in range(len(images))]
    for path, image in zip(paths, images):
        cv2.imwrite(str(path), image)
    return paths


def write_rgb(path: Path, image: np.ndarray) -> None:
    """Write an RGB image as PNG, making its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def textured(height: int, width: int, seed: int = 0, grey: bool = False) -> np.ndarray:
    """A busy test image: smooth gradients plus noise, so almost any change alters pixels."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = 90 + 60 * np.sin(x / 7.0) + 40 * np.cos(y / 5.0)
    channels = [base + rng.normal(0, 12, (height, width)) + 25 * c for c in range(1 if grey else 3)]
    image = np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8)
    return image[..., 0] if grey else image


def smooth(seed: int, size: int = 64) -> np.ndarray:
    """A calm normal image: a soft gradient with faint noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    base = 120 + 20 * np.sin((x + seed) / 11.0) + 15 * np.cos((y - seed) / 13.0)
    image = base[..., None] + rng.normal(0, 3, (size, size, 3)) + np.array([10, 0, -10])
    return np.clip(image, 0, 255).astype(np.uint8)


def with_defect(image: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An obvious defect: a dark scratch-like blob."""
    rng = np.random.default_rng(seed)
    out = image.copy()
    mask = np.zeros(image.shape[:2], np.float32)
    y, x = rng.integers(8, image.shape[0] - 20, 2)
    out[y : y + 12, x : x + 6] = rng.integers(0, 40)
    mask[y : y + 12, x : x + 6] = 1
    return out, mask


@pytest.fixture
def image():
    return textured(96, 128)


@pytest.fixture
def normals(tmp_path) -> list[Path]:
    """Five textured normal images of different sizes, as files."""
    return write_images(tmp_path / "normal", [textured(48 + 8 * k, 64, seed=k) for k in range(5)], "img_")


def mix(paths):
    """The default mix of generators, its sources read from ``paths``."""
    from synth import ImageFiles, build_generator

    return build_generator("mix", sources=ImageFiles(paths))


def folder_bytes(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` by relative path: equal dicts are byte-identical folders."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def _isolated_hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
