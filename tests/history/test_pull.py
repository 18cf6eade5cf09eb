"""Public-history pull: registry, download + checksum + cache, local mirror. Never touches
the real network: downloads come from an http.server on 127.0.0.1 serving ../shared/data."""
from __future__ import annotations

import functools
import http.server
import re
import shutil
import threading

import pytest

from history.errors import HistoryImportError, NotFoundError
from history.importers import IMPORTERS, load_all
from history.importers.base import sha256_of
from history.pull import PUBLIC_HISTORIES, PublicHistory, RemoteFile, get_history, list_histories, pull

load_all()
EXPECTED = {"transfergraph-image", "transfergraph-text", "shift", "parc", "timm", "vtab", "two-phase-selection",
            "openclip"}


class _Server:
    """Serve a folder on 127.0.0.1 in a thread; count requests."""

    def __init__(self, root):
        hits = self.hits = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *a):  # keep test output clean
                pass

            def do_GET(self):
                hits.append(self.path)
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server(shared_data):
    s = _Server(shared_data)
    yield s
    s.close()


# ---------------------------------------------------------------------- registry
def test_registry_names():
    assert set(PUBLIC_HISTORIES) == EXPECTED
    assert [r["name"] for r in list_histories()] == list(PUBLIC_HISTORIES)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_registry_entry_is_pinned(name):
    h = PUBLIC_HISTORIES[name]
    assert isinstance(h, PublicHistory) and h.name == name and h.description
    assert h.importer in IMPORTERS
    assert h.files and len({f.name for f in h.files}) == len(h.files)
    for f in h.files:
        assert isinstance(f, RemoteFile)
        assert re.fullmatch(r"https://raw\.githubusercontent\.com/[\w.-]+/[\w.-]+/[0-9a-f]{40}/\S+", f.url), f.url
        # the local name is the file's name, or <part>/<file name> where a history has two files of one name
        # (two-phase-selection: CV/matrix.txt <- coarse_recall/CV_coarse_recall/matrix.txt)
        assert f.url.endswith("/" + f.name.rsplit("/", 1)[-1])
        assert f.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", f.sha256)


@pytest.mark.parametrize("name", sorted(EXPECTED - {"transfergraph-text"}))
def test_pinned_checksums_match_the_public_mirror(name, shared_data):
    for f in PUBLIC_HISTORIES[name].files:
        assert f.sha256 == sha256_of(shared_data / name / f.name), f.name


def test_text_history_has_no_checksums_and_says_so():
    h = PUBLIC_HISTORIES["transfergraph-text"]
    assert all(f.sha256 is None for f in h.files) and h.options == {"layout": "text"}
    assert not [r for r in list_histories() if r["name"] == h.name][0]["verified"]


def test_unknown_name_lists_valid_names(store):
    with pytest.raises(NotFoundError) as e:
        pull(store, "transfergraf-image")
    msg = str(e.value)
    assert all(n in msg for n in EXPECTED) and "did you mean transfergraph-image" in msg
    with pytest.raises(NotFoundError):
        get_history("nope")


# ---------------------------------------------------------------------- download
def test_pull_downloads_verifies_caches_and_imports(store, server, tmp_path):
    cache = tmp_path / "cache"
    r = pull(store, "parc", cache_dir=cache, base_url=f"{server.url}/parc", progress=False)
    assert r.jobs_added == 469 - 10 + 196 and r.dropped
    assert sorted(server.hits) == ["/parc/all.csv", "/parc/controlled.csv"]
    assert sorted(p.name for p in cache.iterdir()) == ["all.csv", "controlled.csv"]
    assert any("sha256 verified" in n for n in r.notes)
    # second pull: cached verified files are reused, nothing downloaded, nothing added
    r2 = pull(store, "parc", cache_dir=cache, base_url=f"{server.url}/parc", progress=False)
    assert len(server.hits) == 2 and r2.jobs_added == 0
    assert sum("reused verified cached copy" in n for n in r2.notes) == 2


def test_pull_default_cache_is_under_home(store, server, home):
    pull(store, "parc", base_url=f"{server.url}/parc", progress=False)
    assert (home / "cache" / "parc" / "all.csv").exists()


def test_corrupt_cache_entry_is_downloaded_again(store, server, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "all.csv").write_text("stale\n")
    pull(store, "parc", cache_dir=cache, base_url=f"{server.url}/parc", progress=False)
    assert "/parc/all.csv" in server.hits
    assert sha256_of(cache / "all.csv") == PUBLIC_HISTORIES["parc"].files[0].sha256


def test_checksum_mismatch_discards_file_and_leaves_store(store, shared_data, tmp_path):
    bad = tmp_path / "origin"
    shutil.copytree(shared_data / "parc", bad)
    (bad / "controlled.csv").write_text((bad / "controlled.csv").read_text().replace("89.97", "99.97"))
    srv = _Server(bad)
    try:
        cache = tmp_path / "cache"
        with pytest.raises(HistoryImportError, match=r"controlled\.csv .*sha256 .*expected .*discarded"):
            pull(store, "parc", cache_dir=cache, base_url=srv.url, progress=False)
    finally:
        srv.close()
    assert not (cache / "controlled.csv").exists()
    assert store.stats()["totals"]["jobs"] == 0


def test_unreachable_origin_is_a_clear_error(store, tmp_path):
    with pytest.raises(HistoryImportError, match="cannot download .*from_dir"):
        pull(store, "parc", cache_dir=tmp_path / "c", base_url="http://127.0.0.1:9", progress=False, timeout=5)


# ---------------------------------------------------------------------- local mirror
def test_pull_from_local_mirror_parent_or_folder(store, shared_data):
    r = pull(store, "timm", from_dir=shared_data, progress=False)
    assert r.jobs_added == 1556 and not any("differs" in n for n in r.notes)
    assert pull(store, "timm", from_dir=shared_data / "timm").jobs_added == 0


def test_pull_passes_importer_options(store, shared_data):
    r = pull(store, "transfergraph-image", from_dir=shared_data, include_food101=True)
    assert "food101" in set(store.jobs_frame()["dataset"]) and r.source == "transfergraph-image"


def test_local_mirror_missing_file(store, shared_data, tmp_path):
    part = tmp_path / "shift"
    part.mkdir()
    shutil.copy(shared_data / "shift" / "huggingface_cv_models.csv", part)
    with pytest.raises(HistoryImportError, match="missing file.*ftrecords.csv"):
        pull(store, "shift", from_dir=part)
