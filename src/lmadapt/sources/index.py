"""Find one pinned archive on the Python package indexes pip is configured with, and download it.

No package code runs: the index page (PEP 503 HTML or PEP 691 JSON) is read, the file named for the pinned
package, version and kind is downloaded with a socket timeout, and its sha256 is compared with the catalog's
pin before the caller may use it. (`pip download` builds an sdist's metadata, i.e. runs its setup code, before
anything could check a hash; `--require-hashes` only moves that check ahead of the build, it still builds.)

The indexes are pip's own: `index-url` (default https://pypi.org/simple), `extra-index-url`, `find-links`,
`no-index`, `cert` and `proxy`, read from `pip config list` (config files and `PIP_*` variables, as pip
resolves them for `pip download`). http(s) and file:// indexes both work.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import os
import posixpath
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from packaging.tags import sys_tags
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from ..errors import SourceError

DEFAULT_INDEX = "https://pypi.org/simple"
# PEP 691: ask for JSON, accept HTML (PEP 503) from indexes that only serve that.
ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"
CHUNK = 1 << 20


@dataclass(frozen=True)
class PipSettings:
    """The parts of pip's configuration that say where packages come from."""

    indexes: list[str]  # simple-API roots, in pip's order: index-url first, then extra-index-url
    find_links: list[str] = field(default_factory=list)  # local folders or pages of links
    cert: str | None = None
    proxy: str | None = None


@dataclass(frozen=True)
class Candidate:
    """One file an index lists for the pinned package and version."""

    filename: str
    url: str
    sha256: str | None  # as the index advertises it, if it does
    where: str  # the index or find-links entry that listed it


