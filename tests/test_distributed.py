"""The Ray engine and fsspec stores: the same datasets and scores as the local engine on local folders.

Ray tests share one local Ray (2 CPUs) and are skipped when Ray is not installed.
"""

import json
import shutil
import sys

import numpy as np
import pytest
from conftest import folder_bytes, mix, smooth, write_images

from curate import EAPScorer, score_dataset
from synth import ImageFiles, build_generator, read_generated
from synth.common.storage import Store
from synth.dataset import generate_dataset


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def store_bytes(store: Store) -> dict[str, bytes]:
    return {name: store.read_bytes(name) for name in store.files()}


@pytest.mark.parametrize("fmt", ["mvtec", "hf"])
def test_ray_generation_is_byte_identical_to_the_local_engine(tmp_path, normals, ray_cluster, fmt):
    local, distributed = tmp_path / "local", tmp_path / "ray"
    generate_dataset(normals, mix(normals), 11, local, seed=5, fmt=fmt, shard_size=4, progress=False)
    report = generate_dataset(normals, mix(normals), 11, distributed, seed=5, fmt=fmt, shard_size=4, progress=False,
                              engine="ray", workers=2)
    assert report.written == 11
    assert folder_bytes(distributed) == folder_bytes(local)


@pytest.mark.parametrize("fmt", ["mvtec", "hf"])
def test_an_interrupted_ray_run_resumes_on_either_engine(tmp_path, normals, ray_cluster, fmt):
    reference = tmp_path / "reference"
    generate_dataset(normals, mix(normals), 11, reference, seed=5, fmt=fmt, shard_size=4, progress=False)

    def interrupt(index):
        if index == 5:
            raise KeyboardInterrupt

    for resume_engine in ("ray", "local"):
        out = tmp_path / f"resumed-{resume_engine}"
        with pytest.raises(KeyboardInterrupt):
            generate_dataset(normals, mix(normals), 11, out, seed=5, fmt=fmt, shard_size=4, progress=False,
                             engine="ray", workers=2, on_sample=interrupt)
        assert json.loads((out / "dataset.json").read_text())["complete"] is False
        report = generate_dataset(normals, mix(normals), 11, out, seed=5, fmt=fmt, shard_size=4, progress=False,
                                  engine=resume_engine, workers=2)
        assert report.already_done >= 4 and report.written + report.already_done == 11
        assert folder_bytes(out) == folder_bytes(reference)


def test_stopping_early_waits_for_the_cancelled_tasks(tmp_path, ray_cluster):
    """An interrupted run returns only when its cancelled tasks have stopped, so the resumed run that
    follows clears what they left and no task writes behind it."""
    import time

    from synth.dataset.ray_engine import ordered

    @ray_cluster.remote
    def task(index, folder):
        if index == 0:
            return index
        try:
            (folder / f"started-{index}").touch()
            for _ in range(600):
                time.sleep(0.1)  # a cancelled task is interrupted between two Python steps
        finally:
            # the cleanup a cancelled task still does (0.5 s), to its end even when a further interrupt
            # lands in any of its steps (a task can be interrupted more than once, ray-project/ray#63663)
            done = None
            while True:
                try:
                    done = time.monotonic() + 0.5 if done is None else done
                    if time.monotonic() >= done:
                        (folder / f"stopped-{index}").touch()
                        break
                    time.sleep(0.05)
                except KeyboardInterrupt:
                    pass
        return index

    submits = [lambda k=k: task.remote(k, tmp_path) for k in range(3)]
    results = ordered(ray_cluster, submits, in_flight=2)
    assert next(results) == 0
    deadline = time.monotonic() + 30
    while not (tmp_path / "started-1").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    results.close()
    assert (tmp_path / "stopped-1").exists()


def small_scorer() -> EAPScorer:
    return EAPScorer(image_size=64, n_normal_patches=512, n_subsets=10, batch_size=4)


