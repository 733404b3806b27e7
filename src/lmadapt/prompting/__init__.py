"""Prompting without training: verbalizer (cloze) scoring, demonstrations, zero-shot / few-shot / CoT."""
