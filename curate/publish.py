"""Publishing a hub-ready dataset folder to the Hugging Face Hub with the user's own token."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from synth.dataset.layout import RUN_INFO, dataset_format

from .dataset_scores import SCORES_FILE, refresh_card

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
# local bookkeeping that stays on this machine (dataset.json holds local paths)
NOT_UPLOADED = [RUN_INFO, SCORES_FILE, ".tmp-*", "**/.tmp-*"]


def publish_dataset(
    folder: str | Path,
    repo_id: str,
    private: bool = False,
    license: str | None = None,
    token: str | None = None,
    api: Any = None,
    commit_message: str | None = None,
) -> str:
    """Create (or reuse) the dataset repo ``repo_id`` and upload the hub-ready ``folder`` to it.

    The token is the one given, else ``HF_TOKEN`` or the stored ``hf auth login`` token; it is passed
    to the Hub client only, never printed or written. Returns the repo URL."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    if not REPO_ID.match(repo_id):
        raise ValueError(f"--repo must look like user/name, got {repo_id!r}")
    if dataset_format(folder) != "hf":
        raise ValueError(f"{folder} is not a hub-ready folder (write it with --format hf, or curate it with --format hf)")
    if api is None:
        from huggingface_hub import HfApi, get_token

        token = token or get_token()
        if not token:
            raise ValueError("no Hugging Face token: set HF_TOKEN or run `hf auth login` first")
        api = HfApi()
    refresh_card(folder, license)
    url = api.create_repo(repo_id, token=token, private=private, repo_type="dataset", exist_ok=True)
    api.upload_folder(
        repo_id=repo_id, folder_path=str(folder), repo_type="dataset", token=token,
        commit_message=commit_message or "Upload synthetic anomaly dataset (anomalyforge)", ignore_patterns=NOT_UPLOADED,
    )
    return str(url)