@pytest.mark.parametrize("fmt", ["mvtec", "hf"])
def test_scoring_on_ray_equals_scoring_locally(tmp_path, ray_cluster, fmt, monkeypatch):
    paths = write_images(tmp_path / "normal", [smooth(k) for k in range(8)], "n")
    generator = build_generator("mix", sources=ImageFiles(paths), options={"nsa": {"preset": "texture"}})
    one = tmp_path / "one"
    generate_dataset(paths, generator, 14, one, seed=0, fmt=fmt, shard_size=6, progress=False)
    two = tmp_path / "two"
    shutil.copytree(one, two)
    import torch

    monkeypatch.setattr("curate.dataset_scores.RAY_CHUNK", 4)  # several tasks for 14 samples
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a Ray task: the same summation order, the same bits
    try:
        local = score_dataset(one, small_scorer(), progress=False, report=False)
    finally:
        torch.set_num_threads(threads)
    distributed = score_dataset(two, small_scorer(), progress=False, report=False, engine="ray", workers=2)
    a, b = local.eap(), distributed.eap()
    assert list(a) == list(b) and sum(np.isfinite(v) for v in a.values()) >= 10
    np.testing.assert_allclose([b[k] for k in a], list(a.values()), rtol=0, atol=1e-9)
    for name in ("manifest.jsonl", "eap_scores.safetensors"):
        assert (two / name).read_bytes() == (one / name).read_bytes(), name


@pytest.mark.parametrize("fmt", ["mvtec", "hf"])
@pytest.mark.parametrize("scheme", ["memory", "file", "local"])
def test_generation_to_an_fsspec_url_round_trips(tmp_path, normals, fmt, scheme):
    """memory: an object store (one upload per file); file: a local folder; local: fsspec's own
    local file system, which has no atomic upload (temporary key, then a move)."""
    local = tmp_path / "local"
    generate_dataset(normals, mix(normals), 9, local, seed=2, fmt=fmt, shard_size=4, progress=False)
    url = {"memory": f"memory://{tmp_path.name}/{fmt}", "file": f"file://{tmp_path / 'url'}",
           "local": f"local://{tmp_path / 'fs'}"}[scheme]
    report = generate_dataset(normals, mix(normals), 9, url, seed=2, fmt=fmt, shard_size=4, progress=False)
    assert report.written == 9
    assert store_bytes(Store(url)) == folder_bytes(local)
    samples, expected = list(read_generated(url)), list(read_generated(local))
    assert [s.record for s in samples] == [s.record for s in expected]
    for sample, reference in zip(samples, expected):
        np.testing.assert_array_equal(sample.image, reference.image)
        np.testing.assert_array_equal(sample.mask, reference.mask)
    # resuming a finished run on the store makes nothing
    again = generate_dataset(normals, mix(normals), 9, url, seed=2, fmt=fmt, shard_size=4, progress=False)
    assert again.written == 0 and again.already_done == 9
    if scheme == "memory":
        Store(url).remove_all()


def test_an_interrupted_run_on_an_object_store_resumes(tmp_path, normals):
    reference = tmp_path / "reference"
    generate_dataset(normals, mix(normals), 10, reference, seed=4, fmt="mvtec", progress=False)
    url = f"memory://{tmp_path.name}/resumed"

    def interrupt(index):
        if index == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_dataset(normals, mix(normals), 10, url, seed=4, fmt="mvtec", progress=False, on_sample=interrupt)
    report = generate_dataset(normals, mix(normals), 10, url, seed=4, fmt="mvtec", progress=False)
    assert report.written + report.already_done == 10
    assert store_bytes(Store(url)) == folder_bytes(reference)
    Store(url).remove_all()


def test_images_read_from_an_fsspec_url_make_the_same_samples(tmp_path, normals):
    import fsspec

    from synth import normal_image_paths

    source = f"memory://{tmp_path.name}/normals"
    for path in normals:
        fsspec.filesystem("memory").pipe_file(f"/{tmp_path.name}/normals/{path.name}", path.read_bytes())
    urls = normal_image_paths(source)
    assert urls == [f"{source}/{p.name}" for p in normals]
    local, remote = tmp_path / "local", tmp_path / "remote"
    generate_dataset(normals, mix(normals), 6, local, seed=1, progress=False)
    generate_dataset(urls, mix(urls), 6, remote, seed=1, progress=False)
    a, b = list(read_generated(local)), list(read_generated(remote))
    assert [s.record for s in a] == [s.record for s in b]  # sources recorded relative to the input
    assert json.loads((remote / "dataset.json").read_text())["input"] == source
    Store(source).remove_all()


