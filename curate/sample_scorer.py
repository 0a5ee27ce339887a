"""EAP scores of synthetic image anomalies, from pretrained backbone patch features.

Normals are represented by patch features of the defect-free images; a synthetic anomaly by the
patch features inside its mask (the anomaly is local). Whether the rest of the image is on the normal
support is judged by its own patches (:mod:`curate.support`): their distances to the nearest normal
patches against the normal images' own. The EAP's density proxy is multiplied by that support, so an
image from another domain falls to the prior however its masked region looks. Optionally
(``context_weight``) each patch also carries its image's context, the mean feature outside the mask
(for a normal patch, outside a random window around it). A sample's EAP is the mean EAP of its masked
patches, weighted by how much of each patch the mask covers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from detectors.features import PatchFeatures, to_batch
from detectors.sizing import SizeRule, resize_to
from synth.common.params import Configurable
from synth.common.random_streams import SUPPORT_PATCHES, stream

from .posterior import ExpectedAnomalyPosterior
from .support import OutsideSupport, outside_cells


@dataclass
class MaskedPatches:
    """Feature points of a batch of samples: ``points`` (P x C), the sample each belongs to (``owner``),
    its mask coverage (``weight``); per sample the ``context`` (mean feature outside the mask) and a
    ``pooled`` in-mask descriptor (for near-duplicate checks)."""

    points: torch.Tensor
    owner: torch.Tensor
    weight: torch.Tensor
    context: torch.Tensor
    pooled: torch.Tensor
    support: torch.Tensor | None = None

    def joint(self, context_scale: float) -> torch.Tensor:
        """Points with their sample's scaled context appended (P x 2C); the points alone at scale 0."""
        if context_scale == 0:
            return self.points
        return torch.cat([self.points, context_scale * self.context[self.owner]], dim=1)

    def point_support(self) -> torch.Tensor | None:
        """Each point's sample's support (see :mod:`curate.support`), or None when not judged."""
        return None if self.support is None else self.support[self.owner]


def masked_cells(coverage: torch.Tensor, min_coverage: float, max_cells: int) -> torch.Tensor:
    """Grid cells that represent a mask: those covered at least ``min_coverage``, the most covered
    first, at most ``max_cells``; a mask smaller than a cell keeps its most covered cell."""
    flat = coverage.flatten()
    order = torch.argsort(flat, descending=True, stable=True)
    keep = order[flat[order] >= min_coverage][:max_cells]
    if len(keep) == 0 and float(flat.max()) > 0:
        keep = order[:1]
    return keep


def window_around(cell: tuple[int, int], grid: tuple[int, int], rng: np.random.Generator) -> tuple[slice, slice]:
    """A random rectangle covering 1 to 30 % of the grid (aspect 1:3 to 3:1) that contains ``cell``."""
    height, width = grid
    area = rng.uniform(0.01, 0.3) * height * width
    aspect = float(np.exp(rng.uniform(np.log(1 / 3), np.log(3))))
    h = int(np.clip(round(np.sqrt(area * aspect)), 1, height))
    w = int(np.clip(round(area / h), 1, width))
    top = int(rng.integers(max(0, cell[0] - h + 1), min(cell[0], height - h) + 1))
    left = int(rng.integers(max(0, cell[1] - w + 1), min(cell[1], width - w) + 1))
    return slice(top, top + h), slice(left, left + w)


