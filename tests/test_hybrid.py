import json

import numpy as np
import pytest

from detectors import Anomaly, HybridDetector, auroc, load_detector
from detectors.base import shot_at
from detectors.hybrid import choose_weight, informative_curves, with_real_defects
from synth import CutPaste, DefectShot

from conftest import smooth, with_defect

NORMALS = [smooth(i) for i in range(12)]
TEST_NORMALS = [smooth(100 + i) for i in range(8)]
TEST_DEFECTS = [with_defect(smooth(200 + i), i) for i in range(8)]
LABELS = np.r_[np.zeros(8), np.ones(8)]


def tiny(**kwargs) -> HybridDetector:
    options = dict(image_size=64, hidden=32, epochs=3, steps_per_epoch=4, bank_size=400, synth="draem,cutpaste", batch_size=8)
    options.update(kwargs)
    return HybridDetector(**options)


def predict(detector):
    return detector.predict(TEST_NORMALS + [image for image, _ in TEST_DEFECTS])


@pytest.fixture(scope="module")
def fitted():
    return tiny().fit(NORMALS, progress=False)


def test_hybrid_finds_defects_and_localises_them(fitted):
    prediction = predict(fitted)
    assert auroc(prediction.scores, LABELS) > 0.9
    assert prediction.maps.shape == (16, 64, 64)
    masks = np.stack([np.zeros((64, 64))] * 8 + [mask for _, mask in TEST_DEFECTS])
    assert auroc(prediction.maps.ravel(), masks.ravel()) > 0.85
    # a defect stands out of the normal images' maps (with 2 held-out normals here, the standardisation
    # does not centre new normals exactly on 0)
    assert prediction.scores[8:].min() > np.median(prediction.scores[:8]) > np.median(prediction.maps[:8])


def test_hybrid_records_how_it_chose_the_fusion(fitted):
    state = fitted.state_
    assert state["n_held_out"] == 2 and state["n_normal"] == 12  # round(0.2 * 12) images held out
    assert state["n_validation_anomalies"] > 0 and state["n_anomalies"] > 0
    fusion = state["fusion"]
    assert fusion["method"] == "leave-one-generator-out" and fusion["generators"] == ["cutpaste", "draem"]
    assert len(fusion["validation_image_auroc"]) == len(fusion["weights"]) == 6
    # the curves are the mean over the left-out generators, each recorded
    assert sorted(fusion["per_generator"]) == ["cutpaste", "draem"]
    assert_mean_of_moving_curves(fusion, fitted.tolerance)
    for key, values in (("map", fusion["validation_pixel_auroc"]), ("image", fusion["validation_image_auroc"])):
        chosen = fusion["chosen"][key]
        assert chosen in fusion["weights"]
        target = min(values[0] + fitted.gain_share * (max(values) - values[0]), max(values) - fitted.tolerance)
        assert values[fusion["weights"].index(chosen)] >= target - 1e-3  # (the curves are recorded rounded)
        assert all(v < target + 1e-3 for w, v in zip(fusion["weights"], values) if w < chosen)  # the smallest such
    assert fitted.model_.fusion_weights.tolist() == [fusion["chosen"]["map"], fusion["chosen"]["image"]]
    assert fitted.state_["bank_size"] == len(fitted.model_.memory_bank) <= 400


def assert_mean_of_moving_curves(fusion: dict, tolerance: float) -> None:
    """The validation curves are the mean over the left-out groups whose curve moves, as recorded."""
    for key, name in (("map", "pixel_auroc"), ("image", "image_auroc")):
        curves = {g: np.array(fusion["per_generator"][g][name]) for g in fusion["generators"]}
        flat = [g for g, c in curves.items() if np.ptp(c) < tolerance - 1e-3]  # (the curves are recorded rounded)
        assert set(flat) <= set(fusion["flat"][key])
        moving = [curves[g] for g in fusion["generators"] if g not in fusion["flat"][key]]
        np.testing.assert_allclose(np.mean(moving, axis=0), fusion["validation_" + name], atol=1e-3)


