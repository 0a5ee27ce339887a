"""The generation job: synthesise N samples from a folder of normal images and write them to disk.

Sample ``i`` is made from its own seed (derived from the run seed and ``i``) and its own source
image, in any worker, so the output does not depend on the number of workers, and a resumed run
makes exactly the samples that are missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

from ..base import AnomalyGenerator
from ..common.png import check_compression
from ..common.storage import Store, as_location, as_store, check_output_folder, is_url
from .card import write_dataset_card
from .layout import RUN_INFO, read_run_info
from .ray_engine import check_engine
from .workers import ChunkJob, GenerationTask, distributed_results, local_results
from .writers import make_writer


@dataclass
class GenerationReport:
    out: Path | str  # a local folder, or a URL
    written: int
    already_done: int
    failed: list[str] = field(default_factory=list)
    bad_files: dict[str, str] = field(default_factory=dict)
    n_inputs: int = 0

    @property
    def no_usable_input(self) -> bool:
        return len(self.bad_files) == self.n_inputs

    def add(self, result: dict[str, Any]) -> bool:
        """Count one sample's result; returns whether it was made."""
        for path, error in result["bad"]:
            if path not in self.bad_files:
                self.bad_files[path] = error
                tqdm.write(f"skipping unusable image: {error}")
        if "error" in result:
            self.failed.append(f"sample {result['index']}: {result['error']}")
            if not self.no_usable_input:  # else the job stops with that error, said once
                tqdm.write(f"sample {result['index']} failed: {result['error']}")
            return False
        self.written += 1
        return True


def generate_dataset(
    paths: list[Path | str],
    generator: AnomalyGenerator,
    n: int,
    out: str | Path,
    seed: int = 0,
    fmt: str = "mvtec",
    workers: int = 1,
    shard_size: int = 1000,
    input_root: str | Path | None = None,
    info: dict[str, Any] | None = None,
    progress: bool = True,
    on_sample: Callable[[int], None] | None = None,
    png_compression: int | None = None,
    engine: str = "local",
    ray_address: str | None = None,
) -> GenerationReport:
    """Generate ``n`` samples from the normal images at ``paths`` into ``out`` (a folder or an fsspec
    URL); resumes a run that was interrupted (same arguments), refuses a folder that holds a different
    run. ``png_compression``: zlib level 0-9 of the PNG files (``None``: the fast default of
    :mod:`synth.common.png`). ``engine="ray"`` makes the samples in Ray tasks (``ray_address``: an existing
    cluster; none: a local Ray with ``workers`` CPUs) that write the files themselves; the dataset is
    the same as the local engine's."""
    from ..common.version import __version__

    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    check_compression(png_compression, "png_compression")
    if not paths:
        raise ValueError("no input images")
    store = as_store(out)
    check_engine(engine, store)
    paths = [as_location(p) for p in paths]
    if input_root is not None:
        root = as_location(input_root)
    else:
        root = str(paths[0]).rsplit("/", 1)[0] if is_url(paths[0]) else Path(paths[0]).parent
    run = {
        "format": fmt, "n": n, "seed": seed, "generator": generator.name, "generator_config": generator.get_config(),
        "input": str(root), "n_inputs": len(paths), "shard_size": shard_size if fmt == "hf" else None,
        "png_compression": png_compression, "version": __version__, **(info or {}),
    }
    _check_same_run(store, run)
    fresh = store.is_empty()  # nothing of the user's is in it
    writer = make_writer(fmt, store, n, shard_size)
    done = writer.open()
    store.write_json(RUN_INFO, {**run, "complete": False})
    todo = [i for i in range(n) if i not in done]
    report = GenerationReport(store.where, 0, len(done), n_inputs=len(paths))
    task = GenerationTask(paths, root, generator, seed, png_compression)
    if engine == "ray":
        results = distributed_results(todo, ChunkJob(task, fmt, store, n, shard_size), workers, ray_address)
    else:
        results = ((result, None) for result in local_results(todo, workers, task))
    bar = tqdm(total=n, initial=len(done), desc=f"generate {generator.name}", unit="img", disable=not progress)
    try:
        for result, records in results:
            made = report.add(result)
            if records is not None:  # made and written by a distributed worker
                writer.add_records(records, flush=True)
            elif made:
                writer.write(result["sample"])
            else:
                writer.skip(result["index"])
            bar.update(1)
            if on_sample is not None:
                on_sample(result["index"])
            if report.no_usable_input:
                break  # no usable image left: every further sample would fail the same way
    finally:
        results.close()
        bar.close()
        writer.close()
    if report.written == 0 and not done and report.no_usable_input:
        if fresh:  # nothing usable was made: leave no half-made dataset behind
            store.remove_all()
        listed = "; ".join(list(report.bad_files.values())[:3]) + (" ..." if len(paths) > 3 else "")
        raise ValueError(f"none of the {len(paths)} input images is usable ({listed})")
    complete = not report.failed
    final = {**run, "complete": complete, "failed": report.failed, "skipped_files": report.bad_files}
    store.write_json(RUN_INFO, final)
    if fmt == "hf":
        write_dataset_card(store, run)
    return report


RUN_KEYS = ("format", "n", "seed", "generator", "generator_config", "shard_size")  # what makes two runs the same


def _leaf_differences(differences: list[tuple[str, Any, Any]]) -> list[tuple[str, Any, Any]]:
    """Differences of nested settings (a generator's config) by their dotted keys, the differing
    leaves only, so that a refusal names what changed rather than printing whole configs."""
    out = []
    for key, there, now in differences:
        if isinstance(there, dict) and isinstance(now, dict):
            nested = [(f"{key}.{name}", there.get(name), now.get(name)) for name in sorted(set(there) | set(now), key=str)
                      if there.get(name) != now.get(name)]
        elif isinstance(there, list) and isinstance(now, list) and len(there) == len(now):
            # a mix's generators: each named by its own name where it has one
            nested = [(f"{key}[{a.get('name', k) if isinstance(a, dict) else k}]", a, b)
                      for k, (a, b) in enumerate(zip(there, now)) if a != b]
        else:
            out.append((key, there, now))
            continue
        out += _leaf_differences(nested)
    return out


def _check_same_run(out: Store, run: dict[str, Any]) -> None:
    """Refuse a folder that holds something else: no run of ours, or a run with other settings. The
    same settings with a larger ``n`` grow the dataset (sample ``i`` does not depend on ``n``)."""
    if not check_output_folder(out, RUN_INFO, "generated dataset"):
        return
    previous = read_run_info(out)
    differences = [(key, previous.get(key), run.get(key)) for key in RUN_KEYS if previous.get(key) != run.get(key)]
    if not differences:
        return
    if [key for key, _, _ in differences] == ["n"] and isinstance(previous.get("n"), int) and run["n"] > previous["n"]:
        return  # growing: the samples already there are kept
    listed = "; ".join(f"{key}: {there!r} there, {now!r} now" for key, there, now in _leaf_differences(differences))
    raise FileExistsError(
        f"output folder {out} holds a different run ({listed}); resume with the same options (a larger --n "
        f"grows it) or choose a new --out"
    )
