import albumentations as A
import numpy as np
import torch
from conftest import textured
from torch.utils.data import DataLoader

from synth import DRAEM, AnomalyTransform, CutPaste, SyntheticAnomalyDataset


def test_generator_as_albumentations_transform_is_seeded_and_sets_the_mask():
    image = textured(64, 80)
    mask = np.zeros((64, 80), np.float32)

    def run(seed):
        pipeline = A.Compose([A.HorizontalFlip(p=0.5), AnomalyTransform(CutPaste("normal"))], seed=seed)
        return pipeline(image=image, mask=mask)

    a, b, c = run(1), run(1), run(2)
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["mask"], b["mask"])
    assert not np.array_equal(a["image"], c["image"])
    assert a["mask"].shape == (64, 80) and a["mask"].sum() > 0
    outside = a["mask"] == 0
    # outside the anomaly the pipeline's output is the (possibly flipped) normal image
    assert any(np.array_equal(a["image"][outside], base[outside]) for base in (image, image[:, ::-1]))
    assert not any(np.array_equal(a["image"], base) for base in (image, image[:, ::-1]))

def test_transform_reports_the_drawn_sample():
    transform = AnomalyTransform(DRAEM(), p=1.0)
    pipeline = A.Compose([transform], seed=0, save_applied_params=True)
    result = pipeline(image=textured(48, 48), mask=np.zeros((48, 48), np.float32))
    sample = transform.get_applied_params()["sample"]
    assert sample.generator == "draem" and np.array_equal(sample.mask, result["mask"])
    # the label comes back as a target when the call passes one: 0 unchanged, >0 anomalous
    three_way = A.Compose([AnomalyTransform(CutPaste("3way"))], seed=0)
    labels = {three_way(image=textured(48, 48), mask=np.zeros((48, 48), np.float32), label=-1)["label"] for _ in range(30)}
    assert labels == {0, 1, 2}
    assert "label" not in pipeline(image=textured(48, 48), mask=np.zeros((48, 48), np.float32))


def test_torch_dataset_is_deterministic_across_workers_and_changes_per_epoch():
    images = [textured(40 + 4 * k, 56, seed=k) for k in range(4)]
    dataset = SyntheticAnomalyDataset(images, CutPaste("union"), size=(32, 48), seed=3, repeats=2)
    assert len(dataset) == 8

    def batches(workers):
        loader = DataLoader(dataset, batch_size=4, num_workers=workers)
        return torch.cat([b["image"] for b in loader]), torch.cat([b["mask"] for b in loader])

    img0, mask0 = batches(0)
    img2, mask2 = batches(2)
    assert img0.shape == (8, 3, 32, 48) and mask0.shape == (8, 1, 32, 48)
    assert torch.equal(img0, img2) and torch.equal(mask0, mask2)
    assert 0.0 <= img0.min() and img0.max() <= 1.0
    dataset.set_epoch(1)
    img1, _ = batches(0)
    assert not torch.equal(img0, img1)