def test_groups_whose_curve_is_flat_do_not_decide_the_fusion_weight():
    weights = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0]
    moving = np.array([[0.90, 0.93, 0.95, 0.955, 0.950, 0.94], [0.92, 0.94, 0.950, 0.953, 0.951, 0.93]])
    flat = np.array([[0.999, 0.9992, 0.9993, 0.9993, 0.9992, 0.9991]] * 3)
    curves = np.concatenate([moving, flat])
    kept = informative_curves(curves, 0.002)
    assert kept.tolist() == [True, True, False, False, False]
    assert choose_weight(weights, curves[kept].mean(0)) == choose_weight(weights, moving.mean(0)) == 1.0
    assert choose_weight(weights, curves.mean(0)) == 0.5  # averaged in, the flat ones took a smaller weight
    assert informative_curves(flat, 0.002).all()  # none moves: every one counts
    assert informative_curves(curves, 0.0).all()  # no tolerance (checkpoints from before it): every one
    # the real defects' curve weighs its share where it moves, and nothing where it is flat
    np.testing.assert_allclose(with_real_defects(moving[0], moving[1], 0.25, 0.002), 0.75 * moving[0] + 0.25 * moving[1])
    np.testing.assert_allclose(with_real_defects(moving[0], flat[0], 0.25, 0.002), moving[0])


def test_hybrid_round_trips_and_is_deterministic(fitted, tmp_path):
    prediction = predict(fitted)
    fitted.save(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["detector"] == "hybrid" and config["state"]["input_shape"] == [64, 64]
    loaded = load_detector(tmp_path / "model")
    again = predict(loaded)
    np.testing.assert_array_equal(again.scores, prediction.scores)
    np.testing.assert_array_equal(again.maps, prediction.maps)
    refit = predict(tiny().fit(NORMALS, progress=False))
    np.testing.assert_array_equal(refit.scores, prediction.scores)
    other = predict(tiny(seed=1).fit(NORMALS, progress=False))
    assert not np.array_equal(other.scores, prediction.scores)


def test_hybrid_with_a_fixed_weight_and_ready_made_anomalies():
    generator = CutPaste("union")
    ready = []
    for i, image in enumerate(NORMALS):
        sample = generator(image, np.random.default_rng(i))
        ready.append(Anomaly(sample.image, sample.mask, "cutpaste", source=i))
    detector = tiny(synth="none", select="fixed", fixed_weight=0.0).fit(NORMALS, ready, progress=False)
    assert detector.state_["fusion"]["chosen"] == {"map": 0.0, "image": 0.0, "defect_memory": 0.0}
    assert detector.state_["fusion"]["method"] == "fixed"
    # anomalies made on held-out images are kept for validation, not training
    assert detector.state_["n_anomalies"] + detector.state_["n_validation_anomalies"] == len(ready)
    assert detector.state_["n_validation_anomalies"] == detector.state_["n_held_out"]
    # with both weights 0 the map is the memory's distance, standardised: higher where the defect is
    image, mask = TEST_DEFECTS[0]
    heat = detector.predict([image]).maps[0]
    assert heat[mask > 0].mean() > heat[mask == 0].mean() + 1.0


def test_hybrid_with_one_generator_has_nothing_to_leave_out():
    single = tiny(synth="draem", epochs=1).fit(NORMALS, progress=False)
    assert single.state_["fusion"]["method"].startswith("fixed (fewer than two generators")
    assert single.state_["fusion"]["chosen"] == {"map": 1.0, "image": 1.0, "defect_memory": 0.0}


def test_hybrid_errors_are_clear():
    with pytest.raises(ValueError, match="at least 2 normal images"):
        tiny().fit(NORMALS[:1], progress=False)
    with pytest.raises(ValueError, match="no training anomalies"):
        tiny(synth="none").fit(NORMALS, progress=False)
    with pytest.raises(ValueError, match="holdout must be in"):
        HybridDetector(holdout=1.0)
    with pytest.raises(ValueError, match="select must be"):
        HybridDetector(select="best")
    with pytest.raises(ValueError, match="fusion_weights"):
        HybridDetector(fusion_weights=(-1.0,))
    with pytest.raises(ValueError, match="gain_share must be in"):
        HybridDetector(gain_share=0.0)
    for bad in (-1.0, "yes"):
        with pytest.raises(ValueError, match="defect_memory must be true, false or a non-negative weight"):
            HybridDetector(defect_memory=bad)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="selection_epochs must be"):
            HybridDetector(selection_epochs=bad)
        with pytest.raises(ValueError, match="train_crop must be"):
            HybridDetector(train_crop=bad)


