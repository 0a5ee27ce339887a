import numpy as np
import pytest
from skimage.measure import label as skimage_label

from detectors import au_pro, auroc, average_precision, detection_metrics, f1_max, pro_curve


def mann_whitney_auroc(scores, labels):
    pos, neg = scores[labels == 1], scores[labels == 0]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return (greater + 0.5 * ties) / (len(pos) * len(neg))


def ranked_ap(scores, labels):
    order = np.argsort(-scores)
    hits = labels[order] == 1
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return precision_at[hits].sum() / hits.sum()


def brute_f1(scores, labels):
    best = 0.0
    for t in np.unique(scores):
        pred = scores >= t
        tp = (pred & (labels == 1)).sum()
        if tp == 0:
            continue
        p, r = tp / pred.sum(), tp / (labels == 1).sum()
        best = max(best, 2 * p * r / (p + r))
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_matches_mann_whitney_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    scores = rng.integers(0, 12, 300) + labels * rng.integers(0, 4, 300)  # many ties
    assert auroc(scores, labels) == pytest.approx(mann_whitney_auroc(scores, labels), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_ap_and_f1_match_direct_definitions(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 200)
    scores = rng.normal(size=200) + labels
    assert average_precision(scores, labels) == pytest.approx(ranked_ap(scores, labels), abs=1e-12)
    assert f1_max(scores, labels) == pytest.approx(brute_f1(scores, labels), abs=1e-12)


def slow_au_pro(maps, masks, max_fpr=0.3):
    """Direct definition: at each threshold, FPR over normal pixels and the mean overlap of every
    connected region (labelled with scikit-image), then the trapezoid area up to max_fpr."""
    regions = []
    for k, mask in enumerate(masks):
        labelled = skimage_label(mask > 0, connectivity=2)
        regions += [(k, labelled == r) for r in range(1, labelled.max() + 1)]
    normal = np.concatenate([(m == 0).ravel() for m in masks])
    flat = np.concatenate([m.ravel() for m in maps])
    points = [(0.0, 0.0)]
    for t in np.unique(flat)[::-1]:
        fpr = (flat[normal] >= t).mean()
        pro = np.mean([(maps[k][region] >= t).mean() for k, region in regions])
        points.append((fpr, pro))
    x, y = np.array(points).T
    inside = x <= max_fpr
    xs, ys = list(x[inside]), list(y[inside])
    if xs[-1] < max_fpr:
        j = np.argmax(x > max_fpr)
        xs.append(max_fpr)
        ys.append(y[j - 1] + (y[j] - y[j - 1]) * (max_fpr - x[j - 1]) / (x[j] - x[j - 1]))
    area = sum((xs[i + 1] - xs[i]) * (ys[i + 1] + ys[i]) / 2 for i in range(len(xs) - 1))
    return area / max_fpr


def random_case(seed):
    rng = np.random.default_rng(seed)
    maps, masks = [], []
    for _ in range(4):
        mask = np.zeros((24, 24), np.uint8)
        for _ in range(rng.integers(0, 3)):
            y, x = rng.integers(0, 18, 2)
            mask[y : y + rng.integers(2, 6), x : x + rng.integers(2, 6)] = 1
        amap = np.round(rng.normal(size=mask.shape) + 1.5 * mask, 1)  # rounding makes ties
        maps.append(amap)
        masks.append(mask)
    masks[0][2:5, 2:5] = 1  # at least one region
    return maps, masks


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_au_pro_matches_slow_direct_computation(seed):
    maps, masks = random_case(seed)
    assert au_pro(maps, masks) == pytest.approx(slow_au_pro(maps, masks), abs=1e-9)


def test_au_pro_known_values():
    mask = np.zeros((10, 10), np.uint8)
    mask[2:4, 2:4] = 1
    mask[6:9, 6:9] = 1
    assert au_pro([mask.astype(float)], [mask]) == pytest.approx(1.0)
    # a constant map: the curve is the diagonal, whose area up to 0.3 is 0.045, i.e. 0.15 normalised
    assert au_pro([np.zeros((10, 10))], [mask]) == pytest.approx(0.15)
    fpr, overlap = pro_curve([np.zeros((10, 10))], [mask])
    assert fpr == pytest.approx([0.0, 1.0]) and overlap == pytest.approx([0.0, 1.0])


def test_regions_are_weighted_equally_not_by_size():
    mask = np.zeros((20, 20), np.uint8)
    mask[0:10, 0:10] = 1  # 100 pixels
    mask[15, 15] = 1  # 1 pixel
    amap = np.zeros((20, 20))
    amap[15, 15] = 1.0  # finds only the small region
    # at the first threshold: FPR 0, PRO 0.5 (one region of two); then the rest at FPR 1
    fpr, overlap = pro_curve([amap], [mask])
    assert overlap[1] == pytest.approx(0.5) and fpr[1] == 0.0


def test_one_class_is_an_error():
    with pytest.raises(ValueError, match="both normal and anomalous"):
        auroc(np.arange(4), np.zeros(4))
    with pytest.raises(ValueError, match="anomalous region"):
        au_pro([np.zeros((4, 4))], [np.zeros((4, 4))])


def test_detection_metrics_keys():
    maps, masks = random_case(5)
    labels = np.array([m.max() > 0 for m in masks]).astype(int)
    labels[-1] = 0 if labels.all() else labels[-1]
    masks[-1][:] = 0 if labels[-1] == 0 else masks[-1]
    scores = np.array([m.max() for m in maps])
    result = detection_metrics(scores, labels, maps, masks)
    assert set(result) == {"image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "au_pro"}
    assert all(0.0 <= v <= 1.0 for v in result.values())
