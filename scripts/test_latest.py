"""`make test-latest`: the unit tests against the newest releases pyproject.toml allows (not part of CI).

Run inside .venv-latest (built by the Makefile with `pip install --upgrade -e .[dev]`). Prints the versions
that differ from requirements.txt, runs the unit tests, and writes both into docs/test-latest.md, so drift
shows up before `make lock` brings it in.
"""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WATCH = ["torch", "transformers", "peft", "trl", "accelerate", "datasets", "tokenizers", "safetensors"]


def locked() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==([^\s\\]+)", (ROOT / "requirements.txt").read_text(), re.M)
    return {name.lower(): version for name, version in pins}


def main() -> int:
    lock = locked()
    installed = {d.metadata["Name"].lower(): d.version for d in metadata.distributions()}
    drift = sorted(
        (name, lock[name], version)
        for name, version in installed.items()
        if name in lock and lock[name] != version
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "not integration", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    lines = proc.stdout.strip().splitlines()
    summary = lines[-1] if lines else "(no output)"
    failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    print("\n".join(lines[-40:]))
    doc = [
        "# make test-latest: the newest allowed releases",
        "",
        f"Last run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, Python {sys.version.split()[0]}: "
        f"**{'passed' if proc.returncode == 0 else 'FAILED'}** (`{summary.strip('= ')}`).",
        "",
        "| package | locked | newest allowed |",
        "|---|---|---|",
        *(f"| {n} | {lock.get(n, '-')} | {installed.get(n, '-')} |" for n in WATCH),
        "",
        f"Other packages that differ from the lock: {', '.join(f'{n} {a} -> {b}' for n, a, b in drift if n not in WATCH) or 'none'}.",
        "",
        *(["Failures:", "", *(f"- `{f}`" for f in failed), ""] if failed else []),
        "When it passes, `make lock` moves the lock to these versions (then `make test`).",
    ]
    (ROOT / "docs" / "test-latest.md").write_text("\n".join(doc) + "\n", encoding="utf-8")
    print(f"written: docs/test-latest.md ({'passed' if proc.returncode == 0 else 'failed'})")
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
