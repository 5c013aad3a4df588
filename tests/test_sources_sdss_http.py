"""A total per-try deadline on HTTP reads, against a server that trickles bytes."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_services import FakeServices, make_catalogue  # noqa: E402

from img2spec.paths import Paths, spec_filename  # noqa: E402
from img2spec.sources.sdss import stages  # noqa: E402
from img2spec.sources.sdss.http import FetchError, Fetcher  # noqa: E402
from img2spec.sources.sdss.spectra import spectrum_url  # noqa: E402

TRICKLE_S = 0.3     # one byte per 0.3 s: every read arrives well inside read_timeout_s
READ_TIMEOUT_S = 1.0
DEADLINE_S = 1.5
GUARD_S = 20.0      # without a deadline the trickled 135 kB spectrum would take ~11 hours


def _get(fetcher: Fetcher, url: str):
    """fetcher.get(url) in a thread, so a missing deadline fails the test instead of hanging it."""
    out: dict = {}

    def run():
        try:
            out["body"] = fetcher.get(url)
        except FetchError as exc:
            out["error"] = exc

    t0 = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(GUARD_S)
    assert not thread.is_alive(), f"GET still running after {GUARD_S} s: no total deadline"
    return out, time.monotonic() - t0


@pytest.fixture
def svc():
    with FakeServices(make_catalogue(3), trickle_s=TRICKLE_S) as s:
        yield s


def _url(svc, params, obj) -> str:
    return spectrum_url(params.sdss, obj.plate, obj.mjd, obj.fiberid, obj.run2d)


def test_trickling_answer_is_cut_at_the_deadline_and_retried(svc):
    obj = svc.objects[0]
    params = svc.params(http={"read_timeout_s": READ_TIMEOUT_S, "total_timeout_s": DEADLINE_S, "max_tries": 3})
    svc.add_fault(spec_filename(obj.plate, obj.mjd, obj.fiberid), "trickle")
    fetcher = Fetcher(params.sdss.http, seed=0)
    out, elapsed = _get(fetcher, _url(svc, params, obj))
    assert "error" not in out, out.get("error")
    assert len(out["body"]) > 100_000  # the whole spectrum, from the second try
    assert fetcher.stats.retries == 1 and fetcher.stats.requests == 2
    assert DEADLINE_S <= elapsed < DEADLINE_S + READ_TIMEOUT_S + 2.0


def test_a_server_that_always_trickles_fails_with_the_deadline_named(svc):
    obj = svc.objects[1]
    params = svc.params(http={"read_timeout_s": READ_TIMEOUT_S, "total_timeout_s": DEADLINE_S, "max_tries": 2})
    svc.add_fault(spec_filename(obj.plate, obj.mjd, obj.fiberid), "trickle*")
    out, elapsed = _get(Fetcher(params.sdss.http, seed=0), _url(svc, params, obj))
    assert isinstance(out.get("error"), FetchError)
    assert "deadline" in str(out["error"]) and "total_timeout_s" in str(out["error"])
    assert elapsed < 2 * (DEADLINE_S + READ_TIMEOUT_S) + 2.0


def test_fetch_stage_survives_a_trickling_server(svc, tmp_path):
    params = svc.params(http={"read_timeout_s": READ_TIMEOUT_S, "total_timeout_s": DEADLINE_S, "max_tries": 2})
    paths = Paths(tmp_path)
    stages.select(params, paths)
    slow, stuck = svc.objects[0], svc.objects[2]
    svc.add_fault(spec_filename(slow.plate, slow.mjd, slow.fiberid), "trickle")
    svc.add_fault(spec_filename(stuck.plate, stuck.mjd, stuck.fiberid), "trickle*")
    t0 = time.monotonic()
    report = stages.fetch_spectra(params, paths)
    assert time.monotonic() - t0 < 2 * (DEADLINE_S + READ_TIMEOUT_S) + 5.0
    assert report["fetched"] == 2 and report["failed"] == 1
    assert sorted(p.name for p in paths.spectra_dir.iterdir()) == sorted(
        spec_filename(o.plate, o.mjd, o.fiberid) for o in (slow, svc.objects[1]))  # nothing partial
