"""Physically impossible or implausible photometry never becomes a normalisation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from img2spec.config import Params
from img2spec.config.data import DataParams
from img2spec.config.prepare import PrepareParams
from img2spec.paths import Paths
from img2spec.prep.match import match
from img2spec.prep.normalise import check_magnitudes, magnitude_problem, mag_to_flambda
from img2spec.prep.prepare import prepare
from img2spec.prep.synthetic import synthetic_objects, write_files, write_tables

def test_check_magnitudes_codes():
    mags = [17.2, 0.0, -5.0, -999.0, np.nan, np.inf, -np.inf, 9.99, 10.0, 25.0, 25.01, 40.0]
    codes = check_magnitudes(mags, 10.0, 25.0)
    assert list(codes) == ["", "nonpositive_magnitude", "nonpositive_magnitude", "missing_magnitude",
                           "missing_magnitude", "missing_magnitude", "missing_magnitude", "implausible_magnitude",
                           "", "", "implausible_magnitude", "implausible_magnitude"]
    # <= 0 and non-finite are bad whatever the range says
    assert list(check_magnitudes([0.0, np.nan, -1.0], -10.0, 50.0)) == [
        "nonpositive_magnitude", "missing_magnitude", "nonpositive_magnitude"]
    assert magnitude_problem(17.0) is None and magnitude_problem(0.0) == "nonpositive_magnitude"
    defaults = PrepareParams()
    assert magnitude_problem(defaults.mag_max + 0.5) == "implausible_magnitude"
    assert magnitude_problem(12.0, mag_min=13.0, mag_max=20.0) == "implausible_magnitude"

def test_mag_range_is_validated():
    with pytest.raises(ValueError, match="mag_min"):
        PrepareParams(mag_min=20.0, mag_max=15.0)

def test_prepare_drops_impossible_norm_magnitudes(tmp_path):
    """rKronMag 0 and -5 gave normalisations of 2.8e8 and 2.8e10 and were kept (the reported bug)."""
    assert mag_to_flambda(0.0, "r") == pytest.approx(2.8e8, rel=0.05)  # what the bug produced
    params = Params().model_copy(update={"data": DataParams(cutout_size=32)})
    params = params.model_copy(update={"prepare": params.prepare.model_copy(update={"n_workers": 1})})
    paths = Paths(tmp_path)
    objects = synthetic_objects(12, seed=4)
    write_files(paths, objects, size=32, seed=4)
    write_tables(paths, objects)
    match(params, paths)
    # A matched table from elsewhere (an older match, another tool) still goes through the check.
    cat = pd.read_parquet(paths.matched)
    cat.loc[0, "mag_r"], cat.loc[1, "mag_r"], cat.loc[2, "mag_r"] = 0.0, -5.0, 27.5
    cat.to_parquet(paths.matched, index=False)
    report = prepare(params, paths)
    assert report["dropped_by_reason"] == {"nonpositive_magnitude": 2, "implausible_magnitude": 1}
    out = pd.read_parquet(paths.processed / "catalog.parquet")
    assert set(cat["objid"][:3]).isdisjoint(out["objid"]) and len(out) == 9
    assert out["norm"].max() < 1e3  # 1e-17 erg/s/cm^2/A: g < 18 galaxies sit at tens to hundreds


def test_match_counts_bad_table_rows_instead_of_stopping(tmp_path):
    """A text cell in candidates.csv or photometry.csv is one counted drop, not a traceback."""
    params = Params().model_copy(update={"data": DataParams(cutout_size=32)})
    paths = Paths(tmp_path)
    objects = synthetic_objects(8, seed=6)
    write_files(paths, objects, size=32, seed=6)
    write_tables(paths, objects)
    cand = pd.read_csv(paths.candidates, dtype=str)
    cand.loc[0, "plate"] = "abc"
    cand.loc[1, "ra"] = "n/a"
    cand.to_csv(paths.candidates, index=False)
    phot = pd.read_csv(paths.photometry, dtype=str)
    phot.loc[phot["objid"] == str(objects[2].objid), "iKronMag"] = "--"
    phot.to_csv(paths.photometry, index=False)
    report = match(params, paths)
    assert report["dropped_by_reason"] == {"bad_candidate_row": 1, "bad_coordinates": 1, "missing_magnitude": 1}
    assert report["n_matched"] == 5
    out = pd.read_parquet(paths.matched)
    assert out["objid"].dtype == np.int64 and set(out["objid"]) == {o.objid for o in objects[3:]}


def test_match_sweeps_temporaries_of_a_killed_run(tmp_path):
    import subprocess
    import sys

    params = Params().model_copy(update={"data": DataParams(cutout_size=32)})
    paths = Paths(tmp_path)
    objects = synthetic_objects(4, seed=7)
    write_files(paths, objects, size=32, seed=7)
    write_tables(paths, objects)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    paths.matched.parent.mkdir(parents=True, exist_ok=True)
    left = paths.matched.parent / f".{paths.matched.name}.tmp-{dead.pid}-x1y2.parquet.tmp"
    left.write_bytes(b"half a parquet file")
    report = match(params, paths)
    assert report["stale_temporaries_removed"] == 1 and not left.exists()
