"""Integration tests share one pulled cache for the whole session.

`$LMADAPT_HOME` is used when set (CI can keep it between runs so nothing is fetched twice); otherwise a
session temporary folder. Every test in this folder sees it, so each model and dataset is pulled once.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def lmadapt_home(tmp_path_factory) -> Path:
    """The cache root for this session's real pulls (sets `LMADAPT_HOME`)."""
    preset = os.environ.get("LMADAPT_HOME")
    home = Path(preset) if preset else tmp_path_factory.mktemp("lmadapt-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LMADAPT_HOME", str(home))
        yield home


@pytest.fixture(scope="session")
def minilm_dir(lmadapt_home) -> Path:
    """The pulled all-MiniLM-L6-v2 folder (BertModel + tokenizer)."""
    from lmadapt.sources import resolve_model

    return Path(resolve_model("minilm-l6"))


@pytest.fixture(scope="session")
def smollm_dir(lmadapt_home) -> Path:
    """The pulled SmolLM2-135M-Instruct folder (LlamaForCausalLM fp32 + tokenizer with chat template)."""
    from lmadapt.sources import resolve_model

    return Path(resolve_model("smollm2-135m-instruct"))


def pytest_collection_modifyitems(items):
    # Everything in this folder uses real pulls: mark it so `-m "not integration"` skips it.
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)
