"""SDSS DR16 spec-lite files from the Science Archive Server (SAS).

URL (DR16 data model): {sas}/dr16/{sdss|eboss}/spectro/redux/{run2d}/spectra/lite/
{plate:04d}/spec-{plate:04d}-{mjd:05d}-{fiber:04d}.fits — SDSS-I/II legacy reductions
(run2d 26, 103, 104) live under `sdss`, BOSS/eBOSS (v5_13_0) under `eboss`.
A download is written to a temporary name, read back with `read_spectrum` and its
PLATE/MJD/FIBERID compared with the request before the rename.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from astropy.io.fits.verify import VerifyWarning

from ...config.sdss import SDSSParams
from ...io.atomic import atomic_path
from ...io.sdss_spectrum import SpectrumFormatError, read_spectrum
from ...paths import spec_filename
from .http import BadContent, Fetcher


def spectrum_url(p: SDSSParams, plate: int, mjd: int, fiberid: int, run2d: str) -> str:
    survey = "sdss" if str(run2d) in p.legacy_run2d else "eboss"
    return (
        f"{p.sas_url.rstrip('/')}/dr{p.data_release}/{survey}/spectro/redux/{run2d}/spectra/lite/"
        f"{int(plate):04d}/{spec_filename(plate, mjd, fiberid)}"
    )


def verify_spectrum(path: Path, plate: int, mjd: int, fiberid: int) -> None:
    """Raise SpectrumFormatError unless `path` is the SDSS spectrum of (plate, mjd, fiberid)."""
    try:
        with warnings.catch_warnings():
            # a truncated file warns before it fails; the failure is what we act on
            warnings.simplefilter("ignore", VerifyWarning)
            spec = read_spectrum(path)
    except (KeyError, AttributeError) as exc:  # e.g. an image HDU where a table should be
        raise SpectrumFormatError(f"{path}: not an SDSS spectrum layout ({type(exc).__name__}: {exc})") from None
    if (spec.plate, spec.mjd, spec.fiberid) != (int(plate), int(mjd), int(fiberid)):
        raise SpectrumFormatError(
            f"{path}: holds {spec.plate}-{spec.mjd}-{spec.fiberid}, expected {plate}-{mjd}-{fiberid}"
        )
    if len(spec.loglam) == 0:
        raise SpectrumFormatError(f"{path}: no pixels")


def fetch_spectrum(p: SDSSParams, fetcher: Fetcher, dest: Path, plate: int, mjd: int, fiberid: int, run2d: str) -> str:
    """Make `dest` a verified spectrum; returns 'present', 'refetched' or 'fetched'."""
    outcome = "fetched"
    if dest.exists():
        try:
            verify_spectrum(dest, plate, mjd, fiberid)
            return "present"
        except SpectrumFormatError:
            outcome = "refetched"  # corrupt or foreign file: replace it
    url = spectrum_url(p, plate, mjd, fiberid, run2d)
    with atomic_path(dest) as tmp:

        def check(body: bytes) -> None:
            tmp.write_bytes(body)
            try:
                verify_spectrum(tmp, plate, mjd, fiberid)
            except SpectrumFormatError as exc:
                raise BadContent(str(exc).replace(str(tmp), url)) from None

        fetcher.get(url, check=check)
    return outcome
