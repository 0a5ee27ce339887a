"""The default detector: a normal memory bank and a head trained on synthetic anomalies, fused.

Two signals, each strong where the other is weak:

- the memory (PatchCore, Roth et al. 2022): each patch's distance to its nearest normal patch. It
  needs no anomaly and flags anything unlike the normals, but treats every feature direction alike;
- a segmentation head trained on synthetic anomalies, which sees each patch's feature, its
  discrepancy to the nearest normal patch (feature minus that patch: the memory information of
  MemSeg, Yang et al. 2023, and DeSTSeg's feature comparison, Zhang et al. 2023) and the distance.
  A context branch (dilated convolutions, ``detectors.head``) lets a patch inside a large defect see
  the defect's edge. It learns which discrepancies matter, but only from anomalies that are not the
  real ones.

The anomaly map is a late fusion of the two, each standardised on held-out normal images:
``z_memory + w * z_head``. How much the head is trusted (``w``, one value for the map and one for the
image score) is chosen without any real defect: on held-out normal images and synthetic anomalies
made on them, leaving each generator out of the head's training in turn and scoring its anomalies
(leave-one-generator-out), so that the head is rewarded only for what carries over to anomalies of a
kind it has not seen. ``w`` is the smallest weight within 0.002 of the best mean validation AUROC,
the mean over the generators whose curve moves by that much (one found as well at every weight says
nothing about the weight, and would only flatten the mean). A head that does not generalise falls
back to the memory.

A few real defects (``fit(shots=...)``) are transplanted onto the normal images
(:class:`synth.DefectTransplant`), as many as one generator makes, the shots dealt into two halves
(``transplant-a``, ``transplant-b``) that are left out in turn like any generator. The real defects
themselves are scored too: each half with the heads trained without its transplants, against the
held-out normals, and the curves are recorded (``fusion["shots"]``), a check on real defects that
no head was trained on. They weigh ``shot_share`` in the choice of the weights (less with fewer than
``SHOTS_FOR_FULL_SHARE`` shots, so that a few cannot decide alone, and not at all where their curve is
flat); by default nothing: a few real defects are often all found whatever the weight, and before
flat curves were left out, blending them in pulled the choice towards the memory alone and cost
pixel AP on every category measured (docs/measurements.md). They never train a head.

The real defects' own patches also make a memory of known defects (``detectors.defect_memory``): a
patch nearer a known defect than any normal patch raises the image score. Its weight in the image
score is chosen on the real defects as the head weights are on the synthetic ones: each half, and
its transplants on held-out normals, is scored with the heads that did not see its transplants and
against a memory of the other half's patches, among the held-out normals; 0 where those curves are
flat (a few real defects are often found at every weight), and scaled down with fewer than
``SHOTS_FOR_FULL_SHARE`` shots. It serves the image score only, which the shots did not reach where
the image head's weight is 0 (docs/measurements.md). In the map, with a weight chosen the same way on
pixel AUROC, it was chosen on one seed of six (screw, magnetic_tile) and there raised pixel AP but
lowered pixel AUROC and AU-PRO (docs/measurements.md), so it is not there.

The image score is the mean of the top 1 % of a second fused map, ``z_memory + w_image * z_image``,
whose head sees only the distance map: a learned spatial filter of the memory's evidence. Trained on
the same synthetic anomalies, it cannot fit their appearance, only the shape of the memory's
response to them, and it found more of the real defective images than the head that sees the
features (docs/measurements.md); its blurrier map is why the pixel map keeps the feature head.

Training normals are split in two folds, each with its own memory bank: a training sample's
discrepancy is measured against the other fold's bank, so that it is never compared with its own
source image, as a test image never is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from synth.common.mask_windows import start_range
from synth.common.random_streams import HYBRID_PARTS, HYBRID_TRANSPLANTS, HYBRID_UNKNOWN_SOURCE, epoch_generator, stream
from synth.registry import parse_weights
from synth.shots import DefectShot, shot_halves

from .base import Anomaly
from .defect_memory import defect_bank, defect_evidence
from .features import PatchFeatures, downsample_mask, gaussian_blur, patch_maps, to_batch, top_mean
from .head import (
    CONTEXT_WIDTH, HEAD_INPUTS, check_head_options, head_input, head_input_channels, is_positive_int, segmentation_head,
)
from .losses import sigmoid_focal_loss, truncated_l1_loss
from .memory import coreset_bank, nearest_maps
from .metrics import auroc
from .patch_detector import PatchDetector
from .synthetic import SyntheticAnomalies, synthesise
from .training import rank_steps, train_loop

HELD_OUT = 2  # the part of the normal images kept for calibration and selection (folds are 0 and 1)
PARTS = (0, 1, HELD_OUT)
TRANSPLANT_GROUPS = ("transplant-a", "transplant-b")  # the generators of the transplants of each half of the shots
SHOTS_FOR_FULL_SHARE = 10  # real defects whose choices count in full (shot_share, the defect memory's weight); fewer count less


@dataclass
class _FitData:
    """What a fit computes once and every head trains or is validated on."""

    part: np.ndarray  # each normal image's part: fold 0 or 1, or HELD_OUT
    pool_part: np.ndarray  # each training anomaly's part
    pool_group: np.ndarray  # each training anomaly's generator
    data: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # by kind: patch maps, residuals, distances
    masks: torch.Tensor  # the anomalies' masks on the feature grid
    shot_group: np.ndarray  # each real defect's transplant group: the head validated on it has not seen its transplants
    shot_masks: torch.Tensor  # the real defects' masks on the feature grid
    # indices of the training and held-out normal images and anomalies (derived from the parts)
    train_normals: np.ndarray = field(init=False)
    held_normals: np.ndarray = field(init=False)
    train_anomalies: np.ndarray = field(init=False)
    held_anomalies: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.train_normals, self.held_normals = np.nonzero(self.part != HELD_OUT)[0], np.nonzero(self.part == HELD_OUT)[0]
        self.train_anomalies = np.nonzero(self.pool_part != HELD_OUT)[0]
        self.held_anomalies = np.nonzero(self.pool_part == HELD_OUT)[0]


def choose_weight(weights: Sequence[float], values: Sequence[float], gain_share: float = 1.0, tolerance: float = 0.002) -> float:
    """The smallest weight whose validation AUROC comes within ``tolerance`` of the best, or reaches
    ``gain_share`` of the best gain over the smallest weight's (normally 0, the memory alone). The
    default is the best weight, short of gains too small to trust; ``gain_share < 1`` takes the knee
    of the curve instead, for a validation that over-rates the head (compared in docs/measurements.md)."""
    order = np.argsort(weights, kind="stable")
    weights, values = np.asarray(weights, np.float64)[order], np.asarray(values, np.float64)[order]
    best = values.max()
    target = min(values[0] + gain_share * (best - values[0]), best - tolerance)
    return float(weights[np.argmax(values >= target - 1e-9)])


def informative_curves(curves: np.ndarray, tolerance: float) -> np.ndarray:
    """Which validation curves (one row per left-out group, one column per weight) move by at least
    ``tolerance`` over the weights; all of them when none does. A group found as well at every weight
    says nothing about the weight, and averaged in it shrinks the others' differences below the
    tolerance, which then takes a smaller weight than they ask for (transplanted real defects did
    that on screw, docs/measurements.md)."""
    moving = moves(curves, tolerance)
    return moving if moving.any() else np.ones(len(moving), bool)


def moves(curves: np.ndarray, tolerance: float) -> np.ndarray:
    """Whether each validation curve (the last axis runs over the weights) moves by at least ``tolerance``."""
    curves = np.asarray(curves, np.float64)
    return curves.max(axis=-1) - curves.min(axis=-1) >= tolerance


def with_real_defects(synthetic: np.ndarray, real: np.ndarray, share: float, tolerance: float) -> np.ndarray:
    """The validation curve with the real defects' curve weighing ``share``; unchanged where the real
    defects' curve is flat, which says nothing about the weight either."""
    return (1 - share) * synthetic + share * real if moves(real, tolerance) else synthetic


