"""Fetch throughput (objects/s) of the sdss source stages at 1, 8 and 32 connections.

Runs against the local fake services (tests/fake_services.py) on 127.0.0.1 with an
artificial latency per request to mimic a remote service. Prints a table.

    .venv/bin/python bench/bench_fetch.py [--objects 64] [--latency 0.02] [--stages fetch_spectra,fetch_images]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("IMG2SPEC_NO_PROGRESS", "1")

from fake_services import FakeServices, make_catalogue  # noqa: E402

from img2spec.paths import Paths  # noqa: E402
from img2spec.sources.sdss import stages  # noqa: E402

CONNECTIONS = (1, 8, 32)
STAGES = ("fetch_spectra", "fetch_images", "fetch_photometry")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.02, help="seconds added to every request")
    ap.add_argument("--stages", default=",".join(STAGES))
    args = ap.parse_args()
    chosen = [s for s in args.stages.split(",") if s]
    rows = []
    with FakeServices(make_catalogue(args.objects), latency_s=args.latency) as svc:
        # warm the server's spectrum cache so the first run is not charged for building files
        warm = Paths(Path(tempfile.mkdtemp(prefix="bench_fetch_")))
        stages.select(svc.params(), warm)
        stages.fetch_spectra(svc.params(http={"connections": 8, "read_timeout_s": 30}), warm)
        for stage in chosen:
            for n in CONNECTIONS:
                params = svc.params(http={"connections": n, "rate_per_s": 10_000.0, "read_timeout_s": 30.0})
                paths = Paths(Path(tempfile.mkdtemp(prefix="bench_fetch_")))
                stages.select(params, paths)
                t0 = time.perf_counter()
                report = getattr(stages, stage)(params, paths)
                dt = time.perf_counter() - t0
                rows.append((stage, n, args.objects / dt, report["http_requests"], report["failed"]))
    print(f"\n{args.objects} objects, {args.latency * 1000:.0f} ms latency per request, 127.0.0.1")
    print(f"{'stage':<18}{'connections':>12}{'objects/s':>12}{'requests':>10}{'failed':>8}")
    for stage, n, rate, req, failed in rows:
        print(f"{stage:<18}{n:>12}{rate:>12.1f}{req:>10}{failed:>8}")


if __name__ == "__main__":
    main()