def test_a_head_whose_weight_is_zero_is_not_trained(monkeypatch):
    trained = []
    original = HybridDetector._train_head

    def record(self, *args, image=False, **kwargs):
        trained.append("image" if image else "map")
        return original(self, *args, image=image, **kwargs)

    monkeypatch.setattr(HybridDetector, "_train_head", record)
    detector = tiny(select="fixed", fixed_weight=0.0).fit(NORMALS, progress=False)
    assert trained == [] and detector.state_["loss_history"] == [] and "image_loss_history" not in detector.state_
    # the image score without its own head fuses the map's: a weight there trains the map head alone
    tiny(select="fixed", fixed_weight=1.0, image_head_inputs=None).fit(NORMALS, progress=False)
    assert trained == ["map"]


def test_an_epoch_is_one_pass_over_the_training_anomalies_at_most_steps_per_epoch():
    detector = HybridDetector(batch_size=16, steps_per_epoch=30)  # 8 anomalies a step
    assert [detector._epoch_steps(n) for n in (1, 8, 9, 44, 240, 241, 5000)] == [1, 1, 2, 6, 30, 30, 30]


def test_training_windows_hold_part_of_the_anomaly_anywhere_and_stay_on_the_grid():
    import torch

    from detectors.hybrid import training_windows

    grid, cells = (10, 26), (4, 4)
    masks = torch.zeros(3, 1, *grid)
    masks[0, 0, 0, 0] = 1  # a one-cell anomaly in a corner
    masks[1, 0, 5:7, 20:24] = 1
    masks[2, 0, 9, 25] = 1
    index = torch.tensor([0, 1, 2] * 40)
    windows = training_windows(masks, index, cells, grid, torch.Generator().manual_seed(0))
    where = set()
    for i, (rows, cols) in zip(index.tolist(), windows):
        assert 0 <= rows.start and rows.stop <= grid[0] and 0 <= cols.start and cols.stop <= grid[1]
        assert (rows.stop - rows.start, cols.stop - cols.start) == cells
        assert masks[i, 0, rows, cols].sum() > 0
        if i == 1:
            where.add((rows.start, cols.start))
    assert len(where) > 5  # not always centred the same way on the anomaly
    again = training_windows(masks, index, cells, grid, torch.Generator().manual_seed(0))
    assert again == windows
    normal = training_windows(None, torch.arange(200) % 3, cells, grid, torch.Generator().manual_seed(1))
    assert {(r.start, c.start) for r, c in normal} >= {(0, 0), (6, 22)}  # every place, corners too


def test_the_heads_train_on_windows_of_maps_larger_than_train_crop(monkeypatch):
    import detectors.hybrid as hybrid

    shapes = []
    original = hybrid.train_loop

    def record(model, optimizer, scheduler, epochs, batches, step, **kwargs):
        batch = next(iter(batches(0, 0, 1)))
        shapes.append((tuple(batch["input"].shape[-2:]), tuple(batch["mask"].shape[-2:]), float(batch["mask"][4:].flatten(1).amax(1).min())))
        return original(model, optimizer, scheduler, epochs, batches, step, **kwargs)

    monkeypatch.setattr(hybrid, "train_loop", record)
    tiny(select="fixed", epochs=1, train_crop=24).fit(NORMALS, progress=False)  # 64 px: 8x8 cells; 24 px: 3x3
    assert shapes == [((3, 3), (3, 3), 1.0)] * 2  # every anomalous sample's window holds anomaly
    shapes.clear()
    tiny(select="fixed", epochs=1, train_crop=None).fit(NORMALS, progress=False)
    assert [s[:2] for s in shapes] == [((8, 8), (8, 8))] * 2


def test_the_heads_that_choose_the_fusion_train_for_selection_epochs(monkeypatch):
    epochs = []
    original = HybridDetector._train_head

    def record(self, *args, image=False, **kwargs):
        head, history = original(self, *args, image=image, **kwargs)
        epochs.append((len(history), "image" if image else "map"))  # one mean loss per epoch run
        return head, history

    monkeypatch.setattr(HybridDetector, "_train_head", record)
    detector = tiny(epochs=3, selection_epochs=1, fusion_weights=(1.0,)).fit(NORMALS, progress=False)
    # per left-out generator (cutpaste, draem) a map head and an image head, then the kept ones (weight 1)
    assert epochs == [(1, "map"), (1, "image")] * 2 + [(3, "map"), (3, "image")]
    assert len(detector.state_["loss_history"]) == len(detector.state_["image_loss_history"]) == 3
    epochs.clear()
    tiny(epochs=5, image_head_inputs=None, fusion_weights=(1.0,)).fit(NORMALS, progress=False)
    assert epochs == [(3, "map"), (3, "map"), (5, "map")]  # by default 3 epochs
    epochs.clear()
    tiny(epochs=2, image_head_inputs=None, fusion_weights=(1.0,)).fit(NORMALS, progress=False)
    assert epochs == [(2, "map"), (2, "map"), (2, "map")]  # never more than the kept head's
    epochs.clear()
    tiny(epochs=3, image_head_inputs=None, fusion_weights=(1.0,), selection_epochs=None).fit(NORMALS, progress=False)
    assert epochs == [(2, "map"), (2, "map"), (3, "map")]  # None: half as long as the kept head, rounded up


