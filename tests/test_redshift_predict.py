"""img2spec predict with a redshift head: Z_PRED / Z_ERR in the FITS header and table,
the photo-z places the line markers when the user gives no z (ZSOURCE), the user's z wins
when given; a bundle whose CNN has no head writes no Z_PRED."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from img2spec.config import params_from_dict
from img2spec.config.models import CNNParams
from img2spec.paths import Paths
from test_predict_support import LATENT, SIZE, build_project

Z_MEAN, Z_STD = 0.08, 0.02


@pytest.fixture(scope="module")
def photoz_env(tmp_path_factory):
    """A tiny project whose CNN has a redshift head, its bundle and a Predictor."""
    from img2spec.models.cnn import build_cnn
    from img2spec.predict import Predictor
    from img2spec.predict.bundle import build_bundle

    root = tmp_path_factory.mktemp("photoz_proj")
    facts = build_project(root)
    cnn = build_cnn((SIZE, SIZE, 5), LATENT, CNNParams(filters=(4,), dense_units=8), np.zeros(LATENT),
                    np.ones(LATENT), redshift_mean=Z_MEAN, redshift_std=Z_STD)
    cnn.save(root / "models" / "cnn" / "cnn.keras")
    build_bundle(params_from_dict({"publish": {"batch_size": 5, "registry": False}}), Paths(root))
    return root, facts, Predictor.from_path(root / "models" / "img2spec")


def test_predict_writes_photoz_and_uses_it_for_lines(photoz_env, tmp_path, monkeypatch):
    import img2spec.predict.runner as runner
    from img2spec.predict.runner import RunOptions, run_predict

    _, facts, predictor = photoz_env
    batch = predictor.predict_batch(facts["images"][:3])
    assert batch.z.shape == (3,) and np.isfinite(batch.z).all() and (batch.z_err > 0).all()

    plots = []
    real_plot = runner.plot_prediction
    monkeypatch.setattr(runner, "plot_prediction", lambda *a, **k: plots.append(k) or real_plot(*a, **k))
    files = facts["files"][:3]
    objids = [c.objid for c in facts["cutouts"][:3]]
    cat = tmp_path / "cat.csv"
    pd.DataFrame({"objid": [objids[0]], "z": [0.123]}).to_csv(cat, index=False)  # the user knows one z
    opts = RunOptions(out_dir=tmp_path / "out", catalogue=cat, table=tmp_path / "all.fits", plot=True, batch_size=5)
    summary = run_predict(predictor, files, opts)
    assert summary.n_predicted == 3

    headers = {fits.getheader(p, 0)["OBJID"]: fits.getheader(p, 0) for p in summary.outputs}
    for k, objid in enumerate(objids):
        h = headers[str(objid)]
        assert h["Z_PRED"] == pytest.approx(float(batch.z[k]), rel=1e-5)
        assert h["Z_ERR"] == pytest.approx(float(batch.z_err[k]), rel=1e-5)
    assert headers[str(objids[0])]["ZSOURCE"] == "catalogue"
    assert headers[str(objids[1])]["ZSOURCE"] == "photo-z"
    by_title = {k["title"].split()[0]: k for k in plots}
    assert by_title[str(objids[0])]["z"] == pytest.approx(0.123) and not by_title[str(objids[0])]["photoz"]
    assert by_title[str(objids[1])]["z"] == pytest.approx(float(batch.z[1]), rel=1e-5)
    assert by_title[str(objids[1])]["photoz"]

    table = fits.getdata(tmp_path / "all.fits", "PREDICTIONS")
    assert {"Z_PRED", "Z_ERR", "Z"} <= set(table.columns.names)
    np.testing.assert_allclose(np.sort(table["Z_PRED"]), np.sort(batch.z), rtol=1e-5)


def test_bundle_without_redshift_head_writes_no_photoz(tmp_path):
    from img2spec.predict import Predictor
    from img2spec.predict.bundle import build_bundle
    from img2spec.predict.runner import RunOptions, run_predict

    root = tmp_path / "proj"
    facts = build_project(root)  # its CNN predicts latents only (an older model)
    build_bundle(params_from_dict({"publish": {"batch_size": 5, "registry": False}}), Paths(root))
    predictor = Predictor.from_path(root / "models" / "img2spec")
    assert predictor.predict_batch(facts["images"][:2]).z is None
    summary = run_predict(predictor, facts["files"][:2], RunOptions(out_dir=tmp_path / "out", batch_size=5))
    header = fits.getheader(summary.outputs[0], 0)
    assert "Z_PRED" not in header and header["ZSOURCE"] == "none"