def _truthy(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def pip_settings() -> PipSettings:
    """pip's index settings for `pip download`: config files, then `PIP_*` variables, as pip orders them."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60
        )
        listed = proc.stdout if proc.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        listed = ""
    items: dict[str, str] = {}
    for line in listed.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            try:
                items[key.strip()] = str(ast.literal_eval(value.strip()))  # pip prints values as reprs
            except (ValueError, SyntaxError):
                items[key.strip()] = value.strip()
    if not listed:  # no pip to ask: its environment variables still say what the user wants
        items = {
            f":env:.{k[4:].lower().replace('_', '-')}": v for k, v in os.environ.items() if k[:4] == "PIP_"
        }
    settings: dict[str, str] = {}
    for section in ("global", "download", ":env:"):  # later sections override earlier ones, as in pip
        for key, value in items.items():
            if key.startswith(section + "."):
                settings[key[len(section) + 1 :]] = value
    indexes = [settings.get("index-url") or DEFAULT_INDEX, *settings.get("extra-index-url", "").split()]
    if _truthy(settings.get("no-index", "")):
        indexes = []
    return PipSettings(
        indexes=[u for u in indexes if u],
        find_links=settings.get("find-links", "").split(),
        cert=settings.get("cert") or None,
        proxy=settings.get("proxy") or None,
    )


def redact(url: str) -> str:
    """The URL without its secret (a password, or a token given as the user name), for messages."""
    parts = urlsplit(url)
    if parts.username is None:
        return url
    secret = f"{parts.username}:***" if parts.password is not None else "***"
    return urlunsplit(parts._replace(netloc=f"{secret}@{parts.netloc.rpartition('@')[2]}"))


class _Links(HTMLParser):
    """The link targets of a PEP 503 page."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.hrefs.append(href)


class Index:
    """HTTP(S) and file:// access with pip's cert, proxy and URL credentials, and a socket timeout."""

    def __init__(self, settings: PipSettings, timeout: float):
        self.settings = settings
        self.timeout = timeout
        try:
            context = ssl.create_default_context(cafile=settings.cert)
        except (OSError, ssl.SSLError) as exc:
            raise SourceError(f"pip's `cert` setting {settings.cert!r} cannot be used: {exc}") from exc
        handlers: list[urllib.request.BaseHandler] = [urllib.request.HTTPSHandler(context=context)]
        if settings.proxy:
            handlers.append(urllib.request.ProxyHandler({"http": settings.proxy, "https": settings.proxy}))
        self._opener = urllib.request.build_opener(*handlers)
        # Credentials in an index URL (https://user:token@host/simple) also apply to its files on that host.
        self._auth: dict[str, str] = {}
        for url in settings.indexes + settings.find_links:
            parts = urlsplit(url)
            if parts.username is not None and parts.hostname:
                token = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
                self._auth[parts.hostname] = "Basic " + base64.b64encode(token).decode()

    def open(self, url: str, accept: str = "*/*"):
        """A response to read from (raises urllib.error.URLError, TimeoutError, OSError)."""
        parts = urlsplit(url)
        if parts.username is not None:  # urllib cannot send URL credentials itself: they go in a header
            parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
        request = urllib.request.Request(urlunsplit(parts), headers={"Accept": accept})
        if parts.hostname in self._auth:
            request.add_header("Authorization", self._auth[parts.hostname])
        return self._opener.open(request, timeout=self.timeout)

    # ------------------------------------------------------------ listing
    def project_files(self, index: str, project: str) -> list[Candidate] | None:
        """Files an index lists for a project; None when the index does not know the project."""
        page = index.rstrip("/") + f"/{project}/"
        if page.startswith("file:"):
            folder = Path(urllib.request.url2pathname(urlsplit(page).path))
            if not folder.is_dir():
                return None
            if not (folder / "index.html").is_file():  # a plain folder of archives, as pip accepts
                return self._folder_files(folder, index)
            body, kind = (folder / "index.html").read_bytes(), "text/html"
        else:
            try:
                with self.open(page, ACCEPT) as response:
                    body, kind = response.read(), response.headers.get("Content-Type", "")
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return None
                raise
        return self._parse(body, kind, page, index)

    def link_files(self, entry: str) -> list[Candidate]:
        """Files a find-links entry offers: a local folder (or file:// URL), or an HTML page of links."""
        path = Path(urllib.request.url2pathname(urlsplit(entry).path)) if entry.startswith("file:") else None
        if path is None and "://" not in entry:
            path = Path(entry).expanduser()
        if path is not None:
            if path.is_dir():
                return self._folder_files(path, entry)
            return [Candidate(path.name, path.as_uri(), None, entry)] if path.is_file() else []
        with self.open(entry, "text/html") as response:
            return self._parse(response.read(), "text/html", entry, entry)

    @staticmethod
    def _folder_files(folder: Path, where: str) -> list[Candidate]:
        return [Candidate(p.name, p.as_uri(), None, where) for p in sorted(folder.iterdir()) if p.is_file()]

    @staticmethod
    def _parse(body: bytes, content_type: str, page: str, where: str) -> list[Candidate]:
        if "json" in content_type:  # PEP 691
            files = json.loads(body).get("files", [])
            return [
                Candidate(f["filename"], urljoin(page, f["url"]), f.get("hashes", {}).get("sha256"), where)
                for f in files
            ]
        parser = _Links()  # PEP 503: <a href="URL#sha256=HEX">FILENAME</a>
        parser.feed(body.decode("utf-8", errors="replace"))
        found = []
        for href in parser.hrefs:
            url, _, fragment = urljoin(page, href).partition("#")
            algo, _, digest = fragment.partition("=")
            name = unquote(posixpath.basename(urlsplit(url).path))
            found.append(Candidate(name, url, digest.lower() if algo == "sha256" else None, where))
        return found

    # ------------------------------------------------------------ downloading
    def download(self, candidate: Candidate, dest: Path) -> str:
        """Copy the file to `dest` and return its sha256 (computed while it streams)."""
        digest = hashlib.sha256()
        if candidate.url.startswith("file:"):
            source = open(urllib.request.url2pathname(urlsplit(candidate.url).path), "rb")  # noqa: SIM115
        else:
            source = self.open(candidate.url)
        with source, open(dest, "wb") as out:
            while block := source.read(CHUNK):  # each read waits at most `timeout` seconds
                digest.update(block)
                out.write(block)
        return digest.hexdigest()


def is_timeout(exc: BaseException) -> bool:
    """A socket timeout, raised as is or wrapped in URLError (urllib wraps those of the connect)."""
    return isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None), TimeoutError)


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", None) or exc)


def matches(filename: str, package: str, version: str, kind: str) -> bool:
    """Whether a file name is the pinned package's wheel or sdist of exactly that version."""
    try:
        if kind == "wheel":
            if not filename.endswith(".whl"):
                return False
            name, ver, _, _ = parse_wheel_filename(filename)
        elif kind == "sdist":
            name, ver = parse_sdist_filename(filename)
        else:
            return False
        return name == canonicalize_name(package) and ver == Version(version)
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return False


