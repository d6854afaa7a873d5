"""The URL-list downloader against a hostile local server (127.0.0.1 only, bounded times)."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest

from nsfwkit import download, images

from data_helpers import HostileServer


def test_read_url_lists_layouts(tmp_path):
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "neutral.txt").write_text("# comment\nhttp://a/1.jpg\n\nhttp://a/1.jpg\nhttp://a/2.jpg\n")
    (tmp_path / "lists" / "urls_porn.txt").write_text("http://b/1.jpg\n")
    (tmp_path / "lists" / "sexy").mkdir()
    (tmp_path / "lists" / "sexy" / "urls_sexy.txt").write_text("http://c/1.jpg\n")
    lists = download.read_url_lists(tmp_path / "lists")
    assert lists == {"neutral": ["http://a/1.jpg", "http://a/2.jpg"], "porn": ["http://b/1.jpg"],
                     "sexy": ["http://c/1.jpg"]}
    with pytest.raises(FileNotFoundError):
        download.read_url_lists(tmp_path / "nope")


def test_hostile_server(tmp_path):
    with HostileServer(hang_s=3.0) as srv:
        urls = {
            "neutral": [srv.url("/ok/a.jpg"), srv.url("/ok/b.png"), srv.url("/redirect.jpg"),
                        srv.url("/flaky.jpg")],
            "porn": [srv.url("/missing.jpg"), srv.url("/html.jpg"), srv.url("/huge.jpg"),
                     srv.url("/huge-nolength.jpg"), srv.url("/loop.jpg"), srv.url("/hang.jpg"),
                     srv.url("/truncated.jpg"), srv.url("/trickle.jpg"), "ftp://127.0.0.1/x.jpg"],
        }
        start = time.monotonic()
        report = download.download(urls, tmp_path / "ds", workers=6, timeout=(2.0, 0.5),
                                   deadline_s=1.0, retries=1, backoff=0.05, max_bytes=100_000,
                                   max_redirects=3, trust_env=False, progress=False)
        elapsed = time.monotonic() - start
        by_url = {r.url.rsplit("/", 1)[-1]: r for r in report.results}
        assert elapsed < 15
        for name in ("a.jpg", "b.png", "redirect.jpg", "flaky.jpg"):
            r = by_url[name]
            assert r.status == "downloaded", (name, r)
            images.load_image(r.path)  # a real image landed
            assert Path(r.path).parent.name == "neutral"
        assert by_url["b.png"].path.endswith(".png") and by_url["a.jpg"].path.endswith(".jpg")
        assert by_url["flaky.jpg"].attempts == 2  # 503, then retried
        reasons = {k: v.reason for k, v in by_url.items() if v.status == "failed"}
        assert "HTTP 404" in reasons["missing.jpg"]
        assert by_url["missing.jpg"].attempts == 1  # 4xx is not retried
        assert "not an image" in reasons["html.jpg"] and "HTML" in reasons["html.jpg"]
        assert "too large" in reasons["huge.jpg"] and "Content-Length" in reasons["huge.jpg"]
        assert "too large" in reasons["huge-nolength.jpg"]
        assert "redirect" in reasons["loop.jpg"]
        assert "timeout" in reasons["hang.jpg"]
        assert by_url["hang.jpg"].attempts == 2
        assert "not an image" in reasons["truncated.jpg"]
        assert "too slow" in reasons["trickle.jpg"]
        assert "scheme" in reasons["x.jpg"]
        assert report.counts() == {"downloaded": 4, "exists": 0, "failed": 9}
        # no partial or rejected file in the dataset
        porn = tmp_path / "ds" / "porn"
        assert not porn.exists() or not any(porn.iterdir())
        with open(report.report_path) as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == 13 and {r["status"] for r in rows} == {"downloaded", "failed"}

        # resumable: a second run fetches nothing it already has
        hits_before = dict(srv.hits)
        again = download.download({"neutral": urls["neutral"]}, tmp_path / "ds", workers=2,
                                  trust_env=False, progress=False)
        assert {r.status for r in again.results} == {"exists"}
        assert srv.hits == hits_before


def test_retry_after_is_honoured_and_capped(tmp_path):
    with HostileServer() as srv:
        urls = {"neutral": [srv.url("/ratelimited.jpg"), srv.url("/ratelimited-long.jpg")]}
        start = time.monotonic()
        report = download.download(urls, tmp_path / "ds", workers=2, retries=2, backoff=0.01,
                                   max_retry_after=10, trust_env=False, progress=False)
        by_url = {r.url.rsplit("/", 1)[-1]: r for r in report.results}
        ok = by_url["ratelimited.jpg"]
        assert ok.status == "downloaded" and ok.attempts == 2
        first, second = srv.times["/ratelimited.jpg"]
        assert second - first >= 0.95  # waited the server's Retry-After, not the 0.01 s back-off
        long = by_url["ratelimited-long.jpg"]
        assert long.status == "failed" and "HTTP 429" in long.reason and "Retry-After" in long.reason
        assert long.attempts == 1  # an hour is over the limit: no waiting, no retry
        assert time.monotonic() - start < 8


@pytest.mark.parametrize("label", ["../escape", "a/b", "..", "", "/abs"])
def test_labels_cannot_escape_the_destination(tmp_path, label):
    dest = tmp_path / "inner" / "ds"
    with pytest.raises(ValueError, match="invalid class label"):
        download.download({label: ["http://127.0.0.1:9/x.jpg"]}, dest, trust_env=False,
                          progress=False)
    assert not (tmp_path / "inner" / "escape").exists()
    assert not dest.exists()  # refused before anything was written


def test_environment_proxies_are_used_unless_disabled(tmp_path, monkeypatch):
    """trust_env=True (default) lets requests use HTTP_PROXY: a dead proxy makes the fetch fail;
    trust_env=False ignores it and reaches the loopback server directly."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with HostileServer() as srv:
        urls = {"neutral": [srv.url("/ok/a.jpg")]}
        via_env = download.download(urls, tmp_path / "a", retries=0, progress=False)
        assert via_env.results[0].status == "failed"
        assert srv.hits.get("/ok/a.jpg", 0) == 0  # the request went to the (dead) proxy
        direct = download.download(urls, tmp_path / "b", retries=0, trust_env=False,
                                   progress=False)
        assert direct.results[0].status == "downloaded"
