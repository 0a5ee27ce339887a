"""The README.md dataset card of a hub-ready folder: YAML ``configs`` and ``dataset_info`` plus prose."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from ..common.storage import Store, as_store
from .layout import SHARD_FILES, shards
from .manifest import Manifest

FEATURE_YAML = [
    {"name": "image", "dtype": "image"}, {"name": "mask", "dtype": "image"}, {"name": "label", "dtype": "int64"},
    {"name": "generator", "dtype": "string"}, {"name": "params", "dtype": "string"},
    {"name": "seed", "dtype": "int64"}, {"name": "source", "dtype": "string"}, {"name": "eap", "dtype": "float64"},
]


# license ids the Hub accepts in card metadata (a subset of its list); anything else is "other"
HUB_LICENSES = {
    "apache-2.0", "mit", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd", "bsd-2-clause", "bsd-3-clause",
    "bsd-3-clause-clear", "cc", "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0",
    "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0", "cc-by-nc-nd-3.0",
    "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0", "cdla-permissive-2.0",
    "cdla-sharing-1.0", "epl-2.0", "gpl-2.0", "gpl-3.0", "lgpl-2.1", "lgpl-3.0", "mpl-2.0", "odbl", "odc-by",
    "openrail", "pddl", "unlicense", "other", "unknown",
}


def hub_license(text: str | None) -> str:
    """The card's ``license`` metadata: the user's license when it is a Hub license id, else ``other``
    (the user's own words stay in the card's table)."""
    key = (text or "").strip().lower()
    return key if key in HUB_LICENSES else "other"


def write_dataset_card(root: str | Path | Store, info: dict[str, Any], extra_sections: str = "") -> str:
    """Write ``README.md`` for the folder from its shards, manifest and run ``info``; returns its
    path (a URL on a remote store)."""
    store = as_store(root)
    files = shards(store)
    records = Manifest(store).load()
    counts = Counter(r["generator"] for r in records.values() if r["label"] > 0)
    normals = sum(1 for r in records.values() if r["label"] == 0)
    size = sum(store.size(p) for p in files)
    header = {
        "license": hub_license(info.get("license")),
        "task_categories": ["image-segmentation"],
        "tags": ["anomaly-detection", "synthetic", "anomalyforge"],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": SHARD_FILES}]}],
        "dataset_info": {
            "features": FEATURE_YAML,
            "splits": [{"name": "train", "num_bytes": size, "num_examples": len(records)}],
            "download_size": size,
            "dataset_size": size,
        },
    }
    lines = [
        "---", yaml.safe_dump(header, sort_keys=False).rstrip(), "---", "",
        f"# {info.get('title', 'Synthetic anomaly dataset')}", "",
        "Synthetic anomalies with pixel masks, made by anomalyforge from defect-free images.", "",
        "| field | value |", "|---|---|",
        f"| samples | {len(records)} ({normals} unchanged) |",
        f"| anomalies per generator | {', '.join(f'{k}: {v}' for k, v in sorted(counts.items())) or 'none'} |",
        f"| seed | {info.get('seed')} |",
        f"| anomalyforge version | {info.get('version')} |",
        f"| source images | {Path(str(info['input'])).name if info.get('input') else 'not stated'} |",
        f"| license of the source images | {info.get('license') or 'not stated'} |",
        "", "## Generator", "", "```json", json.dumps(info.get("generator_config", {}), indent=2, sort_keys=True), "```", "",
        "## Columns", "",
        "- `image`: the anomalous image (PNG). `mask`: its anomaly mask (8-bit PNG, 255 = anomaly; soft",
        "  masks to the nearest 1/255). `label`: 0 unchanged, >0 anomalous.",
        "- `generator`, `params` (JSON of the parameters actually drawn), `seed` (re-creates the sample",
        "  from its source image), `source` (the normal image, relative to the input folder).",
        "- `eap`: the sample's Expected Anomaly Posterior (empty until the dataset is scored).", "",
        "```python", "from datasets import load_dataset", "ds = load_dataset(\"path/or/repo\")", "```", "",
    ]
    if extra_sections:
        lines += [extra_sections.rstrip(), ""]
    store.write_atomic("README.md", "\n".join(lines).encode("utf-8"))
    return store.url("README.md")
