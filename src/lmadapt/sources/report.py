"""Human-readable views of the catalog and of pulled entries (rich tables), used by the CLI."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text


def catalog_table(rows: list[dict[str, Any]], title: str) -> Table:
    """The `lmadapt models|data list` table."""
    table = Table(title=title, show_lines=False)
    for column in ("name", "source", "inside the archive", "converter", "license", "pulled"):
        table.add_column(column, overflow="fold")
    for row in rows:
        source = f"{row['package']}{'@' if row['kind'] == 'npm' else '=='}{row['version']} ({row['kind']})"
        if row.get("parts"):
            source += " + " + ", ".join(row["parts"])
        license_ = row.get("license") or "-"
        cells = (
            row["name"],
            source,
            row["path"],
            row["converter"],
            license_,
            "yes" if row["pulled"] else "-",
        )
        table.add_row(*(Text(c) for c in cells))  # Text: `c[a-r]` is a glob, not rich markup
    return table


def manifest_tables(manifest: dict[str, Any]) -> list[Table]:
    """Provenance, then counts per split (and per label), then whole-set figures, as tables."""
    tables = []
    info = Table(title=f"{manifest['kind']} {manifest['name']}", show_header=False)
    info.add_column(style="bold")
    info.add_column(overflow="fold")
    info.add_row("package", f"{manifest['package']} {manifest['version']} ({manifest['artifact']['kind']})")
    info.add_row("archive", manifest["artifact"]["file"])
    info.add_row("archive sha256", manifest["artifact"]["sha256"])
    source = manifest["source"]
    info.add_row("source", Text(f"{source['path']}{'/' + source['include'] if 'include' in source else ''}"))
    info.add_row("source sha256", source["sha256"])
    for part in manifest.get("parts", []):
        info.add_row("part", Text(f"{part['package']} {part['version']}: {part['source']['path']}"))
    if manifest.get("license"):
        info.add_row("license", manifest["license"])
    for key in ("architecture", "parameters", "dtype", "records", "pull_seconds", "created"):
        if key in manifest:
            value = manifest[key]
            info.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    if manifest.get("notes"):
        info.add_row("notes", ", ".join(f"{k} {v:,}" for k, v in manifest["notes"].items()))
    tables.append(info)

    if "splits" in manifest:
        labels = manifest.get("labels") or {}
        names = sorted({lab for counts in labels.values() for lab in counts})
        names = names if len(names) <= 20 else []  # a table this wide helps nobody
        counts = Table(title="records per split" + (", counts per label" if names else ""))
        counts.add_column("split")
        counts.add_column("records", justify="right")
        for lab in names:
            counts.add_column(lab, justify="right")
        for split, n in manifest["splits"].items():
            counts.add_row(split, f"{n:,}", *(f"{labels.get(split, {}).get(lab, 0):,}" for lab in names))
        tables.append(counts)

    if manifest.get("stats"):
        stats = Table(title="figures", show_header=False)
        stats.add_column(style="bold")
        stats.add_column(justify="right")
        for key, value in manifest["stats"].items():
            stats.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
        tables.append(stats)
    return tables