def shot_trust(n_shots: int) -> float:
    """How much the choices of ``n_shots`` real defects count, from 0 to 1: a few cannot decide alone."""
    return min(1.0, n_shots / SHOTS_FOR_FULL_SHARE)


def weight_from_shots(weights: Sequence[float], curve: Sequence[float], n_shots: int, gain_share: float = 1.0, tolerance: float = 0.002) -> float:
    """The weight that real defects' validation curve asks for (:func:`choose_weight`), 0 where the
    curve is flat (it says nothing about the weight), scaled by :func:`shot_trust`: a few real defects
    move the weight from 0 part of the way only."""
    if not moves(np.asarray(curve), tolerance):
        return 0.0
    return choose_weight(weights, curve, gain_share, tolerance) * shot_trust(n_shots)


def training_windows(
    masks: torch.Tensor | None, index: torch.Tensor, cells: tuple[int, int], grid: tuple[int, int], generator: torch.Generator,
) -> list[tuple[slice, slice]]:
    """One window of ``cells`` on the feature grid per sample, placed at random; with ``masks`` (an
    anomalous sample's), a window holds one of its anomaly's cells drawn at random, anywhere in the
    window, so that the heads see anomalies at their edges as often as whole."""
    out = []
    for i in index.tolist():
        positive = masks[i, 0].nonzero() if masks is not None else torch.empty(0, 2, dtype=torch.long)
        cell = positive[int(torch.randint(len(positive), (1,), generator=generator))] if len(positive) else None
        starts = []
        for axis, (size, n) in enumerate(zip(cells, grid)):
            low, high = (0, n - size) if cell is None else start_range(int(cell[axis]), int(cell[axis]) + 1, size, n)
            starts.append(low + int(torch.randint(high - low + 1, (1,), generator=generator)))
        out.append((slice(starts[0], starts[0] + cells[0]), slice(starts[1], starts[1] + cells[1])))
    return out


def in_windows(maps: torch.Tensor, index: torch.Tensor, windows: list[tuple[slice, slice]]) -> torch.Tensor:
    """Each indexed sample's map (n x C x h x w) cut to its window."""
    return torch.stack([maps[int(i)][:, rows, cols] for i, (rows, cols) in zip(index, windows)])


def describe_fusion(fusion: dict[str, Any] | None) -> str:
    """The chosen head weights and what they mean, in a sentence for ``train``'s output and reports."""
    chosen = (fusion or {}).get("chosen")
    if not chosen:
        return ""
    w_map, w_image = float(chosen["map"]), float(chosen["image"])
    w_defect = float(chosen.get("defect_memory", 0.0))
    known = (f"; a memory of the {fusion['defect_memory']['n']} real defects' patches weighs {w_defect:g} in the image score"
             if w_defect > 0 else "")
    if w_map == 0 and w_image == 0 and w_defect == 0:
        return ("head weights 0 (map) and 0 (image score): the synthetic anomalies did not improve on the normal memory "
                "for this data, so the detector scores as a normal-only kNN memory does")
    how = "chosen on held-out normals and synthetic anomalies" if fusion.get("method") == "leave-one-generator-out" else "fixed"
    flat = [f"{', '.join(groups)} ({'map' if key == 'map' else 'image score'})"
            for key, groups in (fusion.get("flat") or {}).items() if groups]
    return (f"head weight {w_map:g} in the map and {w_image:g} in the image score ({how}; 0: the normal memory alone, "
            "higher: the head trained on synthetic anomalies counts more)"
            + (f"; found as well at every weight, so left out of the choice: {'; '.join(flat)}" if flat else "") + known)


def mean_and_spread(values: torch.Tensor) -> torch.Tensor:
    """The standardisation of a score map on held-out normal images: its mean and spread."""
    return torch.stack([values.mean(), values.std().clamp_min(1e-6)])


