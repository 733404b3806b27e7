"""Raw text for pretraining: documents in, examples out (CLM blocks, MLM blocks, NSP sentence pairs).

from lmadapt.data.corpus import read_documents, tokenize_documents, clm_blocks, mlm_blocks, nsp_pairs
docs = read_documents("pubmed-mesh", "train", ["title", "abstract"])    # a catalog split's text fields
docs = read_documents(None, "notes.txt", documents="blank-line")        # a .txt file: one doc per block
blocks = clm_blocks(tokenize_documents(docs, tokenizer), tokenizer.eos_token_id, 128)

Documents come from a `.txt` file (one per blank-line-separated block, or one per line), or from the text
field(s) of any split `load_split` reads (JSONL/CSV/... files, pulled datasets); several fields are joined
with a newline. Everything here is deterministic: the same documents and seed give the same examples.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from ..config.text import read_utf8
from ..errors import DataError
from .load import load_split, subset

IGNORE = -100  # label of a position that carries no loss
_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n")
# a sentence ends at . ! ? (maybe closed by a quote or bracket) followed by space and a capital or digit
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(\[]?[A-Z0-9])")


# --- reading ------------------------------------------------------------------------------------------------
def read_documents(
    source: str | None,
    split: str | None,
    text: list[str] | tuple[str, ...] = ("text",),
    *,
    documents: str = "blank-line",
    limit: int | None = None,
    seed: int = 0,
) -> list[str]:
    """The documents of one split: a `.txt` file, else the `text` field(s) of each record (joined by a
    newline). `limit` keeps a seeded random subset of documents, in order; a `None` split gives []."""
    if split is None:
        return []
    path = Path(split).expanduser()
    if path.suffix.lower() == ".txt":
        return subset(read_txt(path, documents), limit, seed)
    records = load_split(source, split, {name: "str" for name in text}, limit=limit, seed=seed)
    return ["\n".join(record[name].strip() for name in text) for record in records]


def read_txt(path: str | Path, documents: str = "blank-line") -> list[str]:
    """A plain UTF-8 text file as documents: blank-line-separated blocks (`blank-line`) or lines (`line`)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    text = read_utf8(path, DataError, "file").replace("\r\n", "\n")
    if documents == "line":
        parts = text.split("\n")
    elif documents == "blank-line":
        parts = _BLANK_LINE.split(text)
    else:
        raise ValueError(f"documents must be 'blank-line' or 'line', got {documents!r}")
    found = [part.strip() for part in parts if part.strip()]
    if not found:
        raise DataError(f"{path}: no text (the file is empty or blank)")
    return found


def split_sentences(document: str) -> list[str]:
    """A document's sentences: each non-empty line, cut further after . ! ? before a capital or digit."""
    sentences = []
    for line in document.split("\n"):
        sentences += [s.strip() for s in _SENTENCE_END.split(line) if s.strip()]
    return sentences


# --- tokenizing ---------------------------------------------------------------------------------------------
def tokenize_documents(texts: list[str], tokenizer) -> list[dict]:
    """Each text as {input_ids, word_start} without special tokens; word_start marks each word's first token
    (words as the fast tokenizer's pre-tokenizer splits them), which whole-word masking needs."""
    if not texts:
        return []
    encoded = tokenizer(texts, add_special_tokens=False, return_attention_mask=False, verbose=False)
    out = []
    for index, ids in enumerate(encoded["input_ids"]):
        words = encoded.word_ids(index) if encoded.is_fast else [None] * len(ids)
        starts = [int(w is None or i == 0 or w != words[i - 1]) for i, w in enumerate(words)]
        out.append({"input_ids": list(ids), "word_start": starts})
    return out


# --- causal LM ----------------------------------------------------------------------------------------------
def clm_blocks(docs: list[dict], eos_id: int, width: int, pack: bool = True) -> list[dict]:
    """Causal-LM examples: input_ids and labels (the same ids; the model shifts them, so each position's
    target is the next token). pack: all documents joined, each followed by EOS, cut into `width`-token
    blocks with no padding (the last partial block is dropped); else one example per document + EOS,
    truncated to `width`."""
    if not pack:
        rows = [(d["input_ids"] + [eos_id])[:width] for d in docs if d["input_ids"]]
        return [{"input_ids": ids, "labels": list(ids)} for ids in rows]
    stream = [t for d in docs if d["input_ids"] for t in (*d["input_ids"], eos_id)]
    if len(stream) < width:
        raise DataError(
            f"the text holds {len(stream)} tokens, fewer than one block of train.max_length={width}: "
            "give more text, lower train.max_length, or set task.pack: false"
        )
    blocks = [stream[i : i + width] for i in range(0, len(stream) - width + 1, width)]
    return [{"input_ids": ids, "labels": list(ids)} for ids in blocks]