def test_the_fusion_weight_is_the_smallest_within_the_tolerance_of_the_best():
    detector = HybridDetector()  # weights 0, 0.25, 0.5, 1, 2, 4
    curve = np.array([0.70, 0.75, 0.80, 0.88, 0.90, 0.86])  # best 0.90 at w = 2
    assert detector._choose(curve) == 2.0
    assert detector._choose(np.array([0.70, 0.75, 0.80, 0.899, 0.90, 0.86])) == 1.0  # 0.001 short of the best
    assert HybridDetector(tolerance=0.0)._choose(np.array([0.70, 0.75, 0.80, 0.899, 0.90, 0.86])) == 2.0
    assert HybridDetector(gain_share=0.5)._choose(curve) == 0.5  # the knee: the first to reach 0.70 + 0.10
    assert detector._choose(np.array([0.9, 0.89, 0.85, 0.8, 0.7, 0.6])) == 0.0  # the head only hurts: memory alone
    assert detector._choose(np.full(6, 0.95)) == 0.0  # a flat curve: memory alone
    assert detector._choose(np.array([0.900, 0.901, 0.9015, 0.902, 0.90, 0.89])) == 0.0  # gains within the tolerance
    shuffled = HybridDetector(fusion_weights=(1.0, 0.0, 4.0, 0.5))  # the rule follows the weights, not their order
    assert shuffled._choose(np.array([0.88, 0.70, 0.86, 0.80])) == 1.0
    assert HybridDetector(fusion_weights=(1.0, 0.0, 4.0, 0.5), gain_share=0.5)._choose(np.array([0.88, 0.70, 0.86, 0.80])) == 0.5
    with pytest.raises(ValueError, match="tolerance must be in"):
        HybridDetector(tolerance=-0.1)


def test_the_saved_head_is_the_trained_head_and_calibration_scores_match_predict(monkeypatch):
    import torch

    trained = {}
    original = HybridDetector._train_head

    def keep(self, *args, image=False, **kwargs):
        head, history = original(self, *args, image=image, **kwargs)
        trained["image" if image else "map"] = {k: v.clone() for k, v in head.state_dict().items()}
        return head, history

    monkeypatch.setattr(HybridDetector, "_train_head", keep)
    detector = tiny(select="fixed").fit(NORMALS, progress=False)
    # the held-out statistics must not move the heads' batch-norm statistics (eval mode)
    for key, head in (("map", detector.model_.head), ("image", detector.model_.image_head)):
        final = head.state_dict()
        assert all(torch.equal(final[k].cpu(), v.cpu()) for k, v in trained[key].items())
    normal_scores, anomaly_scores = detector.held_out_scores_
    assert len(normal_scores) == detector.state_["n_held_out"] and len(anomaly_scores) > 0
    # a held-out normal scored at fit time (against the training folds' memory) scores no lower than predict gives
    held = [NORMALS[i] for i in np.nonzero(detector._split(len(NORMALS)) == 2)[0]]
    assert np.all(normal_scores >= detector.predict(held).scores - 1e-3)


def first_conv(head):
    from torch import nn

    return next(m for m in head.modules() if isinstance(m, nn.Conv2d))