class EAPScorer(Configurable):
    """Scores synthetic anomalies (image + mask) with the Expected Anomaly Posterior.

    ``fit(normal_images)`` extracts patch features of the normals and draws the EAP subsets;
    ``score(images, masks)`` returns one EAP per sample in [0, 1]: high means a detector would surely
    call it anomalous while it stays near the normal data's support. Images are resized to one input
    shape fitted on the normals by the detectors' size rule (``image_size`` short side, ``aspect``).

    ``support_cells`` patches outside each mask (at least ``support_border`` cells away from it) judge
    whether the image is on the normal support (:mod:`curate.support`; 0 turns the test off);
    ``context_weight`` > 0 also appends the mean feature outside the mask to every point.
    """

    not_config = ("batch_size", "device")  # do not change the scores

    def __init__(
        self,
        backbone: str = "efficientnet-lite0",
        image_size: int = 256,
        aspect: str = "auto",
        max_side: int = 1024,
        n_normal_patches: int = 4096,
        max_patches: int = 16,
        min_coverage: float = 0.5,
        support_cells: int = 64,
        support_border: int = 1,
        context_weight: float = 0.0,
        n_subsets: int = 100,
        k: int | str = "auto",
        min_k: int = 5,
        prior_floor: float = 0.01,
        batch_size: int = 16,
        device: str | None = None,
        seed: int = 0,
    ) -> None:
        self.backbone = backbone
        self.image_size = image_size
        self.aspect = aspect
        self.max_side = max_side
        self.n_normal_patches = n_normal_patches
        self.max_patches = max_patches
        self.min_coverage = min_coverage
        self.support_cells = support_cells
        self.support_border = support_border
        self.context_weight = context_weight
        self.n_subsets = n_subsets
        self.k = k
        self.min_k = min_k
        self.prior_floor = prior_floor
        self.batch_size = batch_size
        self.device = device
        self.seed = seed

    @property
    def size_rule(self) -> SizeRule:
        return SizeRule(self.image_size, self.aspect, self.max_side)

    def _features(self):
        if getattr(self, "features_", None) is None:
            device = torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))
            self.features_ = PatchFeatures(self.backbone).to(device)
        return self.features_

    @torch.no_grad()
    def _feature_maps(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        model = self._features()
        device = next(model.parameters()).device
        return model(to_batch(images, self.input_shape_).to(device)).float().cpu()

    def _normal_patches(self, images: Sequence[np.ndarray], progress: bool) -> tuple[MaskedPatches, torch.Tensor, torch.Tensor]:
        """A random, equal share of patches from every normal image (a density-faithful sample) and
        the image each comes from, then ``support_cells`` other random patches of every image (the
        support's reference). A patch's context is the mean feature of its image outside a random
        window around it (1 to 30 % of the image), as a sample's context is the mean outside its mask."""
        rng = np.random.default_rng(self.seed)
        support_rng = stream(self.seed, SUPPORT_PATCHES)
        per_image = max(1, -(-self.n_normal_patches // len(images)))
        points, image_ids, context, reference = [], [], [], []
        for start in tqdm(range(0, len(images), self.batch_size), desc="EAP normals", unit="batch", disable=not progress):
            maps = self._feature_maps(images[start : start + self.batch_size])
            height, width = maps.shape[-2:]
            for offset, fmap in enumerate(maps):
                flat = fmap.flatten(1).T  # HW x C
                cells = np.sort(rng.choice(len(flat), size=min(per_image, len(flat)), replace=False))
                for cell in cells:
                    outside = torch.ones(height, width, dtype=torch.bool)
                    outside[window_around(divmod(int(cell), width), (height, width), rng)] = False
                    context.append(flat[outside.flatten()].mean(0))
                points.append(flat[torch.from_numpy(cells)])
                image_ids.append(torch.full((len(cells),), start + offset, dtype=torch.long))
                if self.support_cells:
                    chosen = support_rng.choice(len(flat), size=min(self.support_cells, len(flat)), replace=False)
                    reference.append(flat[torch.from_numpy(np.sort(chosen))])
        points, image_ids, context = torch.cat(points), torch.cat(image_ids), torch.stack(context)
        if len(points) > self.n_normal_patches:
            keep = torch.from_numpy(np.sort(rng.choice(len(points), self.n_normal_patches, replace=False)))
            points, image_ids, context = points[keep], image_ids[keep], context[keep]
        owner = torch.arange(len(points))
        return MaskedPatches(points, owner, torch.ones(len(points)), context, context), image_ids, reference

    def masked_patches(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> MaskedPatches:
        """Feature points inside each sample's mask (a sample with an empty mask has none), and each
        sample's support judged from its patches outside the mask."""
        maps = self._feature_maps(images)
        grid = maps.shape[-2:]
        points, owner, weight, context, pooled, outside_points, outside_owner = [], [], [], [], [], [], []
        for i, (fmap, mask) in enumerate(zip(maps, masks)):
            resized = resize_to(np.clip(np.asarray(mask, np.float32), 0.0, 1.0), self.input_shape_)
            coverage = F.adaptive_avg_pool2d(torch.from_numpy(resized)[None, None], grid)[0, 0]
            cells = masked_cells(coverage, self.min_coverage, self.max_patches)
            flat = fmap.flatten(1).T  # HW x C
            chosen = flat[cells]
            w = coverage.flatten()[cells]
            points.append(chosen)
            owner.append(torch.full((len(cells),), i, dtype=torch.long))
            weight.append(w)
            pooled.append((chosen * w[:, None]).sum(0) / w.sum() if len(cells) else torch.zeros(flat.shape[1]))
            outside = coverage.flatten() == 0
            context.append(flat[outside].mean(0) if outside.any() else flat.mean(0))
            if self.support_cells:
                kept = outside_cells(coverage, self.support_border, self.support_cells)
                outside_points.append(flat[kept])
                outside_owner.append(torch.full((len(kept),), i, dtype=torch.long))
        support = None
        if self.support_cells and getattr(self, "support_", None) is not None:
            statistic = self.support_.statistic(torch.cat(outside_points), torch.cat(outside_owner), len(maps))
            support = self.support_.support(statistic)
        return MaskedPatches(
            torch.cat(points), torch.cat(owner), torch.cat(weight), torch.stack(context), torch.stack(pooled), support,
        )

    def fit(self, normal_images: Sequence[np.ndarray], anomalies: Iterable | None = None, progress: bool = True) -> "EAPScorer":
        """Normal patch features and the EAP subsets; ``anomalies`` (objects with ``image`` and ``mask``,
        e.g. a few real defects) count as labelled anomalies: they set the prior and the ball size."""
        if len(normal_images) < 2:
            raise ValueError(f"EAP scoring needs at least 2 normal images, got {len(normal_images)}")
        for name in ("support_cells", "support_border"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {getattr(self, name)!r}")
        self.input_shape_ = self.size_rule.shape_for([np.shape(image)[:2] for image in normal_images])
        normals, image_ids, reference = self._normal_patches(list(normal_images), progress)
        self.support_ = None
        if self.support_cells:
            cell_images = torch.cat([torch.full((len(r),), i, dtype=torch.long) for i, r in enumerate(reference)])
            self.support_ = OutsideSupport().fit(normals.points, image_ids, torch.cat(reference), cell_images)
        # the context weighs as much as the patch: equal mean per-channel spread over the normals
        spread = float(normals.points.std(0).mean()) / max(float(normals.context.std(0).mean()), 1e-12)
        self.context_scale_ = self.context_weight * spread
        labelled = None
        anomalies = list(anomalies or [])
        if anomalies:
            labelled = self.masked_patches([a.image for a in anomalies], [a.mask for a in anomalies]).joint(self.context_scale_)
        self.eap_ = ExpectedAnomalyPosterior(
            n_subsets=self.n_subsets, k=self.k, min_k=self.min_k, prior_floor=self.prior_floor, seed=self.seed,
        ).fit(normals.joint(self.context_scale_), labelled, groups=image_ids)
        return self

    def score_patches(self, patches: MaskedPatches, n_samples: int) -> np.ndarray:
        """Per-sample EAP: the coverage-weighted mean of the EAP of its patches (NaN without patches)."""
        if not hasattr(self, "eap_"):
            raise RuntimeError("call fit(normal_images) before scoring")
        if len(patches.points):
            values = torch.from_numpy(self.eap_.posterior(patches.joint(self.context_scale_), patches.point_support()))
        else:
            values = torch.zeros(0, dtype=torch.float64)
        weights = patches.weight.double()
        total = torch.zeros(n_samples, dtype=torch.float64).index_add_(0, patches.owner, values * weights)
        norm = torch.zeros(n_samples, dtype=torch.float64).index_add_(0, patches.owner, weights)
        out = (total / norm).numpy()
        out[norm.numpy() == 0] = np.nan
        return out

    def score(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray], progress: bool = False) -> np.ndarray:
        """EAP of each (image, mask) sample; NaN where the mask is empty."""
        if len(images) != len(masks):
            raise ValueError(f"{len(images)} images but {len(masks)} masks")
        if not hasattr(self, "eap_"):
            raise RuntimeError("call fit(normal_images) before scoring")
        out = []
        for start in tqdm(range(0, len(images), self.batch_size), desc="EAP", unit="batch", disable=not progress):
            batch = slice(start, start + self.batch_size)
            patches = self.masked_patches(images[batch], masks[batch])
            out.append(self.score_patches(patches, len(images[batch])))
        return np.concatenate(out) if out else np.zeros(0)
