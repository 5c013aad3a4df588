"""A local stand-in for SkyServer, SAS, the PS1 cutout service and the MAST catalogs API.

Serves on 127.0.0.1 (port 0) from a thread of the test process, in the services' own
formats: SkyServer CSV ('#Table1' first line), SDSS spec-lite FITS files (written with
img2spec's `write_spectrum`), ps1filenames.py whitespace tables, fitscut FITS cutouts,
MAST catalogue CSV. Faults are injected per URL substring, consumed in order:

    "500", "503", "404", "429" (Retry-After: 1), "sleep" (answer after `sleep_s`),
    "truncate" (full Content-Length, half the body, then close), "trickle" (full
    Content-Length, then one byte every `trickle_s`: each read is quick, the whole is not), "wronghdu" (a FITS
    without the expected HDUs), "html" (200 with an HTML error page), "empty" (an empty
    result in the service's format). A kind ending in "*" never runs out.

Also usable from a subprocess: `python tests/fake_services.py N_OBJECTS [LATENCY_S]`
prints the base URL and serves until killed.
"""

from __future__ import annotations

import io
import re
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
from astropy.io import fits

from img2spec import BANDS
from img2spec.config import Params, params_from_dict
from img2spec.io.sdss_spectrum import SDSSSpectrum, sdss_loglam_grid, write_spectrum
from img2spec.paths import spec_filename

FILENAME_HEADER = "projcell subcell ra dec filter mjd type filename shortname badflag"
LEGACY_RUN2D = ("26", "103", "104")


@dataclass(frozen=True)
class FakeObject:
    objid: int
    specobjid: int
    ra: float
    dec: float
    z: float
    plate: int
    mjd: int
    fiberid: int
    run2d: str
    mag_g: float