def _preference(candidate: Candidate, pin: str) -> tuple[int, int]:
    """Files the index says have the pinned hash first; then wheels this interpreter could install."""
    hashed = 0 if candidate.sha256 == pin else 1 if candidate.sha256 is None else 2
    rank = 0
    if candidate.filename.endswith(".whl"):
        tags = parse_wheel_filename(candidate.filename)[3]
        order = {t: i for i, t in enumerate(sys_tags())}
        rank = min((order.get(t, len(order)) for t in tags), default=len(order))
    return hashed, rank


def _project_of(filename: str) -> str | None:
    """The canonical project name in a wheel or sdist file name, or None for other files."""
    try:
        if filename.endswith(".whl"):
            return parse_wheel_filename(filename)[0]
        return parse_sdist_filename(filename)[0]
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return None


def find_candidates(
    index: Index, package: str, version: str, kind: str
) -> tuple[list[Candidate], list[str], list[str]]:
    """(matching files, other file names of the project, indexes that could not be read and why)."""
    project = canonicalize_name(package)
    found: list[Candidate] = []
    others: list[str] = []
    failed: list[str] = []
    listings = [(url, lambda u=url: index.project_files(u, project)) for url in index.settings.indexes]
    listings += [(entry, lambda e=entry: index.link_files(e)) for entry in index.settings.find_links]
    for where, listing in listings:
        try:
            files = listing() or []
        except (OSError, ValueError) as exc:  # URLError and TimeoutError are OSErrors
            why = f"no answer within {index.timeout:g} s" if is_timeout(exc) else _reason(exc)
            failed.append(f"{redact(where)} ({why})")
            continue
        for candidate in files:
            if matches(candidate.filename, package, version, kind):
                found.append(candidate)
            elif _project_of(candidate.filename) == project:
                others.append(candidate.filename)
    return found, others, failed


def fetch_from_index(package: str, version: str, kind: str, pin: str, dest_dir: Path, timeout: float) -> Path:
    """Download the pinned archive into `dest_dir` (a scratch folder) and return it; its sha256 is `pin`.

    Raises SourceError naming the package and what to do when no index lists the file, a download stalls
    longer than `timeout` seconds, or every listed file has another sha256. A file that fails the check is
    deleted at once; nothing of it is left in `dest_dir`.
    """
    spec = f"{package}=={version} ({kind})"
    index = Index(pip_settings(), timeout)
    where = [redact(u) for u in index.settings.indexes + index.settings.find_links]
    candidates, others, failed = find_candidates(index, package, version, kind)
    unread = f"; could not read {', '.join(failed)}" if failed else ""
    if not candidates:
        listed = f" (it lists {', '.join(sorted(set(others))[:6])})" if others else ""
        raise SourceError(
            f"cannot fetch {spec}: no index has that file{listed}; searched {', '.join(where) or 'nothing'}"
            f"{unread}. Check pip's index settings (`pip config list`) and the network, then pull again"
        )
    mismatched: list[str] = []
    broken: list[str] = []
    for candidate in sorted(candidates, key=lambda c: _preference(c, pin)):
        origin = f"{candidate.filename} from {redact(candidate.where)}"
        if candidate.sha256 is not None and candidate.sha256 != pin:
            mismatched.append(f"{origin} has sha256 {candidate.sha256}")
            continue  # the index itself says it is not the pinned file: do not download it
        dest = dest_dir / candidate.filename
        try:
            got = index.download(candidate, dest)
        except OSError as exc:  # URLError and TimeoutError are OSErrors
            dest.unlink(missing_ok=True)
            if is_timeout(exc):
                raise SourceError(
                    f"cannot fetch {spec}: the download of {redact(candidate.url)} stalled: no data for "
                    f"{timeout:g} s. Check the network or proxy and pull again (or pass a larger timeout)"
                ) from exc
            broken.append(f"{origin} ({_reason(exc)})")
            continue
        if got == pin:
            return dest
        dest.unlink()
        mismatched.append(f"{origin} has sha256 {got}")
    if mismatched:
        raise SourceError(
            f"cannot fetch {spec}: the catalog pins sha256 {pin}, but {'; '.join(mismatched)}. The upload "
            "changed (or is not the one the catalog was made from), so it is not used; if the new file is "
            "trusted, update the pin in src/lmadapt/sources/catalog.py"
            + (f". Downloads that failed: {'; '.join(broken)}" if broken else "")
        )
    raise SourceError(f"cannot fetch {spec}: every download failed: {'; '.join(broken)}{unread}; pull again")
