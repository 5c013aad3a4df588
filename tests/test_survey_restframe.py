"""img2spec survey with a rest-frame bundle (one task, in this process): the shard's z is the z
the spectrum is decoded at and the z its lines are reported at (z_lines), the bundle's own
`measure` params are used, and the spectra shard carries the rest-frame prediction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from img2spec.config import params_from_dict
from img2spec.io.shards import read_spectra_shard
from img2spec.paths import Paths
from restframe_support import (HALPHA_VAC, LINE_FLUX, Z_PRED, build_rest_project, line_peak, shifted_measure,
                               write_shard)

Z_SHARD = np.array([0.05, np.nan, 0.12, np.nan, 0.2])
"""Shard redshifts of the 5 objects (NaN: unknown, the photo-z Z_PRED places the spectrum)."""
BATCH = 3
"""Survey batch size: the 5 objects span two batches."""
REL = "healpix=1/part-00000.hdf5"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The rest-frame project, its default bundle and one with a shifted Halpha window, and a shard."""
    from img2spec.predict import Predictor
    from img2spec.predict.bundle import build_bundle

    root = tmp_path_factory.mktemp("rest_survey")
    facts = build_rest_project(root)
    publish = {"publish": {"batch_size": 5, "registry": False}}
    build_bundle(params_from_dict(publish), Paths(root))
    build_bundle(params_from_dict({**publish, "measure": shifted_measure()}), Paths(root),
                 dest=root / "models" / "shifted")
    shard = write_shard(root / "shards" / REL, facts["cutouts"][:len(Z_SHARD)], Z_SHARD)
    return {"root": root, "facts": facts, "shard": shard,
            "predictor": Predictor.from_path(root / "models" / "img2spec"),
            "shifted": Predictor.from_path(root / "models" / "shifted")}


def _run(env, predictor, out):
    from img2spec.survey.task import ModelSpec, output_paths, predict_shard

    report = predict_shard(str(env["shard"]), REL, str(out), ModelSpec.of(predictor), batch_size=BATCH,
                           store="spectra")
    assert report["status"] == "done" and report["n_predicted"] == len(Z_SHARD)
    spectra, catalogue = output_paths(out, REL)
    return read_spectra_shard(spectra), pd.read_parquet(catalogue)


def test_survey_decodes_and_measures_at_the_shard_z(env, tmp_path):
    predictor = env["predictor"]
    spectra, cat = _run(env, predictor, tmp_path / "out")
    given = np.isfinite(Z_SHARD)
    # decoded at the shard's z where it has one (else the photo-z), and reported at that same z
    np.testing.assert_allclose(spectra.z_used[given], Z_SHARD[given], atol=1e-6)
    np.testing.assert_allclose(spectra.z_used[~given], spectra.z[~given], atol=1e-6)
    np.testing.assert_allclose(cat["z_lines"].to_numpy(), spectra.z_used, atol=1e-6)
    assert list(cat["z_lines_source"]) == ["catalogue" if g else "photo-z" for g in given]
    assert set(cat["measure_frame"]) == {"rest"}
    # the spectra are the Predictor's at those redshifts (not at the photo-z alone)
    direct = predictor.predict(env["facts"]["images"][:len(Z_SHARD)], z=Z_SHARD)
    np.testing.assert_allclose(spectra.flux, direct.flux, rtol=1e-5, atol=1e-6)
    photoz_only = predictor.predict(env["facts"]["images"][:len(Z_SHARD)])
    assert not np.allclose(spectra.flux[given], photoz_only.flux[given], atol=1e-3)
    # the line is where z_lines puts it, and the rest-frame line flux is the decoder's
    wave = spectra.wave
    for k, z in enumerate(cat["z_lines"]):
        pixel = HALPHA_VAC * (1 + z) * (wave[1] / wave[0] - 1)
        assert line_peak(wave, spectra.flux[k]) == pytest.approx(HALPHA_VAC * (1 + z), abs=1.5 * pixel)
    np.testing.assert_allclose(cat["halpha_flux"], LINE_FLUX, rtol=0.03)
    assert cat["z_lines"][~given].to_numpy() == pytest.approx(Z_PRED, abs=1e-4)


def test_spectra_shard_holds_the_rest_frame_prediction(env, tmp_path):
    predictor = env["predictor"]
    spectra, _ = _run(env, predictor, tmp_path / "out")
    direct = predictor.predict(env["facts"]["images"][:len(Z_SHARD)], z=Z_SHARD)
    np.testing.assert_allclose(spectra.rest_wave, direct.rest_wave, rtol=1e-12)
    np.testing.assert_allclose(spectra.rest_flux, direct.rest_flux, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(spectra.rest_sigma, direct.rest_sigma, rtol=1e-4, atol=1e-7)
    assert spectra.rest_flux.shape == (len(Z_SHARD), len(spectra.rest_wave))


def test_survey_measures_with_the_bundle_measure_params(env, tmp_path):
    _, default = _run(env, env["predictor"], tmp_path / "default")
    _, shifted = _run(env, env["shifted"], tmp_path / "shifted")
    np.testing.assert_allclose(default["halpha_flux"], LINE_FLUX, rtol=0.03)
    assert np.all(np.abs(shifted["halpha_flux"]) < 0.05 * LINE_FLUX)   # the bundle's window misses the line
    np.testing.assert_allclose(shifted["oiii_5007_flux"], default["oiii_5007_flux"], rtol=1e-6)