def make_catalogue(n: int, seed: int = 0) -> list[FakeObject]:
    """`n` galaxies with SDSS-like ids; every fifth one is an eBOSS (v5_13_0) spectrum."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        eboss = i % 5 == 4
        plate = (9000 + i // 3) if eboss else (300 + i // 3)
        fiber = 1 + (i * 37) % 640
        mjd = 58000 + i // 3 if eboss else 51600 + i // 3
        out.append(FakeObject(
            objid=1237650000000000000 + 1000 * i + 7,
            specobjid=(plate << 50) + (fiber << 38) + 12345,  # SDSS packs plate/fiber into the id
            ra=float(rng.uniform(120, 240)), dec=float(rng.uniform(-5, 60)),
            z=float(rng.uniform(0.05, 0.1)), plate=plate, mjd=mjd, fiberid=fiber,
            run2d="v5_13_0" if eboss else "26", mag_g=float(rng.uniform(15, 18)),
        ))
    return out


def fits_bytes(hdul: fits.HDUList) -> bytes:
    buf = io.BytesIO()
    hdul.writeto(buf)
    return buf.getvalue()


def spectrum_bytes(obj: FakeObject, workdir: Path) -> bytes:
    loglam = sdss_loglam_grid(3800.0, 9200.0)
    rng = np.random.default_rng(obj.fiberid + 7 * obj.plate)
    flux = (10 + rng.normal(0, 1, loglam.size)).astype(np.float32)
    spec = SDSSSpectrum(loglam=loglam, flux=flux, ivar=np.full(loglam.size, 4.0, np.float32),
                        and_mask=np.zeros(loglam.size, np.int32), z=obj.z, plate=obj.plate, mjd=obj.mjd,
                        fiberid=obj.fiberid, ra=obj.ra, dec=obj.dec,
                        extra={"OBJID": str(obj.objid), "SPECOBJID": str(obj.specobjid)})
    path = workdir / spec_filename(obj.plate, obj.mjd, obj.fiberid)
    write_spectrum(path, spec)
    return path.read_bytes()


def cutout_pixels(objid: int, band: str, size: int) -> np.ndarray:
    """A deterministic galaxy-ish image: a Gaussian blob plus noise."""
    rng = np.random.default_rng((objid % 100_000) * 10 + BANDS.index(band))
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    return (500 * np.exp(-(x**2 + y**2) / (2 * (size / 8) ** 2)) + rng.normal(0, 5, (size, size))).astype(np.float32)


def exptime_for(band: str) -> float:
    return {"g": 1130.0, "r": 950.0, "i": 1510.0, "z": 1180.0, "y": 900.0}[band]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default backlog (5) resets connections at 32 clients


class FakeServices:
    """The fake services on 127.0.0.1; use as a context manager."""

    def __init__(self, objects: list[FakeObject], latency_s: float = 0.0, sleep_s: float = 1.5,
                 trickle_s: float = 0.3):
        self.objects = sorted(objects, key=lambda o: o.specobjid)
        self.by_file = {spec_filename(o.plate, o.mjd, o.fiberid): o for o in objects}
        self.latency_s = latency_s
        self.sleep_s = sleep_s
        self.trickle_s = trickle_s
        self.stopping = threading.Event()
        self.hits: Counter = Counter()
        self.rules: list[tuple[str, deque]] = []
        self._lock = threading.Lock()
        self._tmp = tempfile.TemporaryDirectory(prefix="fake_services_")
        self._spec_cache: dict[str, bytes] = {}
        self.server = _Server(("127.0.0.1", 0), _make_handler(self))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # --- lifecycle -----------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "FakeServices":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()  # ends trickling answers
        self.server.shutdown()
        self.server.server_close()
        self._tmp.cleanup()

    # --- faults --------------------------------------------------------------------
    def add_fault(self, url_part: str, *kinds: str) -> None:
        """Requests whose path+query contain `url_part` get `kinds` in order, then normal answers."""
        with self._lock:
            self.rules.append((url_part, deque(kinds)))

    def take_fault(self, target: str) -> str | None:
        with self._lock:
            for part, kinds in self.rules:
                if part in target and kinds:
                    kind = kinds[0]
                    if not kind.endswith("*"):
                        kinds.popleft()
                    return kind.rstrip("*")
        return None

    # --- params pointing at this server -------------------------------------------------
    def params(self, http: dict | None = None, **sdss) -> Params:
        """Params whose sdss URLs point here, with fast test timeouts and back-off."""
        base_http = {"connections": 4, "rate_per_s": 1000.0, "connect_timeout_s": 0.5, "read_timeout_s": 0.5,
                     "max_tries": 4, "backoff_base_s": 0.01, "backoff_max_s": 0.05, "max_retry_after_s": 2.0}
        base_http.update(http or {})
        section = {"skyserver_url": self.url, "sas_url": f"{self.url}/sas",
                   "ps1_filenames_url": f"{self.url}/cgi-bin/ps1filenames.py",
                   "ps1_fitscut_url": f"{self.url}/cgi-bin/fitscut.cgi",
                   "mast_url": f"{self.url}/api/v0.1", "http": base_http, "max_failure_fraction": 0.5}
        section.update(sdss)
        return params_from_dict({"data": {"source": "sdss", "cutout_size": 16}, "sdss": section})

    # --- answers -------------------------------------------------------------------
    def answer(self, path: str, query: dict[str, str], fault: str | None) -> tuple[int, str, bytes]:
        if path.endswith("/x_results.aspx") or path.endswith("/SqlSearch"):
            self.hits["sql"] += 1
            return self._sql(query, fault)
        if path.startswith("/sas/"):
            self.hits["sas"] += 1
            return self._spectrum(path, fault)
        if path.endswith("/ps1filenames.py"):
            self.hits["filenames"] += 1
            return self._filenames(query, fault)
        if path.endswith("/fitscut.cgi"):
            self.hits["fitscut"] += 1
            return self._fitscut(query, fault)
        if path.startswith("/api/v0.1/panstarrs/"):
            self.hits["mast"] += 1
            return self._mast(path, query, fault)
        return 404, "text/plain", b"not found"

    def _sql(self, q: dict[str, str], fault: str | None) -> tuple[int, str, bytes]:
        cols = "objid,specobjid,ra,dec,z,plate,mjd,fiberid,run2d,mag_g,zwarning"
        if fault == "html":
            return 200, "text/html", b"<html><body>SQL error: Timeout expired</body></html>"
        cmd = q.get("cmd", "")
        top = int(m.group(1)) if (m := re.search(r"TOP\s+(\d+)", cmd, re.I)) else 10**9
        after = int(m.group(1)) if (m := re.search(r"specObjID\s*>\s*(\d+)", cmd, re.I)) else -1
        rows = [] if fault == "empty" else [o for o in self.objects if o.specobjid > after][:top]
        lines = ["#Table1", cols] + [
            f"{o.objid},{o.specobjid},{o.ra!r},{o.dec!r},{o.z!r},{o.plate},{o.mjd},{o.fiberid},{o.run2d},{o.mag_g!r},0"
            for o in rows
        ]
        return 200, "text/plain", ("\n".join(lines) + "\n").encode()

    def _spectrum(self, path: str, fault: str | None) -> tuple[int, str, bytes]:
        m = re.match(r"^/sas/dr16/(sdss|eboss)/spectro/redux/([^/]+)/spectra/lite/(\d{4})/(spec-\d{4}-\d{5}-\d{4}\.fits)$",
                     path)
        obj = self.by_file.get(m.group(4)) if m else None
        if obj is None or m.group(2) != obj.run2d or (m.group(1) == "sdss") != (obj.run2d in LEGACY_RUN2D):
            return 404, "text/html", b"<html>404 Not Found</html>"
        if fault == "wronghdu":
            table = fits.BinTableHDU.from_columns([fits.Column("wave", "E", array=np.ones(3, np.float32))], name="COADD")
            return 200, "application/fits", fits_bytes(fits.HDUList([fits.PrimaryHDU(), table]))
        with self._lock:
            body = self._spec_cache.get(m.group(4))
        if body is None:
            body = spectrum_bytes(obj, Path(self._tmp.name))
            with self._lock:
                self._spec_cache[m.group(4)] = body
        return 200, "application/fits", body

    def _nearest(self, q: dict[str, str]) -> FakeObject | None:
        ra, dec = float(q.get("ra", "nan")), float(q.get("dec", "nan"))
        for o in self.objects:
            if abs(o.ra - ra) < 1e-5 and abs(o.dec - dec) < 1e-5:
                return o
        return None

    def _filenames(self, q: dict[str, str], fault: str | None) -> tuple[int, str, bytes]:
        lines = [FILENAME_HEADER]
        obj = self._nearest(q)
        if obj is not None and fault != "empty":
            for band in q.get("filters", "grizy"):
                fname = f"/rings.v3.skycell/1234/056/rings.v3.skycell.1234.056.stk.{band}.unconv.{obj.objid}.fits"
                lines.append(f"1234 056 {obj.ra:.6f} {obj.dec:.6f} {band} 56000.0 stack {fname} "
                             f"rings.v3.skycell.1234.056.stk.{band}.unconv.fits 0")
        return 200, "text/plain", ("\n".join(lines) + "\n").encode()

    def _fitscut(self, q: dict[str, str], fault: str | None) -> tuple[int, str, bytes]:
        m = re.search(r"\.stk\.([grizy])\.unconv\.(\d+)\.fits$", q.get("red", ""))
        if not m:
            return 404, "text/plain", b"file not found"
        band, objid, size = m.group(1), int(m.group(2)), int(q.get("output_size", q.get("size", "240")))
        if fault == "wronghdu":
            table = fits.BinTableHDU.from_columns([fits.Column("x", "E", array=np.ones(2, np.float32))])
            return 200, "application/fits", fits_bytes(fits.HDUList([fits.PrimaryHDU(), table]))
        hdu = fits.PrimaryHDU(cutout_pixels(objid, band, size))
        hdu.header["EXPTIME"] = exptime_for(band)
        hdu.header["HIERARCH FPA.FILTER"] = f"{band}.00000"
        return 200, "application/fits", fits_bytes(fits.HDUList([hdu]))

    def _mast(self, path: str, q: dict[str, str], fault: str | None) -> tuple[int, str, bytes]:
        table = "mean" if path.endswith("/mean.csv") else "stack"
        cols = q.get("columns", "[]").strip("[]").split(",")
        obj = self._nearest(q)
        rows = []
        if obj is not None and fault != "empty":
            # the counterpart 0.3" away, and a neighbour 4" away (outside a 1.5" radius)
            for k, (dra, ddec) in enumerate(((0.3 / 3600, 0.0), (0.0, 4.0 / 3600))):
                rec = {"objID": 100000000000000000 + obj.objid % 10**12 * 10 + k}
                rec["raMean" if table == "mean" else "raStack"] = float(obj.ra + dra / np.cos(np.radians(obj.dec)))
                rec["decMean" if table == "mean" else "decStack"] = obj.dec + ddec
                for i, b in enumerate(BANDS):
                    mag = obj.mag_g - 0.4 * i + k
                    name = f"{b}MeanKronMag" if table == "mean" else f"{b}KronMag"
                    rec[name] = -999.0 if (b == "y" and obj.objid % 7 == 0) else round(mag, 4)
                    rec[name + "Err"] = 0.01 * (i + 1)
                rows.append(rec)
        lines = [",".join(cols)] + [",".join(repr(r.get(c, "")) if not isinstance(r.get(c), int) else str(r[c])
                                             for c in cols) for r in rows]
        return 200, "text/csv", ("\n".join(lines) + "\n").encode()


def _make_handler(svc: FakeServices):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, so client Sessions reuse connections

        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            fault = svc.take_fault(self.path)
            if svc.latency_s:
                time.sleep(svc.latency_s)
            try:
                if fault in ("500", "503", "404"):
                    self._send(int(fault), "text/html", f"<html>{fault}</html>".encode())
                    return
                if fault == "429":
                    self._send(429, "text/plain", b"Too Many Requests", {"Retry-After": "1"})
                    return
                if fault == "sleep":
                    time.sleep(svc.sleep_s)
                status, ctype, body = svc.answer(parts.path, query, fault)
                if fault == "trickle" and status == 200:
                    self.send_response(200)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    for i in range(len(body)):
                        if svc.stopping.wait(svc.trickle_s):
                            break
                        self.wfile.write(body[i:i + 1])
                        self.wfile.flush()
                    self.close_connection = True
                    return
                if fault == "truncate" and status == 200:
                    self.send_response(200)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self._send(status, ctype, body)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up (timeout): nothing to do

        def _send(self, status: int, ctype: str, body: bytes, headers: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

    return Handler


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    latency = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    with FakeServices(make_catalogue(n), latency_s=latency) as svc:
        print(svc.url, flush=True)
        while True:
            time.sleep(3600)