def test_the_head_sees_only_the_inputs_it_is_given(tmp_path):
    import torch

    detector = tiny(head_inputs=["distance"], epochs=1).fit(NORMALS, progress=False)
    model = detector.model_
    assert first_conv(model.head).in_channels == 1
    channels = model.features.channels
    g = torch.Generator().manual_seed(0)
    patches, residual, other = (torch.randn(2, channels, 4, 4, generator=g) for _ in range(3))
    distance = torch.rand(2, 1, 4, 4, generator=g)
    with torch.no_grad():
        logits = model.head_logits(patches, residual, distance)
        np.testing.assert_array_equal(model.head_logits(other, other, distance), logits)  # features, residuals unseen
        assert not torch.equal(model.head_logits(patches, residual, distance * 2), logits)
    detector.save(tmp_path / "model")
    loaded = load_detector(tmp_path / "model")
    assert loaded.head_inputs == ["distance"] and first_conv(loaded.model_.head).in_channels == 1
    np.testing.assert_array_equal(predict(loaded).scores, predict(detector).scores)
    with pytest.raises(ValueError, match="head_inputs must be"):
        HybridDetector(head_inputs=["distance", "colour"])
    with pytest.raises(ValueError, match="head_inputs must be"):
        HybridDetector(head_inputs=[])
    with pytest.raises(ValueError, match="head_context must be"):
        HybridDetector(head_context=[2, 0])
    with pytest.raises(ValueError, match="context_width must be"):
        HybridDetector(context_width=0)


def test_the_image_score_comes_from_its_own_head_on_the_distance_alone(fitted):
    import torch

    model = fitted.model_
    assert fitted.image_head_inputs == ["distance"] and first_conv(model.image_head).in_channels == 1
    g = torch.Generator().manual_seed(0)
    patches, residual, other = (torch.randn(2, model.features.channels, 4, 4, generator=g) for _ in range(3))
    distance = torch.rand(2, 1, 4, 4, generator=g)
    with torch.no_grad():
        logits = model.image_head_logits(patches, residual, distance)
        np.testing.assert_array_equal(model.image_head_logits(other, other, distance), logits)
        assert not torch.equal(model.image_head_logits(patches, residual, distance * 2), logits)
    out = model.image_head.out
    saved = out.weight.detach().clone(), out.bias.detach().clone(), model.fusion_weights.clone()
    try:
        with torch.no_grad():
            model.fusion_weights.fill_(1.0)  # both heads count, whatever the validation chose
            before = predict(fitted)
            out.weight.zero_()  # silence the image head: its standardised map becomes one constant
            out.bias.zero_()
            after = predict(fitted)
    finally:
        with torch.no_grad():
            out.weight.copy_(saved[0])
            out.bias.copy_(saved[1])
            model.fusion_weights.copy_(saved[2])
    np.testing.assert_array_equal(after.maps, before.maps)  # the map does not use it
    assert not np.allclose(after.scores, before.scores)  # the image score does
    with pytest.raises(ValueError, match="image_head_inputs must be"):
        HybridDetector(image_head_inputs=["colour"])
    with pytest.raises(ValueError, match="image_hidden must be"):
        HybridDetector(image_hidden=0)


def test_the_context_branch_lets_a_patch_see_its_neighbours_and_no_farther():
    import torch

    from detectors.head import segmentation_head

    torch.manual_seed(0)
    grid = torch.randn(1, 5, 40, 40)
    changed = grid.clone()
    changed[..., 20, 26] += 3.0  # one patch, 6 cells right of the centre
    far = grid.clone()
    far[..., 20, 35] += 3.0  # 15 cells away: beyond the reach of dilations 2, 4 and 8 (14 cells)
    for context, sees_neighbour in (((2, 4, 8), True), ((), False)):
        head = segmentation_head(5, 8, context).eval()
        with torch.no_grad():
            base, near_out, far_out = head(grid), head(changed), head(far)
        assert base.shape == (1, 1, 40, 40)
        assert bool(near_out[..., 20, 20] != base[..., 20, 20]) is sees_neighbour
        assert torch.equal(far_out[..., 20, 20], base[..., 20, 20])


@pytest.mark.parametrize(
    "options, missing, value",
    [
        (dict(head_context=[]), "head_context", []),  # saved before the context branch: per-patch head
        (dict(head_context=[2], context_width=64), "context_width", 64),  # before its width was an option
        (dict(image_head_inputs=None), "image_head_inputs", None),  # before the image score had its own head
        (dict(gain_share=0.5, tolerance=0.0), "tolerance", 0.0),  # before the weight rule had a tolerance
        (dict(train_crop=None), "train_crop", None),  # before the heads trained on windows
    ],
)
def test_a_detector_saved_by_an_earlier_version_loads_with_the_head_it_was_saved_with(tmp_path, options, missing, value):
    detector = tiny(epochs=1, **options).fit(NORMALS, progress=False)
    detector.save(tmp_path / "model")
    config_path = tmp_path / "model" / "config.json"
    saved = json.loads(config_path.read_text())
    del saved["config"][missing]  # as earlier versions wrote it
    config_path.write_text(json.dumps(saved))
    loaded = load_detector(tmp_path / "model")
    assert getattr(loaded, missing) == value
    np.testing.assert_array_equal(predict(loaded).scores, predict(detector).scores)


