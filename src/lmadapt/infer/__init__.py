"""Inference: one engine for every command that generates text, and multi-turn chat on top of it."""

from .chat import ChatSession, truncate_history
from .engine import Engine, cut_at_stop, load_engine

__all__ = ["ChatSession", "Engine", "cut_at_stop", "load_engine", "truncate_history"]