def test_scoring_a_dataset_on_an_object_store(tmp_path):
    paths = write_images(tmp_path / "normal", [smooth(k) for k in range(8)], "n")
    generator = build_generator("mix", sources=ImageFiles(paths), options={"nsa": {"preset": "texture"}})
    local, url = tmp_path / "local", f"memory://{tmp_path.name}/scored"
    for out in (local, url):
        generate_dataset(paths, generator, 10, out, seed=0, fmt="hf", shard_size=4, progress=False)
    a = score_dataset(local, small_scorer(), progress=False)
    b = score_dataset(url, small_scorer(), progress=False)
    assert a.eap().keys() == b.eap().keys()
    np.testing.assert_allclose(list(b.eap().values()), list(a.eap().values()), rtol=0, atol=1e-9)
    assert a.report is not None and b.report is None  # report pages are written to local folders only
    remote = Store(url)
    for name in ("manifest.jsonl", "eap.json", "README.md", "data/train-00000-of-00003.parquet"):
        assert remote.read_bytes(name) == (local / name).read_bytes(), name
    remote.remove_all()


def test_the_ray_engine_without_ray_says_what_to_install(tmp_path, normals, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as if it were not installed
    with pytest.raises(ImportError, match=r'pip install "anomalyforge\[ray\]"'):
        generate_dataset(normals, mix(normals), 3, tmp_path / "out", progress=False, engine="ray")
    with pytest.raises(ValueError, match="unknown engine 'spark'"):
        generate_dataset(normals, mix(normals), 3, tmp_path / "out2", progress=False, engine="spark")


def test_curating_into_an_object_store(tmp_path):
    from curate import curate_dataset

    paths = write_images(tmp_path / "normal", [smooth(k) for k in range(8)], "n")
    generator = build_generator("mix", sources=ImageFiles(paths), options={"nsa": {"preset": "texture"}})
    source = tmp_path / "generated"
    generate_dataset(paths, generator, 12, source, seed=0, fmt="mvtec", progress=False)
    score_dataset(source, small_scorer(), progress=False, report=False)
    local = curate_dataset(source, tmp_path / "curated", {"top_fraction": 0.5}, progress=False)
    url = f"memory://{tmp_path.name}/curated"
    remote = curate_dataset(source, url, {"top_fraction": 0.5}, progress=False)
    assert remote.selection.kept == local.selection.kept and remote.report is None
    kept = list(read_generated(url))
    assert [s.record for s in kept] == [s.record for s in read_generated(tmp_path / "curated")]
    assert [s.record["origin_index"] for s in kept] == local.selection.kept
    Store(url).remove_all()


def test_cli_generates_on_ray_into_a_file_url(tmp_path, normals, ray_cluster, capsys):
    from anomalyforge.cli import main

    common = ["generate", "--input", str(normals[0].parent), "--n", "8", "--format", "hf", "--shard-size", "3", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "local")]) == 0
    assert main([*common, "--out", f"file://{tmp_path / 'ray'}", "--engine", "ray", "--workers", "2"]) == 0
    assert "wrote 8 samples" in capsys.readouterr().out
    assert folder_bytes(tmp_path / "ray") == folder_bytes(tmp_path / "local")


def test_ray_refuses_a_store_its_workers_cannot_reach(tmp_path, normals, ray_cluster):
    url = f"memory://{tmp_path.name}/never"
    with pytest.raises(ValueError, match="memory:// store lives in one process"):
        generate_dataset(normals, mix(normals), 3, url, progress=False, engine="ray")
    assert not Store(url).exists()  # refused before anything was written


def test_chunks_are_whole_shards_or_small_enough_for_every_cpu():
    from synth.dataset.workers import generation_chunks

    todo = [i for i in range(25) if i not in (3, 4)]  # a resumed run: two samples are done
    shards = generation_chunks(todo, "hf", shard_size=10, cpus=4)
    assert shards == [[0, 1, 2, *range(5, 10)], list(range(10, 20)), list(range(20, 25))]
    runs = generation_chunks(list(range(1000)), "mvtec", shard_size=1000, cpus=4)
    assert len(runs) == 16 and sum(runs, []) == list(range(1000))
    assert generation_chunks([], "mvtec", 1000, 4) == []