def real_defects(n: int) -> list[DefectShot]:
    """``n`` real defects of two types, as a user's few shots."""
    shots = []
    for i in range(n):
        image, mask = with_defect(smooth(300 + i), i)
        shots.append(DefectShot(image, (mask > 0).astype(np.uint8), "ab"[i % 2], f"shot{i}.png"))
    return shots


@pytest.fixture(scope="module")
def fitted_with_shots():
    return tiny(shot_share=1.0).fit(NORMALS, progress=False, shots=real_defects(10))


def test_given_shots_are_transplanted_in_two_halves_and_weigh_in_the_fusion_choice(fitted_with_shots):
    state = fitted_with_shots.state_
    fusion = state["fusion"]
    assert state["n_shots"] == 10
    # the transplants of each half are a generator the choice leaves out, with anomalies on held-out normals
    assert fusion["generators"] == ["cutpaste", "draem", "transplant-a", "transplant-b"]
    # ten shots weigh the full shot_share: here all of the choice
    assert fusion["shots"]["n"] == 10 and fusion["shots"]["share"] == 1.0
    for key, name in (("map", "pixel_auroc"), ("image", "image_auroc")):
        curve = fusion["validation_" + name]
        np.testing.assert_allclose(curve, fusion["shots"][name], atol=1e-4)
        assert fusion["chosen"][key] == choose_weight(fusion["weights"], curve)


def test_fewer_shots_weigh_less_in_the_fusion_choice():
    detector = tiny(shot_share=0.5).fit(NORMALS, progress=False, shots=real_defects(4))
    fusion = detector.state_["fusion"]
    assert fusion["shots"]["share"] == pytest.approx(0.5 * 4 / 10)
    share = fusion["shots"]["share"]
    for name in ("pixel_auroc", "image_auroc"):
        key = "map" if name == "pixel_auroc" else "image"
        synthetic = np.mean([fusion["per_generator"][g][name] for g in fusion["generators"] if g not in fusion["flat"][key]], axis=0)
        real = np.array(fusion["shots"][name])
        blended = (1 - share) * synthetic + share * real if np.ptp(real) >= detector.tolerance else synthetic  # a flat one is not
        np.testing.assert_allclose(fusion["validation_" + name], blended, atol=1e-3)


def test_only_a_detector_that_learns_from_shots_takes_them():
    from detectors.knn import PatchKNN

    with pytest.raises(ValueError, match="does not learn from real defects.*hybrid"):
        PatchKNN(image_size=64).fit(NORMALS, shots=real_defects(2))
    with pytest.raises(ValueError, match="shot_share must be in"):
        HybridDetector(shot_share=1.5)


def test_a_shot_keeps_a_defect_smaller_than_an_input_pixel():
    image = np.full((640, 640, 3), 128, np.uint8)
    mask = np.zeros((640, 640), np.uint8)
    mask[105:107, 205:207] = 1  # 2 px between the pixels nearest-neighbour resizing to 64 px samples
    small = shot_at(DefectShot(image, mask, "dot"), (64, 64))
    assert small.image.shape == (64, 64, 3) and small.mask.sum() >= 1
    assert small.mask[10, 20] == 1


def test_the_transplants_are_as_many_as_one_generator_gives():
    """With ready-made anomalies (a recipe's curated dataset) the transplants match one generator's
    share of them, not the detector's own anomalies_per_image."""
    generator = CutPaste("union")
    ready = [Anomaly(*(lambda s: (s.image, s.mask))(generator(image, np.random.default_rng(i))), "cutpaste", source=i)
             for i, image in enumerate(NORMALS[:8])]
    detector = tiny(synth="none", select="fixed").fit(NORMALS, ready, progress=False, shots=real_defects(2))
    state = detector.state_
    assert state["n_anomalies"] + state["n_validation_anomalies"] == len(ready) + 2 * (len(ready) // 2)
