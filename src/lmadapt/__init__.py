"""lmadapt: adapt pretrained language models to a task, from one YAML recipe."""

__version__ = "0.1.0"
