"""The seeded random streams, named in one place.

Every seeded draw in the product comes from a stream derived from a component's ``seed`` and a key:
``stream(seed, KEY, ...)`` is ``numpy.random.default_rng([seed, KEY, ...])`` (a ``SeedSequence``).
Per-item streams key on the item's index alone (``stream(seed, index)``); the named keys below
set apart a component's other draws. The values are those every output so far was made with:
changing one changes every output that depends on it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# generation: the shuffled order of the source images in each cycle through them
SOURCE_CYCLE = 1 << 20
# detectors: which normal images are held out to calibrate the threshold
CALIBRATION_HOLD_OUT = 17
# the hybrid: which normal images are its own validation and folds, and the fold of an anomaly of unknown source
HYBRID_PARTS = 11
HYBRID_UNKNOWN_SOURCE = 12
# the hybrid: the transplants of the real defects given to it (one stream per half of them)
HYBRID_TRANSPLANTS = 13
# the feature discriminator: the two folds of its normals and anomalies
FEATURE_FOLDS = 7
# DRAEM (the detector): the order of each epoch's training items
DRAEM_EPOCH_ORDER = 1 << 20
# the EAP scorer: the patches of the support's reference
SUPPORT_PATCHES = 1
# recipes: the normal images held back for the check without real defects ("NORM"), and the
# synthetic anomalies made on them ("HOLD")
RECIPE_HOLD_OUT = 0x4E4F524D
RECIPE_HELD_OUT_ANOMALIES = 0x484F4C44
# recipes on the solar-cell demo data: which cells are for training and which for the test ("CELL")
RECIPE_DEMO_CELLS = 0x43454C4C
# torch generators of the training loops: one per epoch, seeded seed * EPOCH_STRIDE + epoch
EPOCH_STRIDE = 1_000_003


def stream(seed: int, *keys: int) -> np.random.Generator:
    """The stream of ``seed`` under ``keys``."""
    return np.random.default_rng([seed, *keys])


def epoch_generator(seed: int, epoch: int) -> Any:
    """The torch generator of one training epoch."""
    import torch

    return torch.Generator().manual_seed(seed * EPOCH_STRIDE + epoch)
