"""MEDLINE XML (`pubmedYYnNNNN.xml.gz`) -> records, streamed with the stdlib's iterparse.

Each converter returns `(records, notes)`: notes count what was left out and why, for the manifest.
"""

from __future__ import annotations

import gzip
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from ..errors import SourceError


def _text(element: ET.Element | None) -> str:
    # itertext: titles and abstracts carry inline markup (<i>, <sup>) whose text belongs to the sentence.
    return " ".join("".join(element.itertext()).split()) if element is not None else ""


def _authors(citation: ET.Element) -> list[str]:
    names = []
    for author in citation.findall("Article/AuthorList/Author"):
        collective = _text(author.find("CollectiveName"))
        full = " ".join(x for x in (_text(author.find("ForeName")), _text(author.find("LastName"))) if x)
        if full or collective:
            names.append(full or collective)
    return names


def _articles(path: Path) -> Iterator[dict]:
    """Yield one plain dict per <PubmedArticle>, clearing each element once read to keep memory flat."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            for _, element in ET.iterparse(fh):
                if element.tag != "PubmedArticle":
                    continue
                citation = element.find("MedlineCitation")
                if citation is None:
                    element.clear()
                    continue
                sections = [_text(a) for a in citation.findall("Article/Abstract/AbstractText")]
                yield {
                    "id": _text(citation.find("PMID")),
                    "title": _text(citation.find("Article/ArticleTitle")),
                    "abstract": "\n".join(s for s in sections if s),
                    "authors": _authors(citation),
                    # Owner="NOTNLM": keywords the authors supplied (other owners are indexers' terms).
                    "keywords": [
                        kw
                        for kwlist in citation.findall("KeywordList")
                        if kwlist.get("Owner") == "NOTNLM"
                        for kw in (_text(k) for k in kwlist.findall("Keyword"))
                        if kw
                    ],
                    "mesh": {
                        _text(d) for d in citation.findall("MeshHeadingList/MeshHeading/DescriptorName")
                    },
                }
                element.clear()
    except (ET.ParseError, OSError, EOFError) as exc:
        raise SourceError(f"{path.name}: not readable MEDLINE XML: {exc}") from exc


def pubmed_mesh(path: Path) -> tuple[list[dict], dict]:
    """Articles with an abstract, labelled Humans or Animals by MeSH heading (not both, not neither)."""
    records, notes = [], Counter()
    for art in _articles(path):
        notes["articles"] += 1
        humans, animals = "Humans" in art["mesh"], "Animals" in art["mesh"]
        if not art["abstract"] or not art["title"]:
            notes["dropped_no_abstract_or_title"] += 1
        elif humans and animals:
            notes["dropped_both_humans_and_animals"] += 1
        elif not (humans or animals):
            notes["dropped_neither"] += 1
        else:
            label = "Humans" if humans else "Animals"
            records.append(
                {"id": art["id"], "title": art["title"], "abstract": art["abstract"], "label": label}
            )
    return records, dict(notes)


def pubmed_keywords(path: Path) -> tuple[list[dict], dict]:
    """Articles that have both an abstract and at least one non-empty author keyword."""
    records, notes = [], Counter()
    for art in _articles(path):
        notes["articles"] += 1
        if not art["abstract"] or not art["title"]:
            notes["dropped_no_abstract_or_title"] += 1
        elif not art["keywords"]:
            notes["dropped_no_keywords"] += 1
        else:
            records.append({k: art[k] for k in ("id", "title", "abstract", "authors", "keywords")})
    return records, dict(notes)


def keyword_stats(records: list[dict]) -> dict:
    """Doc and keyword counts; `verbatim_share`: keyphrases found (case-insensitively) in title+abstract."""
    total = sum(len(r["keywords"]) for r in records)
    verbatim = sum(
        kw.lower() in f"{r['title']} {r['abstract']}".lower() for r in records for kw in r["keywords"]
    )
    return {
        "docs": len(records),
        "keywords": total,
        "unique_keywords": len({kw.lower() for r in records for kw in r["keywords"]}),
        "keywords_per_doc": round(total / len(records), 2) if records else 0.0,
        "verbatim_share": round(verbatim / total, 4) if total else 0.0,
    }
