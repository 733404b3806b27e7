"""Self-Instruct / Alpaca-style instruction data generation (`lmadapt synth`)."""

from .config import SynthConfig, load_synth_config
from .pipeline import load_seeds, run_synth

__all__ = ["SynthConfig", "load_synth_config", "load_seeds", "run_synth"]
