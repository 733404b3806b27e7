"""Test-wide settings: never reach for the Hub; keep runs deterministic."""

import os

# The Hub is unreachable on these machines; fail fast instead of waiting on retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
