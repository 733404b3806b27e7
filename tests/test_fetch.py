"""Fetching pinned archives: no package code runs, hashes are checked first, stalls time out (no network).

Every index here is local: a PEP 503 file:// index in tmp_path, or a tiny HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time

import pytest

from fake_index import archive_bytes, local_server, publish, reply, stall, use_only_index
from lmadapt.errors import SourceError
from lmadapt.sources import DATASETS, convert_text, pull_dataset, read_manifest
from lmadapt.sources.catalog import Artifact, DatasetEntry
from lmadapt.sources.fetch import fetch_archive
from lmadapt.sources.index import pip_settings, redact

REVIEWS = "text,label,source\n" + "".join(f"review {i},{i % 2},imdb\n" for i in range(20))


@pytest.fixture()
def home(tmp_path, monkeypatch):
    path = tmp_path / "home"
    monkeypatch.setenv("LMADAPT_HOME", str(path))
    return path


def _cached_files(home):
    return [p for p in (home / "archives").rglob("*") if p.is_file()] if (home / "archives").exists() else []


def _evil_sdist(marker) -> bytes:
    """An sdist whose setup.py, if anything ever ran it, would write `marker`."""
    setup = f"from pathlib import Path\nPath({str(marker)!r}).write_text('setup.py ran')\n"
    setup += "from setuptools import setup\nsetup(name='evil-data', version='1.0')\n"
    info = "Metadata-Version: 2.1\nName: evil-data\nVersion: 1.0\n"
    files = {
        "evil_data-1.0/setup.py": setup.encode(),
        "evil_data-1.0/PKG-INFO": info.encode(),
        "evil_data-1.0/data/reviews.csv": REVIEWS.encode(),
    }
    return archive_bytes(files, "sdist")


def test_an_sdist_is_fetched_without_running_its_setup_code(home, tmp_path, monkeypatch):
    marker = tmp_path / "MARKER"
    root = tmp_path / "index"
    digest = publish(root, "evil_data-1.0.tar.gz", _evil_sdist(marker), advertise_hash=False)
    use_only_index(monkeypatch, (root / "simple").as_uri())

    # The old way, `pip download --no-deps`, runs setup.py to read the metadata (before any hash check).
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--no-build-isolation"]
        + ["--quiet", "--dest", str(tmp_path / "pip-dl"), "evil-data==1.0"],
        capture_output=True,
        check=False,
    )
    assert marker.read_text() == "setup.py ran"  # so the marker does notice code that runs
    marker.unlink()

    # A wrong pin: rejected, nothing cached, nothing run.
    wrong = Artifact("evil-data", "1.0", "sdist", hashlib.sha256(b"other").hexdigest())
    with pytest.raises(SourceError, match=r"cannot fetch evil-data==1.0 \(sdist\): the catalog pins sha256"):
        fetch_archive(wrong)
    assert not _cached_files(home) and not marker.exists()

    # The right pin: the archive is cached and read, and its setup.py still never ran.
    artifact = Artifact("evil-data", "1.0", "sdist", digest)
    entry = DatasetEntry("evil", artifact, "evil_data-1.0/data/reviews.csv", convert_text.imdb, "t")
    monkeypatch.setitem(DATASETS, "evil", entry)
    manifest = read_manifest(pull_dataset("evil"))
    assert manifest["records"] == 20 and manifest["artifact"]["sha256"] == digest
    assert [p.name for p in _cached_files(home)] == ["evil_data-1.0.tar.gz"]
    assert not marker.exists()


def test_pep691_json_index_over_http_then_the_cache(home, monkeypatch):
    data = archive_bytes({"pkg/reviews.csv": REVIEWS.encode()}, "wheel")
    digest = hashlib.sha256(data).hexdigest()
    name = "fake_json-1.0-py3-none-any.whl"
    page = {"files": [{"filename": name, "url": f"../../files/{name}", "hashes": {"sha256": digest}}]}
    routes = {
        "/simple/fake-json/": reply(json.dumps(page).encode(), "application/vnd.pypi.simple.v1+json"),
        f"/files/{name}": reply(data),
    }
    artifact = Artifact("Fake.JSON", "1.0", "wheel", digest)  # PEP 503 name normalisation
    with local_server(routes) as url:
        use_only_index(monkeypatch, f"{url}/simple")
        first = fetch_archive(artifact)
    assert first.name == name and first.read_bytes() == data
    assert fetch_archive(artifact) == first  # the server is gone: served from the cache


def test_a_stalling_index_times_out_with_a_clear_message(home, monkeypatch):
    artifact = Artifact("fake-slow", "1.0", "wheel", "0" * 64)
    with local_server({"/simple/fake-slow/": stall()}) as url:
        use_only_index(monkeypatch, f"{url}/simple")
        start = time.monotonic()
        with pytest.raises(SourceError) as err:
            fetch_archive(artifact, timeout=0.5)
        assert time.monotonic() - start < 5
    message = str(err.value)
    assert message.startswith("cannot fetch fake-slow==1.0 (wheel): no index has that file")
    assert f"could not read {url}/simple (no answer within 0.5 s)" in message
    assert "`pip config list`" in message and not _cached_files(home)


def test_a_download_that_stalls_times_out_and_leaves_nothing(home, monkeypatch):
    name = "fake_stall-1.0-py3-none-any.whl"
    page = f'<a href="/files/{name}">{name}</a>'.encode()  # PEP 503 HTML, no hash: it must download
    routes = {"/simple/fake-stall/": reply(page, "text/html"), f"/files/{name}": stall(after=b"PK\x03\x04")}
    with local_server(routes) as url:
        use_only_index(monkeypatch, f"{url}/simple")
        start = time.monotonic()
        with pytest.raises(
            SourceError, match=r"the download of .*/files/fake_stall.* stalled: no data for 0.5 s"
        ):
            fetch_archive(Artifact("fake-stall", "1.0", "wheel", "0" * 64), timeout=0.5)
        assert time.monotonic() - start < 5
    assert not _cached_files(home) and not list((home / "archives").iterdir())


def test_missing_files_name_the_package_and_what_the_index_has(home, tmp_path, monkeypatch):
    root = tmp_path / "index"
    publish(root, "fake_pkg-2.0-py3-none-any.whl", archive_bytes({"a": b"x"}, "wheel"))
    publish(root, "fake_pkg-1.0.tar.gz", archive_bytes({"a": b"x"}, "sdist"))
    use_only_index(monkeypatch, (root / "simple").as_uri())
    with pytest.raises(SourceError, match=r"fake-pkg==1.0 \(wheel\): no index has that file \(it lists "):
        fetch_archive(Artifact("fake-pkg", "1.0", "wheel", "0" * 64))
    with pytest.raises(
        SourceError, match=r"no-such-pkg==1.0 \(wheel\): no index has that file; searched file:"
    ):
        fetch_archive(Artifact("no-such-pkg", "1.0", "wheel", "0" * 64))


def test_pip_settings_follow_pips_own_precedence(tmp_path, monkeypatch):
    conf = tmp_path / "pip.conf"
    conf.write_text(
        "[global]\nindex-url = https://a.example/simple\nextra-index-url = https://b.example/simple file:///c\n"
        "find-links = /some/wheels\ncert = /etc/ca.pem\n"
        "[download]\nindex-url = https://d.example/simple\n[install]\nindex-url = https://e.example/simple\n"
    )
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX", "PIP_CERT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    settings = pip_settings()
    assert settings.indexes == ["https://d.example/simple", "https://b.example/simple", "file:///c"]
    assert settings.find_links == ["/some/wheels"] and settings.cert == "/etc/ca.pem"
    monkeypatch.setenv("PIP_INDEX_URL", "https://f.example/simple")  # the environment wins, as in pip
    assert pip_settings().indexes[0] == "https://f.example/simple"
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    assert pip_settings().indexes == [] and pip_settings().find_links == ["/some/wheels"]


def test_find_links_folders_and_url_credentials(home, tmp_path, monkeypatch):
    data = archive_bytes({"a": b"x"}, "wheel")
    digest = hashlib.sha256(data).hexdigest()
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "fake_links-1.0-py3-none-any.whl").write_bytes(data)
    use_only_index(monkeypatch, (tmp_path / "empty").as_uri())
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    assert fetch_archive(Artifact("fake-links", "1.0", "wheel", digest)).read_bytes() == data

    name = "fake_auth-1.0-py3-none-any.whl"
    expected = "Basic dXNlcjpzM2NyM3Q="  # user:s3cr3t

    def guarded(route):
        def check(handler, stop):
            if handler.headers.get("Authorization") != expected:
                return reply(b"", status=401)(handler, stop)
            return route(handler, stop)

        return check

    routes = {
        "/simple/fake-auth/": guarded(reply(f'<a href="/files/{name}">{name}</a>'.encode(), "text/html")),
        f"/files/{name}": guarded(reply(data)),
    }
    with local_server(routes) as url:
        index = url.replace("http://", "http://user:s3cr3t@") + "/simple"
        use_only_index(monkeypatch, index)
        assert fetch_archive(Artifact("fake-auth", "1.0", "wheel", digest)).read_bytes() == data
        with pytest.raises(SourceError) as err:
            fetch_archive(Artifact("fake-none", "1.0", "wheel", digest))
    assert "s3cr3t" not in str(err.value) and "user:***@127.0.0.1" in str(err.value)
    assert redact("https://u:p@h.example:8080/simple") == "https://u:***@h.example:8080/simple"
    assert redact("https://t0ken@h.example/simple") == "https://***@h.example/simple"


# ---------------------------------------------------------------- npm

needs_npm = pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
SCRIPTS = ("preinstall", "install", "postinstall", "prepare", "prepack", "postpack")


def _npm_package(marker_dir) -> tuple[dict, bytes]:
    """package.json with every lifecycle script writing a marker file, and its `npm pack`-style tarball."""
    write = "node -e \"require('fs').writeFileSync('{}', 'ran')\""
    package = {
        "name": "fake-npm-data",
        "version": "1.0.0",
        "scripts": {s: write.format(marker_dir / s) for s in SCRIPTS},
    }
    files = {"package/package.json": json.dumps(package).encode(), "package/ca01": b"\tA/at cat/nn ./.\n"}
    return package, archive_bytes(files, "npm")


@pytest.fixture()
def npm_env(tmp_path, monkeypatch):
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm-cache"))  # npm's own settings
    monkeypatch.setenv("npm_config_fetch_retries", "0")
    monkeypatch.setenv("npm_config_update_notifier", "false")


@needs_npm
def test_npm_pack_runs_no_package_scripts_and_checks_the_hash(home, tmp_path, monkeypatch, npm_env):
    markers = tmp_path / "markers"
    markers.mkdir()
    package, tarball = _npm_package(markers)
    digest = hashlib.sha256(tarball).hexdigest()

    # Control: npm does run a package's scripts when it packs a folder without --ignore-scripts.
    folder = tmp_path / "src-pkg"
    folder.mkdir()
    (folder / "package.json").write_text(json.dumps(package))
    subprocess.run(["npm", "pack", "--silent", "--pack-destination", str(tmp_path), str(folder)], check=True)
    assert (markers / "prepack").exists()
    for path in markers.iterdir():
        path.unlink()

    routes = {"/fake-npm-data/-/fake-npm-data-1.0.0.tgz": reply(tarball)}
    with local_server(routes) as url:
        packument = {
            "name": "fake-npm-data",
            "dist-tags": {"latest": "1.0.0"},
            "versions": {
                "1.0.0": {**package, "dist": {"tarball": f"{url}/fake-npm-data/-/fake-npm-data-1.0.0.tgz"}}
            },
        }
        routes["/fake-npm-data"] = reply(json.dumps(packument).encode(), "application/json")
        monkeypatch.setenv("npm_config_registry", f"{url}/")
        with pytest.raises(SourceError, match=r"fake-npm-data@1.0.0 \(npm\): .* the catalog pins 0000"):
            fetch_archive(Artifact("fake-npm-data", "1.0.0", "npm", "0" * 64))
        assert not _cached_files(home)
        archive = fetch_archive(Artifact("fake-npm-data", "1.0.0", "npm", digest))
    assert archive.read_bytes() == tarball and archive.name == "fake-npm-data-1.0.0.tgz"
    assert list(markers.iterdir()) == []  # no lifecycle script ran, from either fetch


@needs_npm
def test_a_stalling_npm_registry_times_out_with_a_clear_message(home, monkeypatch, npm_env):
    with local_server({"/fake-npm-slow": stall()}) as url:
        monkeypatch.setenv("npm_config_registry", f"{url}/")
        start = time.monotonic()
        with pytest.raises(
            SourceError, match=r"fake-npm-slow@1.0.0 \(npm\): the registry did not answer within 1 s"
        ):
            fetch_archive(Artifact("fake-npm-slow", "1.0.0", "npm", "0" * 64), npm_timeout=1)
        assert time.monotonic() - start < 30
    assert not _cached_files(home)
