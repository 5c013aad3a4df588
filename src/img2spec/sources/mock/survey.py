"""SDSS-like survey bookkeeping: object ids, plates, fibres, MJDs and sky positions."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...config.mock import MockParams
from .population import STAGE_PLATE, STAGE_SURVEY, galaxy_rng

OBJID_STRIDE = 4096
RUN2D_CODE = 26
"""specObjID bits 10-23 encode run2d; DR16 'v5_13_0' style runs use small integers."""


def spec_objid(plate: int, fiberid: int, mjd: int) -> int:
    """SDSS specObjID bit layout: plate<<50 | fiber<<38 | (mjd-50000)<<24 | run2d<<10."""
    return (int(plate) << 50) | (int(fiberid) << 38) | ((int(mjd) - 50000) << 24) | (RUN2D_CODE << 10)


def _plate_centre(mp: MockParams, plate_index: int) -> tuple[float, float, int]:
    sv = mp.survey
    rng = galaxy_rng(mp.seed, STAGE_PLATE, plate_index)
    ra = float(rng.uniform(*sv.ra_range))
    # Uniform on the sphere within the dec band.
    s0, s1 = np.sin(np.deg2rad(sv.dec_range[0])), np.sin(np.deg2rad(sv.dec_range[1]))
    dec = float(np.rad2deg(np.arcsin(rng.uniform(s0, s1))))
    mjd = int(rng.integers(sv.mjd_range[0], sv.mjd_range[1] + 1))
    return ra, dec, mjd


def position(mp: MockParams, index: int) -> dict:
    """Plate, fibre, MJD, RA/Dec and ids of galaxy `index` (deterministic)."""
    sv = mp.survey
    plate_index, fibre_index = divmod(index, sv.fibres_per_plate)
    ra0, dec0, mjd = _plate_centre(mp, plate_index)
    rng = galaxy_rng(mp.seed, STAGE_SURVEY, index)
    r = sv.plate_radius_deg * np.sqrt(rng.uniform())
    phi = rng.uniform(0.0, 2.0 * np.pi)
    dec = float(np.clip(dec0 + r * np.sin(phi), -89.9, 89.9))
    ra = float((ra0 + r * np.cos(phi) / np.cos(np.deg2rad(dec))) % 360.0)
    plate = sv.first_plate + plate_index
    fiberid = fibre_index + 1
    return {
        "objid": int(sv.objid_base + OBJID_STRIDE * index),
        "specobjid": spec_objid(plate, fiberid, mjd),
        "ra": ra, "dec": dec, "plate": plate, "mjd": mjd, "fiberid": fiberid,
    }


CANDIDATE_COLUMNS = ("objid", "specobjid", "ra", "dec", "z", "plate", "mjd", "fiberid")


def candidates_frame(rows: list[dict]) -> pd.DataFrame:
    """candidates.csv in the sdss source's column order and dtypes."""
    df = pd.DataFrame(rows)[list(CANDIDATE_COLUMNS)]
    for col in ("objid", "specobjid"):
        df[col] = df[col].astype(np.int64) if (df[col] < 2**63).all() else df[col].astype(np.uint64)
    return df
