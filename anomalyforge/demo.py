"""The demo data a recipe can name instead of a folder (``data.normals: elpv`` or ``embedded``).

- ``elpv``: electroluminescence images of monocrystalline solar cells from the ``elpv-dataset``
  package (Buerhop-Lutz et al., "A Benchmark for Visual Identification of Defective Solar Cells in
  Electroluminescence Imagery", EU PVSEC 2018; Deitsch et al., Solar Energy 2019), installed with
  ``pip install "anomalyforge[demo]"``. Real defects with image labels: the main demo.
- ``embedded``: defect-free texture tiles cut from photos bundled with scikit-image; no defects, so
  a run on them can only be checked on synthetic anomalies.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from synth.common.files import link_file
from synth.common.random_streams import RECIPE_DEMO_CELLS, stream

DEMO_TEXTURES = ("brick", "grass", "gravel")
EMBEDDED_TILE = 128  # the bundled photos cut into 48 tiles of 128 px for a recipe

ELPV_PACKAGE = "elpv_dataset"
INSTALL_HINT = 'pip install "anomalyforge[demo]" (or pip install elpv-dataset)'
# The solar-cell subset: cells of one type, seeded. Sized so that the whole demo runs in about two
# minutes on a 2-core CPU; 100 good test cells resolve a false-reject rate to 1 %.
CELL_TYPE = "mono"
N_TRAIN_CELLS = 150
N_TEST_GOOD_CELLS = 100
N_TEST_DEFECTIVE_CELLS = 100
DEFECTIVE = "defective"  # the test folder of the cells labelled defective with probability 1


class DemoDataMissing(RuntimeError):
    """The package that holds a demo's images is not installed."""


# -- texture tiles ---------------------------------------------------------------------------------
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


# -- solar cells -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    """One labelled cell of the elpv data: its image file, the experts' defect probability, its type."""

    path: Path
    probability: float
    type: str


def elpv_root() -> Path:
    """The folder of the installed elpv data (``labels.csv`` and ``images/``)."""
    spec = importlib.util.find_spec(ELPV_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DemoDataMissing(f"the solar-cell demo data is not installed: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def read_cells(root: str | Path) -> list[Cell]:
    """The cells listed in ``root/labels.csv`` (lines ``images/cellNNNN.png probability type``)."""
    root = Path(root)
    labels = root / "labels.csv"
    cells = []
    for number, line in enumerate(labels.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            path, probability, kind = line.split()
            cells.append(Cell(root / path, float(probability), kind))
        except ValueError:
            raise ValueError(f"{labels}, line {number}: expected 'path probability type', got {line!r}") from None
    return cells


def split_cells(cells: list[Cell], seed: int) -> dict[str, list[Cell]]:
    """The seeded demo subset of one cell type: training and test cells labelled defect-free
    (probability 0, apart), and test cells labelled defective (probability 1). Cells the experts
    were unsure of (1/3, 2/3) are left out."""
    good = [c for c in cells if c.type == CELL_TYPE and c.probability == 0.0]
    defective = [c for c in cells if c.type == CELL_TYPE and c.probability == 1.0]
    if len(good) < N_TRAIN_CELLS + N_TEST_GOOD_CELLS or len(defective) < N_TEST_DEFECTIVE_CELLS:
        raise ValueError(f"the elpv labels list {len(good)} good and {len(defective)} defective {CELL_TYPE} cells; the demo "
                         f"needs {N_TRAIN_CELLS + N_TEST_GOOD_CELLS} and {N_TEST_DEFECTIVE_CELLS}")
    rng = stream(seed, RECIPE_DEMO_CELLS)
    good = [good[i] for i in rng.permutation(len(good))]
    defective = [defective[i] for i in rng.permutation(len(defective))]
    return {
        "train/good": good[:N_TRAIN_CELLS],
        "test/good": good[N_TRAIN_CELLS : N_TRAIN_CELLS + N_TEST_GOOD_CELLS],
        f"test/{DEFECTIVE}": defective[:N_TEST_DEFECTIVE_CELLS],
    }


def write_solar_cells(folder: str | Path, seed: int, root: str | Path | None = None) -> tuple[Path, Path]:
    """The demo subset as an MVTec-layout folder (``train/good``, ``test/good``, ``test/defective``;
    image labels only, no ``ground_truth``), linked or copied from the installed data. Returns the
    training folder and the test folder."""
    folder = Path(folder)
    for part, cells in split_cells(read_cells(root if root is not None else elpv_root()), seed).items():
        for cell in cells:
            link_file(cell.path, folder / part / cell.path.name)
    return folder / "train" / "good", folder


# -- what a recipe can name ------------------------------------------------------------------------
@dataclass(frozen=True)
class DemoData:
    """Data a recipe names instead of a folder: where it comes from, how to lay it out in a run."""

    description: str
    preset: str
    write: Callable[[Path, int], tuple[Path, Path | None]]  # (folder, seed) -> training folder, test folder (None: none)
    check: Callable[[], object] = lambda: None  # raises DemoDataMissing when the data is not installed


def _write_tiles(folder: Path, seed: int) -> tuple[Path, None]:
    return write_demo_images(folder, tile=EMBEDDED_TILE)[0].parent, None


DEMO_DATA = {
    "elpv": DemoData(
        "electroluminescence images of mono solar cells (elpv-dataset): good cells for training, held-back good "
        "cells and cells labelled defective for the test", "texture", write_solar_cells,
        lambda: elpv_root(),  # looked up when called: tests stand a small folder in for the package
    ),
    "embedded": DemoData("the embedded demo tiles (scikit-image texture photos)", "texture", _write_tiles),
}
