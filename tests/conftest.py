import numpy as np
import pytest


def textured(height: int, width: int, seed: int = 0, grey: bool = False) -> np.ndarray:
    """A busy test image: smooth gradients plus noise, so almost any change alters pixels."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = 90 + 60 * np.sin(x / 7.0) + 40 * np.cos(y / 5.0)
    channels = [base + rng.normal(0, 12, (height, width)) + 25 * c for c in range(1 if grey else 3)]
    image = np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8)
    return image[..., 0] if grey else image


@pytest.fixture
def image():
    return textured(96, 128)


@pytest.fixture(autouse=True)
def _isolated_hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
