"""A rest-frame bundle's survey read back from the compact store: flux, sigma and the rest-frame
arrays (rest_flux, rest_sigma, rest_wave, z_used) equal bit for bit what `--store spectra` writes,
for the linearised and the sampled sigma, with the shard's objects spread over two batches (the
shard of test_survey_restframe: some objects decoded at their catalogue z, the others at the photo-z)."""

from __future__ import annotations

import numpy as np
import pytest

from img2spec.config import params_from_dict
from img2spec.io.shards import list_parts, read_spectra_shard
from test_survey import inline_dask  # noqa: F401  (Dask tasks in this process)
from test_survey_restframe import BATCH, Z_SHARD, env  # noqa: F401  (the rest-frame bundle and its shard)


@pytest.mark.parametrize("sigma_method", ["linearised", "sampled"])
def test_rest_frame_survey_decodes_to_the_spectra_store(env, tmp_path, inline_dask, sigma_method):  # noqa: F811
    from img2spec.survey import open_survey
    from img2spec.survey.run import run_survey

    predictor = env["predictor"].with_options(sigma_method=sigma_method, n_samples=8)
    params = params_from_dict({"survey": {"batch_size": BATCH}})
    shards = env["shard"].parents[1]
    outs = {store: tmp_path / store for store in ("compact", "spectra")}
    for store, out in outs.items():
        assert run_survey(shards, predictor, out, params, scheduler="inline://", store=store)["shards"]["done"] == 1
    (_, path), = list_parts(outs["spectra"])
    stored = read_spectra_shard(path)
    if sigma_method == "linearised":  # the compact store's worker decoded only the measured rest pixels
        _assert_same_catalogue(outs["compact"], outs["spectra"])
    got = open_survey(outs["compact"]).spectra(list(stored.object_id))
    assert len(got) == len(Z_SHARD) and got.rest_flux.shape == stored.rest_flux.shape
    for name in ("flux", "sigma", "rest_flux", "rest_sigma"):
        assert np.array_equal(getattr(got, name).view(np.uint32), getattr(stored, name).view(np.uint32)), name
    assert np.array_equal(got.rest_wave, stored.rest_wave) and np.array_equal(got.wave, stored.wave)
    assert np.array_equal(got.result.z_used, stored.z_used) and np.array_equal(got.result.z, stored.z)
    np.testing.assert_array_equal(got.result.z_given, np.isfinite(Z_SHARD))
    assert np.isfinite(got.sigma).all() and np.isfinite(got.rest_sigma).all()
    # one object alone decodes its whole batch and gives the same bits
    one = open_survey(outs["compact"]).spectra([stored.object_id[3]])
    assert np.array_equal(one.flux[0], stored.flux[3]) and np.array_equal(one.rest_sigma[0], stored.rest_sigma[3])


def _assert_same_catalogue(compact, spectra):
    """Every catalogue column of the two stores: equal integers and strings, floats to float32 rounding."""
    import pandas as pd

    a, b = (pd.read_parquet(out / "catalogue").sort_values("object_id").reset_index(drop=True)
            for out in (compact, spectra))
    assert list(a.columns) == list(b.columns) and len(a) == len(b) == len(Z_SHARD)
    assert a["halpha_ew"].notna().any()
    for name in a.columns:
        if a[name].dtype.kind == "f":
            np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-6, err_msg=name)
        else:
            pd.testing.assert_series_equal(a[name], b[name], check_names=False, obj=name)
