"""The data/processed contract: one writer, one set of accessors, and readers that use them.

The synthetic data set is written by the real writer with prepare's own meta.json
builder, so a reader that guesses a key prepare never writes fails here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from img2spec.io.processed import ProcessedData, write_processed_tables
from img2spec.prep.normalise import effective_wavelength
from img2spec.prep.synthetic import write_synthetic_processed

REGIONS = {"blue_continuum": (3500.0, 3850.0), "break_4000": (3850.0, 4150.0), "halpha": (6450.0, 6700.0)}
OFFSET_SIGMA = 5.0
"""Prediction error (in units of the pixel's sigma) put on the H-alpha region only."""


@pytest.fixture(scope="module", params=["observed", "rest"])
def written(request) -> str:
    """The frame the data set is written in (`prepare.frame`)."""
    return request.param


@pytest.fixture(scope="module")
def data(written, tmp_path_factory) -> ProcessedData:
    root = tmp_path_factory.mktemp(f"proc_{written}") / "processed"
    return ProcessedData.open(write_synthetic_processed(root, n=60, n_pix=400, frame=written, norm_band="i",
                                                        mask_fraction=0.0))


def test_accessors_read_what_prepare_writes(data, written):
    meta = json.loads((data.root / "meta.json").read_text())
    assert data.frame == meta["wave"]["frame"] == written
    assert data.norm_band == meta["norm"]["band"] == "i"
    assert data.norm_wavelength_A == pytest.approx(effective_wavelength("i"))
    rw = data.rest_wave(np.arange(3))
    z = data.catalog["z"].to_numpy()[:3]
    expect = np.broadcast_to(data.wave, rw.shape) if data.frame == "rest" else data.wave / (1 + z[:, None])
    np.testing.assert_allclose(rw, expect)


def test_meta_without_the_contract_keys_is_refused(data, tmp_path):
    # The old test fakes wrote a top-level "frame" that prepare never writes.
    legacy = {"frame": "rest", "norm_band": "r"}
    with pytest.raises(KeyError, match="wave.frame"):
        write_processed_tables(tmp_path, wave=data.wave, catalog=data.catalog, image_scaling={}, meta=legacy)
    bad = json.loads((data.root / "meta.json").read_text())
    bad["wave"]["frame"] = "comoving"
    with pytest.raises(ValueError, match="comoving"):
        write_processed_tables(tmp_path, wave=data.wave, catalog=data.catalog, image_scaling={}, meta=bad)
    assert not (tmp_path / "meta.json").exists()


def test_regions_score_the_rest_frame_pixels(data, written):
    """A prediction wrong only where the rest wavelength is in H-alpha: that region's D is
    the error, the other regions' D is 0, whatever the frame of the grid."""
    from img2spec.evaluate.regions import region_masks, region_summaries

    test = data.indices("test")
    obs = np.asarray(data.flux[test], np.float64)
    ivar = np.asarray(data.ivar[test], np.float64)
    lo, hi = REGIONS["halpha"]
    z = data.catalog["z"].to_numpy()[test]
    rw = np.broadcast_to(data.wave, obs.shape) if written == "rest" else data.wave / (1 + z[:, None])
    in_halpha = (rw >= lo) & (rw < hi)
    assert in_halpha.sum(axis=1).min() >= 3  # every object has H-alpha pixels on the grid
    pred = obs + np.where(in_halpha, OFFSET_SIGMA / np.sqrt(ivar), 0.0)
    masks = region_masks(data, test, REGIONS)
    np.testing.assert_array_equal(masks["halpha"], in_halpha)
    if written == "rest":  # one rest grid: the same pixels for every object
        assert (masks["halpha"] == masks["halpha"][0]).all()
    else:  # observed grid: the pixels move with z
        assert not (masks["halpha"] == masks["halpha"][0]).all()
    out = region_summaries(data, test, REGIONS, {"model": pred}, obs, ivar)
    assert out["halpha"]["model"]["mean"] == pytest.approx(OFFSET_SIGMA, rel=1e-5)
    assert out["halpha"]["rest_wave"] == [lo, hi]
    for name in ("blue_continuum", "break_4000"):
        assert out[name]["model"]["n"] > 0 and out[name]["model"]["mean"] == pytest.approx(0.0, abs=1e-6)


def test_bundle_records_the_norm_band_of_the_data(data):
    """The bundle's flux convention is what prepare used (band i here), not today's params (r)."""
    from img2spec.config import params_from_dict
    from img2spec.predict.bundle import normalisation

    params = params_from_dict({"prepare": {"norm_band": "r"}})
    norm = normalisation(params, data)
    assert norm["band"] == "i"
    assert norm["wavelength_A"] == pytest.approx(effective_wavelength("i"))


def test_rest_frame_decoder_refuses_rest_frame_data(tmp_path):
    """vae.frame: rest redshifts its output onto the grid: on a rest-frame grid that would shift twice."""
    from img2spec.config.models import VAEParams
    from img2spec.models.train import train_vae

    rest = ProcessedData.open(write_synthetic_processed(tmp_path / "processed", n=30, frame="rest"))
    with pytest.raises(ValueError, match="prepare.frame: rest"):
        train_vae(VAEParams(frame="rest", latent_dim=2, encoder_units=(8,), decoder_units=(8,), epochs=1), rest)
