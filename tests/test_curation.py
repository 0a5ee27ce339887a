"""EAP scoring of images, selection rules, scoring / curating written datasets, reports, publishing."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import smooth, textured, write_images

from anomalyforge.cli import main
from curate import (
    Candidate,
    EAPScorer,
    curate_dataset,
    load_scores,
    publish_dataset,
    score_dataset,
    select,
)
from synth import ImageFiles, build_generator, read_generated
from synth.dataset import generate_dataset

NORMALS = [textured(64, 64, seed=i) for i in range(16)]


def blob_mask(seed: int, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.float32)
    y, x = rng.integers(8, size - 24, 2)
    mask[y : y + 16, x : x + 14] = 1
    return mask


def small_scorer(**kwargs) -> EAPScorer:
    options = dict(image_size=64, n_normal_patches=512, n_subsets=10, batch_size=8)
    options.update(kwargs)
    return EAPScorer(**options)


def brighter(image: np.ndarray, mask: np.ndarray, delta: int = 40) -> np.ndarray:
    out = image.astype(np.int16)
    out[mask > 0] += delta
    return np.clip(out, 0, 255).astype(np.uint8)


def three_parts():
    """Good (a brighter patch on a new normal image), polluted (a training image, unchanged, with a
    mask labelled anomalous) and noise (an image from another domain)."""
    good = [(brighter(textured(64, 64, seed=300 + i), blob_mask(i)), blob_mask(i)) for i in range(6)]
    polluted = [(NORMALS[i], blob_mask(20 + i)) for i in range(6)]
    rng = np.random.default_rng(0)
    noise = [(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), blob_mask(10 + i)) for i in range(6)]
    return good, polluted, noise


def test_scorer_ranks_good_anomalies_above_polluted_and_noise():
    scorer = small_scorer().fit(NORMALS, progress=False)
    good, polluted, noise = three_parts()
    scores = {name: scorer.score([s[0] for s in part], [s[1] for s in part])
              for name, part in (("good", good), ("polluted", polluted), ("noise", noise))}
    assert all(np.all((v >= 0) & (v <= 1)) for v in scores.values())
    assert np.median(scores["good"]) > scores["polluted"].max()
    assert scores["good"].mean() > scores["polluted"].mean() + 0.2
    b0, b1 = scorer.eap_.prior_
    np.testing.assert_allclose(scores["noise"], b1 / (b0 + b1), atol=0.02)  # off the normal support: the prior


def test_the_rest_of_the_image_decides_the_support():
    """An anomaly on a normal image keeps the normal image's support (its patches outside the mask,
    away from it, are normal), so it is not pushed off; the same anomaly pasted on an image from
    another domain is, to the prior exactly."""
    mask = np.zeros((64, 64), np.float32)
    mask[10:26, 12:28] = 1
    on_normal = [brighter(textured(64, 64, seed=300 + i), mask, 30) for i in range(6)]
    on_foreign = []
    for i, image in enumerate(on_normal):
        foreign = np.random.default_rng(i).integers(0, 256, image.shape, dtype=np.uint8)
        foreign[mask > 0] = image[mask > 0]
        on_foreign.append(foreign)
    scorer = small_scorer().fit(NORMALS, progress=False)
    b0, b1 = scorer.eap_.prior_
    normal_support = scorer.masked_patches(on_normal, [mask] * 6).support
    assert normal_support.min() > 0.5
    assert scorer.score(on_normal, [mask] * 6).min() > 0.2
    assert torch.all(scorer.masked_patches(on_foreign, [mask] * 6).support == 0)  # judged by the rest alone
    np.testing.assert_allclose(scorer.score(on_foreign, [mask] * 6), b1 / (b0 + b1), atol=1e-9)
    plain = small_scorer(support_cells=0).fit(NORMALS, progress=False)  # the test turned off
    assert plain.masked_patches(on_foreign, [mask] * 6).support is None
    with pytest.raises(ValueError, match="support_cells must be a non-negative integer"):
        small_scorer(support_cells=-1).fit(NORMALS, progress=False)


def test_scorer_is_deterministic_and_empty_masks_are_unscored():
    good, _, _ = three_parts()
    images = [g[0] for g in good] + [NORMALS[0]]
    masks = [g[1] for g in good] + [np.zeros((64, 64), np.float32)]
    first = small_scorer(seed=1).fit(NORMALS, progress=False).score(images, masks)
    again = small_scorer(seed=1).fit(NORMALS, progress=False).score(images, masks)
    np.testing.assert_array_equal(first, again)
    assert np.isnan(first[-1]) and np.all(np.isfinite(first[:-1]))
    with pytest.raises(RuntimeError, match="call fit"):
        small_scorer().score(images, masks)
    with pytest.raises(ValueError, match="at least 2 normal images"):
        small_scorer().fit(NORMALS[:1], progress=False)
    with pytest.raises(ValueError, match="6 images but 2 masks"):
        small_scorer().fit(NORMALS, progress=False).score(images[:6], masks[:2])


def candidate(index, generator="cutpaste", eap=0.5, area=0.05, pixels=200, descriptor=None, grid=None):
    return Candidate(index, generator, eap, area, pixels, descriptor, grid)


def test_selection_rules_and_reasons():
    grid = np.zeros((8, 8), bool)
    grid[2:5, 2:5] = True
    other_grid = np.zeros((8, 8), bool)
    other_grid[5:8, 5:8] = True
    d = np.array([1.0, 0.0, 1.0])
    candidates = [
        candidate(0, eap=0.9, descriptor=d, grid=grid),
        candidate(1, eap=0.8, descriptor=d * 1.01, grid=grid),  # near duplicate of 0
        candidate(2, eap=0.7, descriptor=d, grid=other_grid),  # same look, other place: kept
        candidate(3, eap=0.6, pixels=0, area=0.0),
        candidate(4, eap=0.95, area=0.97, pixels=4000),
        candidate(5, eap=0.85, pixels=5, area=0.001),
        candidate(6, eap=float("nan")),
        candidate(7, "draem", eap=0.2),
        candidate(8, "draem", eap=0.4),
        candidate(9, "draem", eap=0.3),
        Candidate(10, "mix", float("nan"), 0.0, 0, label=0),
    ]
    result = select(candidates, threshold=0.25)
    assert result.kept == [0, 2, 8, 9]
    assert result.dropped[1].startswith("near duplicate: of sample 0")
    assert result.dropped[3] == "empty mask" and result.dropped[4].startswith("whole-image mask")
    assert result.dropped[5].startswith("tiny mask") and result.dropped[6] == "unscored"
    assert result.dropped[7].startswith("below threshold") and result.dropped[10].startswith("unchanged sample")
    quota = select(candidates, quotas={"draem": 1, "cutpaste": 0.2}, duplicate_similarity=None)
    assert quota.kept == [0, 8]  # cutpaste: 20 % of 7 -> 1 (the best), draem: 1 (the best)
    top = select(candidates, top_fraction=0.3, duplicate_similarity=None)
    assert top.kept == [0, 1, 2, 8]  # ceil(0.3 * 11) best of the usable ones
    assert top.reasons()["not in top fraction"] == 2
    with pytest.raises(ValueError, match=r"top_fraction: must be in \(0, 1\]"):
        select(candidates, top_fraction=0.0)
    with pytest.raises(ValueError, match="max_area: must be in"):
        select(candidates, max_area=0.0)
    with pytest.raises(ValueError, match="quota of 'draem' must not be negative"):
        select(candidates, quotas={"draem": -1})


def test_a_per_generator_top_fraction_keeps_the_generated_mix():
    # cutpaste scores higher on the whole: the global top half is all cutpaste, the per-generator one
    # keeps each generator's own best half
    candidates = [candidate(k, "cutpaste", eap=0.9 - 0.01 * k) for k in range(6)]
    candidates += [candidate(6 + k, "draem", eap=0.5 - 0.01 * k) for k in range(4)]
    assert select(candidates, top_fraction=0.5, duplicate_similarity=None).kept == [0, 1, 2, 3, 4]
    result = select(candidates, top_fraction=0.5, per_generator=True, duplicate_similarity=None)
    assert result.kept == [0, 1, 2, 6, 7]
    assert result.dropped[8] == "not in top fraction of draem: 0.5"
    # an odd count rounds up, as the global top fraction does
    assert select(candidates[:5], top_fraction=0.5, per_generator=True, duplicate_similarity=None).kept == [0, 1, 2]
    with pytest.raises(ValueError, match="give top_fraction"):  # not silently ignored
        select(candidates, per_generator=True)


@pytest.fixture
def normal_folder(tmp_path) -> list[Path]:
    return write_images(tmp_path / "normal", [smooth(k) for k in range(10)], "n")


def make_dataset(out, paths, fmt, n=18):
    generator = build_generator("mix", sources=ImageFiles(paths), options={"nsa": {"preset": "texture"}})
    generate_dataset(paths, generator, n, out, seed=0, fmt=fmt, shard_size=7, input_root=paths[0].parent,
                     info={"license": "CC-BY-4.0"}, progress=False)
    return out


def test_score_and_curate_a_hub_folder(tmp_path, normal_folder):
    import datasets

    dataset = make_dataset(tmp_path / "gen", normal_folder, "hf")
    scored = score_dataset(dataset, small_scorer(), progress=False)
    values = scored.eap()
    assert len(values) == 18 and all(np.isfinite(v) for v in values.values())
    records = {json.loads(line)["index"]: json.loads(line) for line in (dataset / "manifest.jsonl").read_text().splitlines()}
    assert all(records[i]["eap"] == pytest.approx(values[i], abs=1e-6) for i in values)
    ds = datasets.load_dataset(str(dataset), split="train")
    assert [round(v, 6) for v in ds["eap"]] == [round(values[i], 6) for i in range(18)]
    card = (dataset / "README.md").read_text()
    assert "## Expected Anomaly Posterior" in card and "| all | 18 | 18 |" in card
    assert (dataset / "report" / "report.html").exists() and (dataset / "report" / "best.png").exists()
    stored = load_scores(dataset)
    assert stored.eap() == pytest.approx(values) and stored.candidates[0].grid_mask.shape == (32, 32)

    result = curate_dataset(dataset, tmp_path / "cur", {"top_fraction": 0.5}, progress=False)
    assert not result.scored_now  # the stored scores were used
    kept = result.selection.kept
    ranked = [i for i in values if i in kept or result.selection.dropped[i].startswith("not in top fraction")]
    ranked.sort(key=lambda i: (-values[i], i))
    assert kept == sorted(ranked[:9])  # the best ceil(0.5 * 18) of the usable samples
    curated = list(read_generated(tmp_path / "cur"))
    assert [s.record["index"] for s in curated] == list(range(len(kept)))
    assert [s.record["origin_index"] for s in curated] == kept
    originals = {s.record["index"]: s for s in read_generated(dataset)}
    for sample in curated:
        assert np.array_equal(sample.image, originals[sample.record["origin_index"]].image)
        assert sample.record["eap"] == pytest.approx(values[sample.record["origin_index"]], abs=1e-6)
    selection = json.loads((tmp_path / "cur" / "selection.json").read_text())
    assert selection["kept_origin_indices"] == kept and selection["dropped"] == 18 - len(kept)
    html = (tmp_path / "cur" / "report" / "report.html").read_text()
    assert "Selection" in html and "eap_hist.png" in html and "worst.png" in html


def test_unreadable_samples_are_named_and_skipped(tmp_path, normal_folder):
    dataset = make_dataset(tmp_path / "gen", normal_folder, "mvtec", n=9)
    broken = next((dataset / "test").rglob("000004.png"))
    broken.write_bytes(b"not a png")
    scored = score_dataset(dataset, small_scorer(), progress=False)
    assert set(scored.errors) == {4} and str(broken) in scored.errors[4]
    assert len(scored.candidates) == 8
    summary = json.loads((dataset / "eap.json").read_text())
    assert "4" in summary["unreadable_samples"]
    with pytest.raises(ValueError, match="000004.png"):
        list(read_generated(dataset))


class FakeHub:
    """Stands in for huggingface_hub.HfApi: records what would be sent."""

    calls: list = []

    def create_repo(self, repo_id, **kwargs):
        FakeHub.calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/datasets/{repo_id}"

    def upload_folder(self, **kwargs):
        folder = Path(kwargs["folder_path"])
        ignored = kwargs["ignore_patterns"]
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                       if p.is_file() and not any(p.match(pattern) for pattern in ignored))
        FakeHub.calls.append(("upload_folder", kwargs, files))


def test_publish_through_a_fake_hub_never_shows_the_token(tmp_path, normal_folder, monkeypatch, capsys):
    import huggingface_hub

    dataset = make_dataset(tmp_path / "gen", normal_folder, "hf", n=8)
    score_dataset(dataset, small_scorer(), progress=False)
    secret = "hf_SECRETtoken1234567890"
    monkeypatch.setenv("HF_TOKEN", secret)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHub)
    FakeHub.calls = []
    assert main(["publish", str(dataset), "--repo", "someone/tiles-synthetic", "--private", "--license", "CC-BY-NC-4.0"]) == 0
    out = capsys.readouterr()
    assert "someone/tiles-synthetic" in out.out
    (name, repo, create), (_, upload, files) = FakeHub.calls
    assert repo == "someone/tiles-synthetic" and create["private"] is True and create["repo_type"] == "dataset"
    assert upload["repo_type"] == "dataset" and create["token"] == secret == upload["token"]
    assert "README.md" in files and any(f.startswith("data/train-") for f in files)
    assert "dataset.json" not in files and "eap_scores.safetensors" not in files
    card = (dataset / "README.md").read_text()
    assert "license: cc-by-nc-4.0" in card and "| license of the source images | CC-BY-NC-4.0 |" in card
    assert "| seed | 0 |" in card and "## Expected Anomaly Posterior" in card
    assert '"variant"' in card or '"generators"' in card  # generator parameters
    for path in dataset.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert secret not in out.out + out.err


def test_publish_errors(tmp_path, normal_folder, monkeypatch, capsys):
    mvtec = make_dataset(tmp_path / "mv", normal_folder, "mvtec", n=3)
    with pytest.raises(ValueError, match="not a hub-ready folder"):
        publish_dataset(mvtec, "a/b", api=FakeHub())
    with pytest.raises(ValueError, match="user/name"):
        publish_dataset(mvtec, "no-slash", api=FakeHub())
    hub = make_dataset(tmp_path / "hf", normal_folder, "hf", n=3)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-home"))
    assert main(["publish", str(hub), "--repo", "a/b"]) == 2
    assert "no Hugging Face token" in capsys.readouterr().err


def test_score_and_curate_commands(tmp_path, normal_folder, capsys):
    dataset = make_dataset(tmp_path / "gen", normal_folder, "mvtec", n=12)
    assert main(["score", str(dataset), "--quiet", "--set", "image_size=64", "n_subsets=5", "n_normal_patches=256"]) == 0
    out = capsys.readouterr().out
    assert "scored 12 of 12 samples" in out and "report:" in out
    assert main(["curate", str(dataset), "--out", str(tmp_path / "cur"), "--threshold", "0.0", "--quota", "cutpaste=1",
                 "--format", "hf", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "kept" in out and (tmp_path / "cur" / "data").is_dir()
    generators = [s.record["generator"] for s in read_generated(tmp_path / "cur")]
    assert generators.count("cutpaste") <= 1
    assert main(["curate", str(dataset), "--out", str(tmp_path / "mix"), "--top", "0.5", "--per-generator",
                 "--keep-duplicates", "--format", "hf", "--quiet"]) == 0
    capsys.readouterr()
    made = Counter(s.record["generator"] for s in read_generated(dataset))
    kept = Counter(s.record["generator"] for s in read_generated(tmp_path / "mix"))
    assert len(made) > 1 and kept == {name: -(-n // 2) for name, n in made.items()}  # each generator's better half
    assert main(["curate", str(dataset), "--out", str(tmp_path / "no-top"), "--per-generator", "--quiet"]) == 2
    assert "give --top too" in capsys.readouterr().err and not (tmp_path / "no-top").exists()
    assert main(["score", str(dataset), "--quiet", "--set", "colour=1"]) == 2
    assert "--set colour: unknown EAP scorer option" in capsys.readouterr().err
    assert main(["curate", str(dataset), "--out", str(dataset / "test"), "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err


def test_labelled_defects_set_the_prior_and_the_ball_size():
    from detectors.base import Anomaly

    good, _, _ = three_parts()
    plain = small_scorer().fit(NORMALS, progress=False)
    labelled = small_scorer().fit(NORMALS, [Anomaly(image, mask) for image, mask in good[:3]], progress=False)
    assert plain.eap_.prior_ == pytest.approx((0.99, 0.01))
    n_points = len(plain.eap_.normals_)
    n_labelled = len(labelled.masked_patches([g[0] for g in good[:3]], [g[1] for g in good[:3]]).points)
    assert labelled.eap_.prior_[1] == pytest.approx(n_labelled / (n_points + n_labelled))
    # with labelled anomalies near the normals, the reference rule picks smaller balls than without
    assert np.mean([m.k for m in labelled.eap_.subsets_]) < np.mean([m.k for m in plain.eap_.subsets_])


def test_card_license_metadata_is_a_hub_id_or_other():
    from synth.dataset.card import hub_license

    assert hub_license("CC-BY-4.0") == "cc-by-4.0" and hub_license(" MIT ") == "mit"
    assert hub_license("free for research use; cite the paper") == "other" and hub_license(None) == "other"


def test_the_reports_and_the_readme_say_what_eap_values_mean(tmp_path):
    """EAP tops out near 0.5: the README and the curation report say so, and how the cut is made."""
    from curate.posterior import ExpectedAnomalyPosterior
    from curate.report import EAP_SCALE, write_report

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "EAP runs from about 0.01 to about 0.5, not to 1" in readme and "`--threshold`" in readme
    assert "about 0.505" in EAP_SCALE and "--top" in EAP_SCALE
    paths = write_images(tmp_path / "normal", NORMALS[:3], "n")
    generate_dataset(paths, build_generator("cutpaste"), 2, tmp_path / "data", progress=False)
    page = write_report(tmp_path / "data", [], {"all": {"count": 0, "scored": 0}, "by_generator": {}}, tmp_path / "report")
    assert "EAP runs from about 0.01 to about 0.5" in Path(page).read_text()
    # the ceiling the text states: a certain anomaly as dense as a typical normal scores about 0.505
    rng = np.random.default_rng(0)
    normals = rng.normal(size=(400, 8))
    eap = ExpectedAnomalyPosterior(n_subsets=20, seed=0).fit(normals).posterior(normals[:50] * 3)
    assert 0.45 < float(np.max(eap)) <= 0.51
