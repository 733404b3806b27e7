"""Whether a name that is neither a catalog entry nor a local path can come from the Hugging Face Hub.

Asked once, before any loading: the local Hugging Face cache first (no network), then, unless offline mode
is on, one metadata request with a short timeout. So a typo fails at once with a clear message instead of a
transformers / datasets traceback, and a real Hub id still passes through for machines that reach the Hub.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

# Seconds the Hub may take to answer "does this repository exist?".
HUB_TIMEOUT = 10.0

RepoType = Literal["model", "dataset"]


def _on(variable: str) -> bool:
    return os.environ.get(variable, "").strip().lower() in {"1", "true", "yes", "on"}


def hub_offline(repo_type: RepoType) -> bool:
    """Offline mode as huggingface_hub (and, for datasets, the datasets library) read it."""
    from huggingface_hub import constants

    offline = constants.HF_HUB_OFFLINE or _on("HF_HUB_OFFLINE")
    return offline or (repo_type == "dataset" and _on("HF_DATASETS_OFFLINE"))


def in_local_cache(repo_id: str, repo_type: RepoType) -> bool:
    """Whether an earlier download left this repository in the local Hugging Face cache."""
    from huggingface_hub import constants

    # The hub cache layout: <HF_HUB_CACHE>/models--owner--name/snapshots/<revision>/...
    snapshots = Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}" / "snapshots"
    if snapshots.is_dir() and any(snapshots.iterdir()):
        return True
    if repo_type == "dataset":  # the datasets library also keeps prepared copies: <cache>/owner___name
        root = os.environ.get("HF_DATASETS_CACHE") or Path(constants.HF_HOME) / "datasets"
        return (Path(root) / repo_id.replace("/", "___")).is_dir()
    return False


def hub_problem(repo_id: str, repo_type: RepoType, timeout: float = HUB_TIMEOUT) -> str | None:
    """None when the Hub (or its local cache) has `repo_id`; otherwise a short reason it cannot be had."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return f"{repo_id!r} is not a Hub id (those look like 'name' or 'owner/name')"
    if in_local_cache(repo_id, repo_type):
        return None
    if hub_offline(repo_type):
        variables = "HF_HUB_OFFLINE" + (" or HF_DATASETS_OFFLINE" if repo_type == "dataset" else "")
        return f"offline mode is on ({variables}) and it is not in the local Hugging Face cache"
    try:
        HfApi().repo_info(repo_id, repo_type=repo_type, timeout=timeout)
    except GatedRepoError:
        return None  # it exists; the loader explains how to get access
    except RepositoryNotFoundError:
        return "no such repository (or it is private: log in with `hf auth login`)"
    except Exception as exc:  # network failures come as several client-library types; all mean the same here
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        kind = type(exc).__name__
        if "timeout" in kind.lower() or isinstance(exc, TimeoutError):
            return f"the Hub did not answer within {timeout:g} s"
        return (
            f"the Hub could not be reached ({kind}: {text})"
            if text
            else f"the Hub could not be reached ({kind})"
        )
    return None