class _HybridModel(nn.Module):
    def __init__(
        self, features: PatchFeatures, head: nn.Module, bank_size: int, head_inputs: Sequence[str] = HEAD_INPUTS,
        image_head: nn.Module | None = None, image_head_inputs: Sequence[str] = (),
    ):
        super().__init__()
        self.features = features
        self.head_inputs = tuple(head_inputs)
        channels = features.channels
        self.head = head
        # a second head for the image score only (None: the image score fuses the map's head)
        self.image_head = image_head
        self.image_head_inputs = tuple(image_head_inputs)
        if image_head is not None:
            self.register_buffer("image_head_stats", torch.tensor([0.0, 1.0]))
        self.register_buffer("memory_bank", torch.zeros(bank_size, channels))
        self.register_buffer("distance_scale", torch.ones(()))
        # standardisation of the memory distance and of the head's logit on held-out normal patches
        self.register_buffer("memory_stats", torch.tensor([0.0, 1.0]))
        self.register_buffer("head_stats", torch.tensor([0.0, 1.0]))
        # head weight in the anomaly map and in the image score
        self.register_buffer("fusion_weights", torch.zeros(2))

    def head_input(self, names: Sequence[str], patches: torch.Tensor, residual: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
        """A head's input: the named maps, the distance in units of the training normals' median."""
        return head_input(names, patches, residual, distance / self.distance_scale)

    def head_logits(self, patches: torch.Tensor, residual: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_input(self.head_inputs, patches, residual, distance))

    def image_head_logits(self, patches: torch.Tensor, residual: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
        return self.image_head(self.head_input(self.image_head_inputs, patches, residual, distance))

    def standardised_image_head(self, patches: torch.Tensor, residual: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
        """The image head's logit map, standardised on held-out normals as ``standardised`` does the map head's."""
        return (self.image_head_logits(patches, residual, distance) - self.image_head_stats[0]) / self.image_head_stats[1]

    def set_defect_memory(self, bank: torch.Tensor, stats: torch.Tensor, weight: float) -> None:
        """Add a memory of known defects' patches to the image score (``detectors.defect_memory``), its
        evidence standardised on held-out normals (``stats``) and weighted by ``weight``."""
        device = self.memory_bank.device
        self.register_buffer("defect_bank", bank.float().to(device))
        self.register_buffer("defect_stats", stats.float().to(device))
        self.register_buffer("defect_weight", torch.tensor(float(weight), device=device))

    @property
    def has_defect_memory(self) -> bool:
        return "defect_bank" in self._buffers

    def standardised(self, distance: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            (distance - self.memory_stats[0]) / self.memory_stats[1],
            (logits - self.head_stats[0]) / self.head_stats[1],
        )

    def fuse(self, patches: torch.Tensor, distance: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused maps for the pixels and for the image score (B x 1 x h x w) from the patch maps and
        their nearest-normal distance and residual."""
        memory, head = self.standardised(distance, self.head_logits(patches, residual, distance))
        w_map, w_image = self.fusion_weights
        image_head = head if self.image_head is None else self.standardised_image_head(patches, residual, distance)
        image = memory + w_image * image_head
        if self.has_defect_memory:
            evidence = (defect_evidence(patches, distance, self.defect_bank) - self.defect_stats[0]) / self.defect_stats[1]
            image = image + self.defect_weight * evidence
        return memory + w_map * head, image

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch maps (B x C x h x w) -> fused maps for the pixels and for the image score (B x 1 x h x w)."""
        distance, residual = nearest_maps(patches, self.memory_bank)
        return self.fuse(patches, distance, residual)


class HybridDetector(SyntheticAnomalies, PatchDetector):
    """Normal memory + a head trained on synthetic anomalies, fused with weights chosen on held-out
    normals and synthetic anomalies (see the module docstring).

    Args:
        anomalies_per_image: synthetic anomalies made per normal image.
        bank_size: memory bank size (greedy coreset over all normal patches, in parts).
        candidates_per_centre: the coreset's greedy search looks at most this many patches per centre.
        holdout: share of the normal images kept out of the memory and the head's training, for the
            standardisation and the choice of the fusion weights (at least one image).
        fusion_weights: the head weights to choose from; ``0`` is the memory alone.
        select: ``"leave-one-generator-out"`` (default; needs two generators) or ``"fixed"``
            (``fixed_weight`` for both the map and the image score).
        shot_share: the weight of the real defects given to ``fit`` in the choice of the fusion weights
            (the synthetic anomalies' validation weighs the rest), reached with ``SHOTS_FOR_FULL_SHARE``
            shots and scaled down with fewer; 0 (default): they are scored and recorded only.
        defect_memory: with real defects given to ``fit`` (at least two, so that each half can be
            checked against the other's), add a memory of their patches to the image score
            (``detectors.defect_memory``), weighted as the real defects choose (see the module
            docstring); a number: that weight, whatever they choose (their curves are still recorded);
            ``False``: the shots reach the detector through their transplants only.
        gain_share, tolerance: the chosen weight is the smallest one whose validation AUROC (mean over
            the left-out generators whose curve moves by ``tolerance``) comes within ``tolerance`` of
            the best, or reaches ``gain_share`` of the best gain over the memory alone
            (``gain_share=0.5``: the knee of the curve).
        hidden: width of the head's per-patch branch.
        head_inputs: what the head sees of each patch, any of ``"feature"``, ``"residual"`` (feature
            minus the nearest normal patch) and ``"distance"`` (to it); all three by default.
        head_context: dilations of the head's context branch (3x3 convolutions on the feature grid,
            so that a patch inside a large defect sees its edge); empty: a per-patch head alone.
        context_width: channels of the context branch.
        image_head_inputs: inputs of a second head whose map gives the image score (the fused map's
            top-k mean), trained on the same anomalies; ``None``: the image score uses the map's head.
            By default it sees the distance alone, so it learns a spatial filter of the memory's map:
            it cannot fit the synthetic anomalies' appearance, and finds more real defective images
            than the head that sees the features (docs/measurements.md).
        image_hidden: width of that head's per-patch branch (its input is one channel by default).
        epochs, steps_per_epoch, lr: head training (each step: half normal, half anomalous images). An
            epoch is one pass over the training anomalies, at most ``steps_per_epoch`` steps: a few
            dozen images do not need the steps that hundreds do.
        train_crop: side, in input pixels, of the windows of the feature maps the heads train on (an
            anomalous sample's window holds part of its anomaly); ``None``: whole maps. The heads are
            convolutional and see 14 grid cells (112 px) each way, so a 256 px window teaches them
            what a whole 256x624 map would at 0.4 times the cost of a step.
        selection_epochs: epochs of the heads trained only to choose the fusion weights (one per
            left-out generator), at most ``epochs``; ``None``: half of ``epochs``, rounded up (the
            earlier default). They only have to rank the candidate weights: the fits with 3 chose the
            weights the fits with 5 did in 10 of the 12 benchmark fits (docs/measurements.md).
        top_k: share of the map's pixels whose mean is the image score.
        sigma: Gaussian smoothing of the upsampled map, in pixels.
        synth, synth_options: see :class:`~detectors.synthetic.SyntheticAnomalies`.
        backbone, stages, tiling and the size rule: see :class:`~detectors.patch_detector.PatchDetector`.
    """

    kind = "hybrid"
    holds_out_normals = True
    uses_shots = True
    exportable = True

    def __init__(
        self,
        anomalies_per_image: int = 2,
        bank_size: int = 10000,
        candidates_per_centre: int = 20,
        holdout: float = 0.2,
        fusion_weights: Sequence[float] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0),
        select: str = "leave-one-generator-out",
        fixed_weight: float = 1.0,
        gain_share: float = 1.0,
        tolerance: float = 0.002,
        shot_share: float = 0.0,
        defect_memory: bool | float = True,
        hidden: int = 256,
        head_inputs: Sequence[str] = HEAD_INPUTS,
        head_context: Sequence[int] = (2, 4, 8),
        context_width: int = CONTEXT_WIDTH,
        image_head_inputs: Sequence[str] | None = ("distance",),
        image_hidden: int = 32,
        epochs: int = 10,
        selection_epochs: int | None = 3,
        steps_per_epoch: int = 30,
        lr: float = 1e-3,
        train_crop: int | None = 256,
        top_k: float = 0.01,
        sigma: float = 4.0,
        mixed_precision: str = "no",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if not 0.0 < holdout < 1.0:
            raise ValueError(f"holdout must be in (0, 1), got {holdout}")
        if not fusion_weights or min(fusion_weights) < 0:
            raise ValueError(f"fusion_weights must be non-negative numbers, got {fusion_weights}")
        if select not in ("leave-one-generator-out", "fixed"):
            raise ValueError(f"select must be 'leave-one-generator-out' or 'fixed', got {select!r}")
        if not 0.0 < gain_share <= 1.0:
            raise ValueError(f"gain_share must be in (0, 1], got {gain_share}")
        if not 0.0 <= tolerance < 1.0:
            raise ValueError(f"tolerance must be in [0, 1), got {tolerance}")
        if not 0.0 <= shot_share <= 1.0:
            raise ValueError(f"shot_share must be in [0, 1], got {shot_share}")
        if not (isinstance(defect_memory, bool) or (isinstance(defect_memory, (int, float)) and defect_memory >= 0)):
            raise ValueError(f"defect_memory must be true, false or a non-negative weight, got {defect_memory!r}")
        if not 0.0 < top_k <= 1.0:
            raise ValueError(f"top_k must be in (0, 1], got {top_k}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be at least 2 (half normal, half anomalous), got {self.batch_size}")
        check_head_options(head_inputs, head_context, context_width)
        if image_head_inputs is not None:
            check_head_options(image_head_inputs, head_context, context_width, "image_head_inputs")
        if not is_positive_int(image_hidden):
            raise ValueError(f"image_hidden must be a positive integer, got {image_hidden!r}")
        if train_crop is not None and not is_positive_int(train_crop):
            raise ValueError(f"train_crop must be a positive integer (pixels) or None, got {train_crop!r}")
        if selection_epochs is not None and not is_positive_int(selection_epochs):
            raise ValueError(f"selection_epochs must be a positive integer or None, got {selection_epochs!r}")
        self.anomalies_per_image = anomalies_per_image
        self.bank_size = bank_size
        self.candidates_per_centre = candidates_per_centre
        self.holdout = holdout
        self.fusion_weights = [float(w) for w in fusion_weights]
        self.select = select
        self.fixed_weight = fixed_weight
        self.gain_share = gain_share
        self.tolerance = tolerance
        self.shot_share = shot_share
        self.defect_memory = defect_memory
        self.hidden = hidden
        self.head_inputs = [str(name) for name in head_inputs]
        self.head_context = [int(d) for d in head_context]
        self.context_width = context_width
        self.image_head_inputs = None if image_head_inputs is None else [str(name) for name in image_head_inputs]
        self.image_hidden = image_hidden
        self.epochs = epochs
        self.selection_epochs = selection_epochs
        self.steps_per_epoch = steps_per_epoch
        self.lr = lr
        self.train_crop = train_crop
        self.top_k = top_k
        self.sigma = sigma
        self.mixed_precision = mixed_precision

    def _build(self) -> nn.Module:
        features = self.patch_features()
        image_head = None if self.image_head_inputs is None else self._new_head(features.channels, image=True)
        model = _HybridModel(
            features, self._new_head(features.channels), self.state_.get("bank_size", 1), self.head_inputs,
            image_head, self.image_head_inputs or (),
        )
        if self.state_.get("defect_bank_size"):  # placeholders, sized as saved; load() fills them
            model.set_defect_memory(torch.zeros(self.state_["defect_bank_size"], features.channels), torch.tensor([0.0, 1.0]), 0.0)
        return model

    def _new_head(self, channels: int, image: bool = False) -> nn.Module:
        """The map's head, or with ``image`` the image score's."""
        inputs, hidden = (self.image_head_inputs, self.image_hidden) if image else (self.head_inputs, self.hidden)
        return segmentation_head(head_input_channels(inputs, channels), hidden, self.head_context, self.context_width)

    @classmethod
    def config_from_saved(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Detectors saved before the context branch existed have the per-patch head; those saved
        before its width was an option have 64 channels; those saved before the image head existed
        score images with the map's head; those saved before ``tolerance`` chose their weights at the
        knee alone; those saved before ``train_crop`` trained their heads on whole maps."""
        return {"head_context": [], "context_width": 64, "image_head_inputs": None, "tolerance": 0.0, "train_crop": None, **config}

    # -- training ------------------------------------------------------------------------------
    def _split(self, n: int) -> np.ndarray:
        """Part of each normal image: 0 or 1 (the two training folds) or HELD_OUT."""
        if n < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 normal images (some are held out), got {n}")
        order = stream(self.seed, HYBRID_PARTS).permutation(n)
        n_held = min(n - 1, max(1, int(round(self.holdout * n))))
        part = np.empty(n, np.int64)
        part[order[:n_held]] = HELD_OUT
        part[order[n_held:]] = np.arange(n - n_held) % 2
        return part

    def _fit(
        self, images: Sequence[np.ndarray], anomalies: list[Anomaly], progress: bool, shots: Sequence[DefectShot] = (),
    ) -> None:
        device = self._torch_device()
        self.model_.to(device)
        part = self._split(len(images))
        halves = dict(zip(TRANSPLANT_GROUPS if len(shots) > 1 else ("transplant",), shot_halves(shots)))
        pool, pool_part, pool_group = self._anomaly_pool(images, anomalies, part, halves, progress)
        real = [Anomaly(shot.image, shot.mask, group) for group, half in halves.items() for shot in half]
        maps, masks = self._patch_maps({"normal": images, "anomaly": pool, "shot": real}, device, progress)
        banks = self._memory_banks(maps["normal"], part, device, progress)
        parts = {"normal": part, "anomaly": pool_part, "shot": np.full(len(real), HELD_OUT)}
        data = self._memory_inputs(maps, parts, banks, device, progress)
        shot_group = np.array([a.generator for a in real], dtype=object)
        fit = _FitData(part, pool_part, pool_group, data, masks["anomaly"], shot_group, masks["shot"])
        weights, selection = self._choose_fusion_weights(fit, progress)
        history = self._train_heads(fit, weights, progress)
        self.model_.memory_bank = torch.cat(banks).to(device)  # replaces the placeholder; load() sizes it from the state
        self._standardise(fit)
        self.model_.fusion_weights.copy_(torch.tensor(weights, dtype=torch.float32))
        defect_weight = (selection.get("defect_memory") or {}).get("weight", 0.0)
        if defect_weight > 0:
            self._add_defect_memory(fit, defect_weight)
        # image scores of the held-out normals and of the synthetic anomalies made on them, as predict
        # gives them (against the training folds' memory: held-out images are not in it), for calibration
        self.held_out_scores_ = (self._scores_of(data, "normal", fit.held_normals), self._scores_of(data, "anomaly", fit.held_anomalies))
        self.model_.cpu()
        selection["chosen"] = {"map": weights[0], "image": weights[1], "defect_memory": defect_weight}
        self.state_.update({
            "bank_size": int(len(self.model_.memory_bank)),
            "n_normal": len(images), "n_held_out": int(len(fit.held_normals)),
            "n_anomalies": int(len(fit.train_anomalies)), "n_validation_anomalies": int(len(fit.held_anomalies)),
            "n_shots": len(real),
            "defect_bank_size": int(len(self.model_.defect_bank)) if self.model_.has_defect_memory else 0,
            "fusion": selection, "loss_history": history,
        })

    def fit_record(self) -> dict[str, Any]:
        return {"fusion": self.state_.get("fusion")}

    def _anomaly_pool(
        self, images: Sequence[np.ndarray], anomalies: list[Anomaly], part: np.ndarray, halves: dict[str, list[DefectShot]],
        progress: bool,
    ) -> tuple[list[Anomaly], np.ndarray, np.ndarray]:
        """The training anomalies (those given, the synthetic ones, then the real defects' transplants,
        by half), each one's part (its source image's; one of unknown source is a training sample)
        and generator."""
        n = len(images)
        generator = self.make_generator(images)
        pool = list(anomalies)
        if generator is not None:
            pool += synthesise(images, generator, self.anomalies_per_image * n, self.seed, progress)
        # as many transplants as one generator gives: the given anomalies' and the synthetic ones' share
        n_synthetic = self.anomalies_per_image * n if generator is not None else 0
        n_generators = len({a.generator or "given" for a in anomalies}) + (len(parse_weights(self.synth, default=1.0)) if n_synthetic else 0)
        per_generator = (len(anomalies) + n_synthetic) // max(1, n_generators) or self.anomalies_per_image * n
        pool += self._transplants(images, part, halves, per_generator, progress)
        if not pool:
            raise ValueError("no training anomalies: give synth generators or pass anomalies to fit()")
        unknown = stream(self.seed, HYBRID_UNKNOWN_SOURCE).integers(0, 2, len(pool))
        pool_part = np.array([part[a.source] if a.source is not None and 0 <= a.source < n else unknown[i] for i, a in enumerate(pool)])
        pool_group = np.array([a.generator or "given" for a in pool])
        return pool, pool_part, pool_group

    def _transplants(
        self, images: Sequence[np.ndarray], part: np.ndarray, halves: dict[str, list[DefectShot]], count: int, progress: bool,
    ) -> list[Anomaly]:
        """``count`` real defects moved onto the normal images, each half's transplants a generator of
        its own (see the module docstring). Fewer transplants than images go to images drawn from the
        held-out part and the folds in proportion (at least one held out), so that every half can be
        validated."""
        from synth.transplant import DefectTransplant

        if not halves:
            return []
        count = max(1, count // len(halves))
        options = dict((self.synth_options or {}).get("transplant") or {})
        out = []
        for index, (group, half) in enumerate(halves.items()):
            rng = stream(self.seed, HYBRID_TRANSPLANTS, index)
            held, folds = rng.permutation(np.nonzero(part == HELD_OUT)[0]), rng.permutation(np.nonzero(part != HELD_OUT)[0])
            n_held = min(len(held), max(1, round(count * len(held) / len(images))))
            order = np.r_[held[:n_held], folds, held[n_held:]]
            made = synthesise([images[i] for i in order], DefectTransplant(half, **options), count, self.seed, progress,
                              keys=(HYBRID_TRANSPLANTS, index))
            out += [Anomaly(a.image, a.mask, group, int(order[a.source])) for a in made]
        return out

    def _patch_maps(
        self, samples: dict[str, Sequence[Any]], device: torch.device, progress: bool,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Patch maps (half precision, on the CPU) of each kind of sample (``"normal"``: images;
        ``"anomaly"``, ``"shot"``: :class:`Anomaly`), and the masks of the anomalous kinds on the
        feature grid."""
        features, shape = self.model_.features, self.input_shape
        maps = {"normal": patch_maps(features, samples["normal"], shape, self.batch_size, device, torch.float16, "normal features", progress)}
        grid = tuple(maps["normal"].shape[-2:])
        masks = {}
        for kind, items in samples.items():
            if kind == "normal":
                continue
            if not items:
                maps[kind], masks[kind] = maps["normal"][:0], torch.zeros(0, 1, *grid)
                continue
            maps[kind] = patch_maps(features, [a.image for a in items], shape, self.batch_size, device, torch.float16, f"{kind} features", progress)
            masks[kind] = torch.cat([downsample_mask(torch.from_numpy(np.asarray(a.mask, np.float32))[None, None], grid) for a in items])
        return maps, masks

    def _memory_banks(self, normal_maps: torch.Tensor, part: np.ndarray, device: torch.device, progress: bool) -> list[torch.Tensor]:
        """One coreset per part (fold 0, fold 1, held out), sized by the part's share of the images."""
        n, channels = len(normal_maps), normal_maps.shape[1]
        counts = np.array([(part == p).sum() for p in PARTS])
        sizes = np.maximum(1, (self.bank_size * counts) // n)
        sizes[2] = max(1, self.bank_size - sizes[0] - sizes[1])
        banks = []
        for p, size in zip(PARTS, sizes):
            index = np.nonzero(part == p)[0]
            if len(index) == 0:  # a fold without images (two normal images in all): borrow the other fold
                index = np.nonzero(part == 1 - p)[0]
            patches = normal_maps[index].permute(0, 2, 3, 1).reshape(-1, channels)
            banks.append(coreset_bank(patches.to(device), int(size), self.seed + p, self.candidates_per_centre, progress).cpu())
        return banks

    def _memory_inputs(
        self, maps: dict[str, torch.Tensor], parts: dict[str, np.ndarray], banks: list[torch.Tensor], device: torch.device,
        progress: bool,
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Each sample's patch maps with their residual and distance to the nearest normal patch of the
        bank its part is compared with (a fold with the other fold's, the held-out part with both
        folds'), by kind (``"normal"``, ``"anomaly"``, ``"shot"``); sets the distance's scale, the
        median over the training normals."""
        reference = {0: banks[1], 1: banks[0], HELD_OUT: torch.cat(banks[:2])}
        grid = maps["normal"].shape[-2:]

        def nearest(maps: torch.Tensor, parts: np.ndarray, desc: str) -> tuple[torch.Tensor, torch.Tensor]:
            distance = torch.zeros(len(maps), 1, *grid)
            residual = torch.zeros(maps.shape, dtype=torch.float16)
            for p in PARTS:
                index = np.nonzero(parts == p)[0]
                for start in tqdm(range(0, len(index), 32), desc=f"{desc} ({p})", disable=not progress or not len(index)):
                    chunk = torch.from_numpy(index[start : start + 32])
                    d, r = nearest_maps(maps[chunk].to(device), reference[p].to(device))
                    distance[chunk], residual[chunk] = d.cpu(), r.half().cpu()
            return distance, residual

        data = {}
        for kind in maps:
            distance, residual = nearest(maps[kind], parts[kind], f"{kind} memory")
            data[kind] = (maps[kind], residual, distance)
        self.model_.distance_scale.fill_(float(data["normal"][2][torch.from_numpy(parts["normal"] != HELD_OUT)].median()) or 1.0)
        return data

    def _choose_fusion_weights(self, fit: "_FitData", progress: bool) -> tuple[tuple[float, float], dict[str, Any]]:
        """The head weights of the map and of the image score, and the record of how they were chosen:
        leave one generator out of the heads' training and score its held-out anomalies."""
        selection: dict[str, Any] = {"weights": self.fusion_weights}
        groups = sorted(set(fit.pool_group[fit.train_anomalies]) & set(fit.pool_group[fit.pool_part == HELD_OUT]))
        if self.select == "fixed" or len(groups) < 2:
            selection["method"] = "fixed" if self.select == "fixed" else "fixed (fewer than two generators to leave out)"
            return (self.fixed_weight, self.fixed_weight), selection
        scores: dict[str, list] = {"map": [], "image": []}
        on_shots: dict[str, list] = {"map": [], "image": []}
        shot_images: dict[str, dict[str, tuple]] = {}  # per half of the shots: its real defects' and transplants' image maps
        epochs = min(self.selection_epochs, self.epochs) if self.selection_epochs else (self.epochs + 1) // 2
        for group in tqdm(groups, desc="select fusion", unit="generator", disable=not progress):
            kept = fit.train_anomalies[fit.pool_group[fit.train_anomalies] != group]
            head, _ = self._train_head(fit.data, fit.train_normals, kept, fit.masks, False, epochs)
            image_head = head
            if self.image_head_inputs is not None:
                image_head, _ = self._train_head(fit.data, fit.train_normals, kept, fit.masks, False, epochs, image=True)
            valid = np.nonzero((fit.pool_part == HELD_OUT) & (fit.pool_group == group))[0]
            result = self._validate(head, image_head, fit.data, fit.held_normals, valid, fit.masks)
            for key in scores:
                scores[key].append(result[key])
            transplants = (valid, result["image_parts"])
            real = np.nonzero(fit.shot_group == group)[0]
            if len(real):  # the real defects whose transplants these heads did not see
                result = self._validate(head, image_head, fit.data, fit.held_normals, real, fit.shot_masks, "shot")
                for key in on_shots:
                    on_shots[key].append(result[key])
                if self.defect_memory:
                    shot_images[group] = {"shot": (real, result["image_parts"]), "anomaly": transplants}
        kept = {key: informative_curves(value, self.tolerance) for key, value in scores.items()}
        mean = {key: np.mean(np.asarray(value)[kept[key]], axis=0) for key, value in scores.items()}
        if on_shots["map"]:
            n_validated = int(np.isin(fit.shot_group, groups).sum())
            share = self.shot_share * shot_trust(n_validated)
            real_mean = {key: np.mean(value, axis=0) for key, value in on_shots.items()}
            selection["shots"] = {
                "n": n_validated, "share": round(share, 4),
                "pixel_auroc": [round(float(v), 4) for v in real_mean["map"]],
                "image_auroc": [round(float(v), 4) for v in real_mean["image"]],
            }
            mean = {key: with_real_defects(mean[key], real_mean[key], share, self.tolerance) for key in mean}
        weights = tuple(self._choose(mean[key]) for key in ("map", "image"))
        if shot_images:
            selection["defect_memory"] = self._choose_defect_weight(fit, shot_images, weights[1])
        selection.update({
            "method": "leave-one-generator-out", "generators": [str(g) for g in groups],
            "validation_pixel_auroc": [round(float(v), 4) for v in mean["map"]],
            "validation_image_auroc": [round(float(v), 4) for v in mean["image"]],
            "flat": {key: [str(g) for g, k in zip(groups, kept[key]) if not k] for key in kept},
            "per_generator": {
                str(g): {"pixel_auroc": [round(float(v), 4) for v in scores["map"][i]],
                         "image_auroc": [round(float(v), 4) for v in scores["image"][i]]}
                for i, g in enumerate(groups)
            },
        })
        return weights, selection

    def _train_heads(self, fit: "_FitData", weights: tuple[float, float], progress: bool) -> list[float]:
        """The kept heads, trained on every training anomaly; returns the map head's loss history. A head
        whose weight is 0 is not trained: it adds nothing to the fused maps, and the detector is the
        memory alone there."""
        history: list[float] = []
        separate_image_head = self.model_.image_head is not None
        if weights[0] > 0 or (weights[1] > 0 and not separate_image_head):  # without its own head, the image score fuses the map's
            head, history = self._train_head(fit.data, fit.train_normals, fit.train_anomalies, fit.masks, progress)
            self.model_.head.load_state_dict(head.state_dict())
        if separate_image_head and weights[1] > 0:
            image_head, image_history = self._train_head(fit.data, fit.train_normals, fit.train_anomalies, fit.masks, progress, image=True)
            self.model_.image_head.load_state_dict(image_head.state_dict())
            self.state_["image_loss_history"] = image_history
        return history

    def _standardise(self, fit: "_FitData") -> None:
        """The memory's and the heads' standardisation on the held-out normals, as predict sees them
        (batch norm in eval mode)."""
        self.model_.eval()
        memory = fit.data["normal"][2][torch.from_numpy(fit.held_normals)]
        self.model_.memory_stats.copy_(mean_and_spread(memory))
        self.model_.head_stats.copy_(mean_and_spread(self._logits(self.model_.head, fit.data, fit.held_normals)))
        if self.model_.image_head is not None:
            self.model_.image_head_stats.copy_(mean_and_spread(self._logits(self.model_.image_head, fit.data, fit.held_normals, image=True)))

    def _choose(self, values: np.ndarray) -> float:
        return choose_weight(self.fusion_weights, values, self.gain_share, self.tolerance)

    def _head_batch(self, data, kind: str, index, image: bool = False, windows: list[tuple[slice, slice]] | None = None) -> torch.Tensor:
        """The head's input for these samples: their whole maps, or with ``windows`` one window each.
        A map the head does not see is not copied."""
        inputs = self.image_head_inputs if image else self.head_inputs

        def taken(position: int, name: str) -> torch.Tensor:
            if name not in inputs:
                return torch.empty(0)
            maps = data[kind][position]  # data holds the patch maps, residuals and distances in HEAD_INPUTS' order
            if windows is None:
                return maps[index].float()
            return in_windows(maps, index, windows).float()

        return self.model_.head_input(inputs, *(taken(position, name) for position, name in enumerate(HEAD_INPUTS)))

    def _window_cells(self, grid: tuple[int, int]) -> tuple[int, int] | None:
        """The training windows' size on the feature grid, or None when a window would hold the whole map."""
        if self.train_crop is None:
            return None
        side = max(1, int(np.ceil(self.train_crop / self.model_.features.stride)))
        cells = (min(side, grid[0]), min(side, grid[1]))
        return None if cells == tuple(grid) else cells

    def _epoch_steps(self, n_anomalies: int) -> int:
        """Steps per epoch: one pass over the training anomalies, at most ``steps_per_epoch``."""
        return max(1, min(self.steps_per_epoch, -(-n_anomalies // (self.batch_size // 2))))

    def _train_head(
        self, data, normals: np.ndarray, anomalies: np.ndarray, masks: torch.Tensor, progress: bool, epochs: int | None = None,
        image: bool = False,
    ) -> tuple[nn.Module, list[float]]:
        """A head (the map's, or with ``image`` the image score's) trained on these normal and anomalous
        samples for ``epochs`` (default: ``self.epochs``); returns it (on the CPU, in eval mode) and the
        mean loss per epoch. Trained channels-last: its convolutions run 1.3 times as fast on a CPU."""
        epochs = epochs or self.epochs
        torch.manual_seed(self.seed)
        head = self._new_head(self.model_.features.channels, image).to(memory_format=torch.channels_last)
        half = self.batch_size // 2
        grid = tuple(masks.shape[-2:])
        cells = self._window_cells(grid)
        steps = self._epoch_steps(len(anomalies))

        def batches(epoch: int, rank: int, world: int):
            g = epoch_generator(self.seed, epoch)
            for _ in rank_steps(steps, rank, world):
                i_n = torch.from_numpy(normals)[torch.randint(len(normals), (half,), generator=g)]
                i_a = torch.from_numpy(anomalies)[torch.randint(len(anomalies), (half,), generator=g)]
                if cells is None:
                    inputs = [self._head_batch(data, "normal", i_n, image), self._head_batch(data, "anomaly", i_a, image)]
                    target = torch.cat([torch.zeros(half, 1, *grid), masks[i_a]])
                else:
                    w_n, w_a = training_windows(None, i_n, cells, grid, g), training_windows(masks, i_a, cells, grid, g)
                    inputs = [self._head_batch(data, "normal", i_n, image, w_n), self._head_batch(data, "anomaly", i_a, image, w_a)]
                    target = torch.cat([torch.zeros(half, 1, *cells), in_windows(masks, i_a, w_a)])
                yield {"input": torch.cat(inputs).contiguous(memory_format=torch.channels_last), "mask": target}

        def step(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            logits = model(batch["input"])
            return sigmoid_focal_loss(logits, batch["mask"]) + truncated_l1_loss(logits, batch["mask"])

        optimizer = torch.optim.AdamW(head.parameters(), lr=self.lr, weight_decay=1e-5)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
        history = train_loop(
            head, optimizer, scheduler, epochs, batches, step, device=self.device,
            mixed_precision=self.mixed_precision, clip_grad_norm=1.0, progress=progress, desc="train image head" if image else "train head",
        )
        return head.cpu().eval(), history

    @torch.no_grad()
    def _logits(self, head: nn.Module, data, index: np.ndarray, kind: str = "normal", image: bool = False) -> torch.Tensor:
        """A head's logit maps (n x 1 x h x w) of training-time samples."""
        batches = (self._head_batch(data, kind, torch.from_numpy(index[s : s + 32]), image) for s in range(0, len(index), 32))
        return torch.cat([head(batch) for batch in batches])

    @torch.no_grad()
    def _validate(
        self, head: nn.Module, image_head: nn.Module, data, normals: np.ndarray, anomalies: np.ndarray, masks: torch.Tensor,
        kind: str = "anomaly",
    ) -> dict[str, Any]:
        """Pixel AUROC (with the map's head) and image AUROC (with the image score's head) of the fused
        maps for each candidate weight, on held-out normals and held-out anomalies of ``kind`` (synthetic
        ones, or the real ``"shot"``; at the feature grid, smoothing scaled to it). Each map is
        standardised on the held-out normals. Also returns, as ``"image_parts"``, the two terms of the
        image score's map: the memory's and the image head's (the map's head where there is none)."""
        memory = self._standardised_maps(None, data, normals, anomalies, kind)
        logits = self._standardised_maps(head, data, normals, anomalies, kind)
        image_logits = logits if image_head is head else self._standardised_maps(image_head, data, normals, anomalies, kind, image=True)
        target = torch.cat([torch.zeros(len(normals), 1, *masks.shape[-2:]), masks[torch.from_numpy(anomalies)]]).flatten().numpy()
        labels = np.r_[np.zeros(len(normals)), np.ones(len(anomalies))]
        sigma = self.sigma / self.model_.features.stride
        out: dict[str, Any] = {"map": [], "image": [], "image_parts": (memory, image_logits)}
        for w in self.fusion_weights:
            fused = gaussian_blur(memory + w * logits, sigma)
            fused_image = fused if image_logits is logits else gaussian_blur(memory + w * image_logits, sigma)
            out["map"].append(auroc(fused.flatten().numpy(), target))
            out["image"].append(auroc(self._image_scores(fused_image).numpy(), labels))
        return out

    def _standardised_maps(
        self, head: nn.Module | None, data, normals: np.ndarray, anomalies: np.ndarray, kind: str, image: bool = False,
    ) -> torch.Tensor:
        """The maps of held-out normals then of anomalies of ``kind``, standardised on the normals: the
        memory's distance (``head`` None) or a head's logit."""
        if head is None:
            n, a = data["normal"][2][torch.from_numpy(normals)], data[kind][2][torch.from_numpy(anomalies)]
        else:
            n, a = self._logits(head, data, normals, image=image), self._logits(head, data, anomalies, kind, image)
        mean, spread = mean_and_spread(n)
        return (torch.cat([n, a]) - mean) / spread

    @torch.no_grad()
    def _evidence(self, data, kind: str, index: np.ndarray, bank: torch.Tensor) -> torch.Tensor:
        """The defect memory's evidence maps (``detectors.defect_memory``) of training-time samples."""
        out = []
        for start in range(0, len(index), 32):
            chunk = torch.from_numpy(index[start : start + 32])
            out.append(defect_evidence(data[kind][0][chunk].float(), data[kind][2][chunk], bank))
        return torch.cat(out)

    def _choose_defect_weight(self, fit: "_FitData", shot_images: dict[str, dict[str, tuple]], w_image: float) -> dict[str, Any]:
        """The defect memory's weight in the image score. Each half of the real defects, and its
        transplants on held-out normals, is scored with the heads that did not see its transplants,
        against a memory of the other half's patches, among the held-out normals. The weight is chosen
        on the mean image AUROC of these curves as the head weights are (the curves that move; a few
        real defects are often all found at every weight, where their transplants, smaller and
        blended, are not), and scaled by the number of real defects (:func:`weight_from_shots`)."""
        sigma = self.sigma / self.model_.features.stride
        curves, names, n_validated = [], [], 0
        for group, samples in shot_images.items():
            other = np.nonzero(fit.shot_group != group)[0]
            if not len(other):
                continue
            bank = defect_bank(fit.data["shot"][0][other], fit.shot_masks[other], self.seed)
            normals = self._evidence(fit.data, "normal", fit.held_normals, bank)
            mean, spread = mean_and_spread(normals)
            for kind, (index, (memory, image)) in samples.items():
                if not len(index):
                    continue
                evidence = (torch.cat([normals, self._evidence(fit.data, kind, index, bank)]) - mean) / spread
                labels = np.r_[np.zeros(len(fit.held_normals)), np.ones(len(index))]
                base = memory + w_image * image
                curves.append([auroc(self._image_scores(gaussian_blur(base + w * evidence, sigma)).numpy(), labels)
                               for w in self.fusion_weights])
                names.append(f"{group} ({'real' if kind == 'shot' else 'transplants'})")
            n_validated += int((fit.shot_group == group).sum())
        fixed = None if isinstance(self.defect_memory, bool) else float(self.defect_memory)
        if not curves:
            return {"n": 0, "weight": 0.0}  # fewer than two real defects: nothing to check a memory against
        kept = informative_curves(np.asarray(curves), self.tolerance)
        curve = np.mean(np.asarray(curves)[kept], axis=0)
        weight = weight_from_shots(self.fusion_weights, curve, n_validated, self.gain_share, self.tolerance)
        return {"n": n_validated, "validation_image_auroc": [round(float(v), 4) for v in curve],
                "weight": round(weight, 4) if fixed is None else fixed, "method": "chosen" if fixed is None else "fixed",
                "per_half": {name: [round(float(v), 4) for v in c] for name, c in zip(names, curves)},
                "flat": [name for name, k in zip(names, kept) if not k]}

    def _add_defect_memory(self, fit: "_FitData", weight: float) -> None:
        """The defect memory of every real defect, standardised on the held-out normals."""
        bank = defect_bank(fit.data["shot"][0], fit.shot_masks, self.seed)
        stats = mean_and_spread(self._evidence(fit.data, "normal", fit.held_normals, bank))
        self.model_.set_defect_memory(bank, stats, weight)

    def _image_scores(self, maps: torch.Tensor) -> torch.Tensor:
        return top_mean(maps, self.top_k)

    @torch.no_grad()
    def _scores_of(self, data, kind: str, index: np.ndarray) -> np.ndarray:
        """Image scores of training-time samples from their stored patch maps and memory inputs."""
        device = self.model_.memory_bank.device
        scores = []
        for start in range(0, len(index), self.batch_size):
            chunk = torch.from_numpy(index[start : start + self.batch_size])
            patches, residual, distance = (t[chunk].float().to(device) for t in data[kind])
            scores.append(self.post_process(*self.model_.fuse(patches, distance, residual))[0].cpu())
        return torch.cat(scores).numpy() if scores else np.zeros(0, np.float32)

    # -- inference -----------------------------------------------------------------------------
    def _predict_batch(self, images: list[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        patches = self.model_.features(to_batch(images, self.input_shape).to(device))
        return self.post_process(*self.model_(patches))

    def export_outputs(self, patches: torch.Tensor, distance: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.post_process(*self.model_.fuse(patches, distance, residual))

    def post_process(self, fused_map: torch.Tensor, fused_image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Grid maps -> (image scores, smoothed maps at the input shape); also the exported graph's end."""
        # one map serves both when the image score fuses the map's head with the same weight
        same = (self.model_.image_head is None and not self.model_.has_defect_memory
                and bool(self.model_.fusion_weights[0] == self.model_.fusion_weights[1]))
        grids = fused_map if same else torch.cat([fused_map, fused_image], 1)
        up = F.interpolate(grids, size=self.input_shape, mode="bilinear", align_corners=False)
        up = gaussian_blur(up.reshape(-1, 1, *self.input_shape), self.sigma).reshape(-1, grids.shape[1], *self.input_shape)
        return self._image_scores(up[:, -1:]), up[:, 0:1]
