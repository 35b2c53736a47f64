"""Publishing atlas_kit folders on the Hugging Face Hub through ``huggingface_hub``.

:func:`push_to_hub` uploads a retriever, reader, Atlas model (folders or the objects themselves,
saved first into a temporary folder) or an index folder (as a dataset repository), writing the
model card (:mod:`atlas_kit.model_card`) when the folder has none. The repository id, the token
and the endpoint come only from the caller (arguments, or ``huggingface_hub``'s own login and
environment): nothing read from the folder decides where an upload or a credential goes.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

from atlas_kit.model_card import folder_kind, write_model_card

__all__ = ["push_to_hub", "REPO_TYPES"]

log = logging.getLogger(__name__)

REPO_TYPES = {"retriever": "model", "reader": "model", "atlas": "model", "index": "dataset"}
_IGNORE = [".*", "**/.*", "*.tmp", "**/*.tmp"]  # temporary files of atomic writes, hidden files


def push_to_hub(source: Any, repo_id: str, *, private: bool | None = None, token: str | None = None,
                commit_message: str | None = None, run: str | os.PathLike | None = None,
                metrics: Mapping[str, Any] | None = None, datasets: Sequence[str] | None = None,
                base_model: str | None = None, api: Any = None) -> Any:
    """Create ``repo_id`` (if needed) and upload ``source`` to it; returns the commit info.

    ``source``: a saved folder (retriever, reader, Atlas model or index) or an object with
    ``save_pretrained`` (Retriever, Reader, Atlas). A folder without ``README.md`` gets its model
    card first (``run``/``metrics``/``datasets``/``base_model`` fill it in); an object is always
    saved with a fresh card. ``api``: an ``huggingface_hub.HfApi`` (default ``HfApi(token=token)``).
    """
    if not isinstance(repo_id, str) or repo_id.count("/") > 1 or not repo_id.strip("/"):
        raise ValueError(f"repo_id must be 'name' or 'owner/name', got {repo_id!r}")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    card = {"run": run, "metrics": metrics, "datasets": datasets, "base_model": base_model}
    if hasattr(source, "save_pretrained") and not isinstance(source, (str, os.PathLike)):
        with tempfile.TemporaryDirectory(prefix="atlas_kit-push-") as tmp:
            folder = Path(tmp) / "folder"
            source.save_pretrained(folder)
            write_model_card(folder, **card)
            return _upload(api, folder, repo_id, private, commit_message)
    folder = Path(source)
    if not folder.is_dir():
        raise FileNotFoundError(f"folder to push not found: {folder}")
    folder_kind(folder)  # refuse what is not an atlas_kit folder
    if not (folder / "README.md").is_file() or any(v is not None for v in card.values()):
        write_model_card(folder, **card)
    return _upload(api, folder, repo_id, private, commit_message)


def _upload(api: Any, folder: Path, repo_id: str, private: bool | None, commit_message: str | None) -> Any:
    kind = folder_kind(folder)
    repo_type = REPO_TYPES[kind]
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    log.info("uploading %s folder %s to %s (%s repository)", kind, folder, repo_id, repo_type)
    return api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type=repo_type,
                             commit_message=commit_message or f"Upload atlas_kit {kind}", ignore_patterns=_IGNORE)