def mlm_blocks(docs: list[dict], cls_id: int, sep_id: int, width: int, pack: bool = True) -> list[dict]:
    """Masked-LM examples `[CLS] tokens [SEP]` (input_ids, word_start; labels come from masking at batch
    time). pack: documents joined with [SEP] between them, cut into blocks of `width` tokens in all (the
    last partial block is dropped, unless it is the only one); else one example per document, truncated."""
    body = width - 2
    if pack:
        ids, starts = [], []
        for d in docs:
            if d["input_ids"]:
                ids += [*d["input_ids"], sep_id]
                starts += [*d["word_start"], 0]
        pieces = [(ids[i : i + body], starts[i : i + body]) for i in range(0, len(ids), body)]
        if len(pieces) > 1 and len(pieces[-1][0]) < body:
            pieces.pop()
    else:
        pieces = [(d["input_ids"][:body], d["word_start"][:body]) for d in docs if d["input_ids"]]
    return [
        {"input_ids": [cls_id, *p_ids, sep_id], "word_start": [0, *p_starts, 0]}
        for p_ids, p_starts in pieces
        if p_ids
    ]


# --- next-sentence prediction -------------------------------------------------------------------------------
NEXT, SAME_DOC, OTHER_DOC = 0, 1, 2  # NSP labels (BERT's: 0 = B follows A, 1 = B is random)


def nsp_pairs(
    docs: list[list[dict]], cls_id: int, sep_id: int, max_length: int, classes: int = 2, seed: int = 0
) -> list[dict]:
    """Sentence pairs `[CLS] A [SEP] B [SEP]` with token_type_ids 0 for A's part and 1 for B's.

    `docs` holds each document's tokenized sentences. Every sentence that has a next one is an A, and the
    labels are balanced exactly (shuffled with `seed`): 2 classes: B is the next sentence (0) or a sentence
    of another document (1, never the same one); 3 classes: next (0), another sentence of the same document
    that is neither A nor the next (1), a sentence of another document (2). With 3 classes only documents
    of 3 or more sentences give A's. `docs` on each pair records the documents A and B came from.
    """
    rng = random.Random(seed)
    if sum(1 for d in docs if d) < 2:
        raise DataError("next-sentence prediction needs at least two documents with text")
    least = 3 if classes == 3 else 2
    anchors = [(d, i) for d, sents in enumerate(docs) if len(sents) >= least for i in range(len(sents) - 1)]
    if not anchors:
        raise DataError(f"no document has {least} or more sentences to build sentence pairs from")
    labels = [k % classes for k in range(len(anchors))]
    rng.shuffle(labels)
    other_label = OTHER_DOC if classes == 3 else 1
    nonempty = [k for k, sents in enumerate(docs) if sents]
    pairs = []
    for (d, i), label in zip(anchors, labels, strict=True):
        if label == NEXT:
            b_doc, j = d, i + 1
        elif label == other_label:
            b_doc = d
            while b_doc == d:  # another document, never A's own
                b_doc = rng.choice(nonempty)
            j = rng.randrange(len(docs[b_doc]))
        else:  # same document, not A and not the next one
            b_doc, j = d, rng.choice([k for k in range(len(docs[d])) if k not in (i, i + 1)])
        pair = _pair(docs[d][i], docs[b_doc][j], cls_id, sep_id, max_length)
        pairs.append(pair | {"next_sentence_label": label, "docs": [d, b_doc]})
    return pairs


def _pair(a: dict, b: dict, cls_id: int, sep_id: int, max_length: int) -> dict:
    """`[CLS] A [SEP] B [SEP]`, the longer of A and B cut from its end until the pair fits."""
    a_ids, b_ids = list(a["input_ids"]), list(b["input_ids"])
    a_starts, b_starts = list(a["word_start"]), list(b["word_start"])
    while len(a_ids) + len(b_ids) > max_length - 3:
        longer_ids, longer_starts = (a_ids, a_starts) if len(a_ids) >= len(b_ids) else (b_ids, b_starts)
        longer_ids.pop()
        longer_starts.pop()
    ids = [cls_id, *a_ids, sep_id, *b_ids, sep_id]
    return {
        "input_ids": ids,
        "token_type_ids": [0] * (len(a_ids) + 2) + [1] * (len(b_ids) + 1),
        "word_start": [0, *a_starts, 0, *b_starts, 0],
    }
