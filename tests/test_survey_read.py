"""Reading a survey back (`img2spec.survey.open_survey`, `img2spec decode`): the compact store's
spectra, decoded on read, equal bit for bit what `--store spectra` writes for the same shards;
selections by ids, HEALPix pixel and query; a bundle-hash mismatch is a clear error; the done
check knows the store. The tiny bundle and shards of test_survey, tasks run in this process."""

from __future__ import annotations

import json

import numpy as np
import pytest

from img2spec.io.shards import list_parts, read_spectra_shard
from test_survey import env, inline_dask  # noqa: F401  (the tiny bundle, its shards; Dask tasks in-process)


@pytest.fixture(scope="module")
def surveys(env, tmp_path_factory):  # noqa: F811
    """The same shards surveyed into the compact store and into the spectra store."""
    import distributed

    from test_survey import _InlineClient

    from img2spec.survey.run import run_survey

    root = tmp_path_factory.mktemp("surveys")
    mp = pytest.MonkeyPatch()
    mp.setattr(distributed, "Client", _InlineClient)
    mp.setattr(distributed, "as_completed", lambda futures: list(futures))
    try:
        out = {store: root / store for store in ("compact", "spectra")}
        for store, path in out.items():
            report = run_survey(env["shards"], env["predictor"], path, env["params"], scheduler="inline://", store=store)
            assert report["shards"]["failed"] == 0 and report["store"] == store
    finally:
        mp.undo()
    return out


def _stored(out) -> dict[str, dict[str, np.ndarray]]:
    """object id -> every per-object array of the spectra store's files."""
    got = {}
    for _, path in list_parts(out):
        sp = read_spectra_shard(path)
        for k, oid in enumerate(sp.object_id):
            got[oid] = {"flux": sp.flux[k], "sigma": sp.sigma[k]}
    return got


def test_decoded_spectra_equal_the_spectra_store_bit_for_bit(env, surveys):  # noqa: F811
    from img2spec.survey import open_survey

    from img2spec.survey.read import workers_runtime

    survey = open_survey(surveys["compact"])  # the bundle recorded in survey.json
    assert survey.predictor.bundle_hash == env["predictor"].bundle_hash
    runtime, threads = workers_runtime(surveys["compact"])  # the reader runs the networks as the workers did
    assert survey.predictor.runtime == runtime and threads == (1, 1)
    got = survey.spectra()  # everything predicted
    stored = _stored(surveys["spectra"])
    assert sorted(got.object_id) == sorted(stored) and len(got) == env["n_good"]
    np.testing.assert_array_equal(got.wave, env["predictor"].wave)
    for k, oid in enumerate(got.object_id):
        for name in ("flux", "sigma"):
            assert np.array_equal(getattr(got, name)[k].view(np.uint32), stored[oid][name].view(np.uint32)), (oid, name)
    # flux alone: the same flux, no sigma computed
    flux_only = survey.spectra(with_sigma=False)
    assert np.array_equal(flux_only.flux, got.flux) and np.isnan(flux_only.sigma).all()
    # the spectra store reads back through the same interface
    same = open_survey(surveys["spectra"]).spectra()
    assert list(same.object_id) == list(got.object_id) and np.array_equal(same.flux, got.flux)


def test_selections_by_ids_healpix_and_query(env, surveys):  # noqa: F811
    from img2spec.survey import open_survey
    from img2spec.survey.store import StoreError

    survey = open_survey(surveys["compact"])
    cat = survey.catalogue.compute()
    assert len(cat) == env["n_good"] + 1 and "healpix" in cat
    stored = _stored(surveys["spectra"])
    ids = [cat["object_id"].iloc[i] for i in (5, 0, 3) if cat["predicted"].iloc[i]]
    by_ids = survey.spectra(ids)
    assert list(by_ids.object_id) == ids  # in the order asked
    for k, oid in enumerate(ids):
        assert np.array_equal(by_ids.flux[k], stored[oid]["flux"]) and np.array_equal(by_ids.sigma[k], stored[oid]["sigma"])
    pixel = int(cat["healpix"].astype(int).iloc[0])
    in_pixel = survey.spectra(healpix=pixel)
    want = cat[(cat["healpix"].astype(int) == pixel) & cat["predicted"]]
    assert sorted(in_pixel.object_id) == sorted(want["object_id"]) and len(in_pixel)
    ra_cut = float(np.median(cat["ra"]))
    queried = survey.spectra(f"ra < {ra_cut}")
    assert sorted(queried.object_id) == sorted(cat[(cat["ra"] < ra_cut) & cat["predicted"]]["object_id"])
    for k, oid in enumerate(queried.object_id):
        assert np.array_equal(queried.flux[k], stored[oid]["flux"])
    with pytest.raises(StoreError, match=env["bad_id"]):  # skipped: no spectrum
        survey.spectra([env["bad_id"]])
    with pytest.raises(StoreError, match="not in the catalogue"):
        survey.spectra(["no-such-object"])
    with pytest.raises(StoreError, match="query"):
        survey.spectra("no_such_column > 1")


def test_bundle_hash_mismatch_is_a_clear_error(env, surveys, tmp_path):  # noqa: F811
    import h5py

    from img2spec.config import params_from_dict
    from img2spec.paths import Paths
    from img2spec.predict.bundle import build_bundle
    from img2spec.survey import open_survey
    from img2spec.survey.read import BundleMismatchError

    other_dir = tmp_path / "other"
    build_bundle(params_from_dict({"publish": {"batch_size": 7, "registry": False}}), Paths(env["root"]), dest=other_dir)
    survey_hash = env["predictor"].bundle_hash
    with pytest.raises(BundleMismatchError) as err:
        open_survey(surveys["compact"], model=other_dir)
    from img2spec.predict.bundle_info import BundleInfo

    other_hash = BundleInfo.from_path(other_dir).bundle_hash
    assert survey_hash in str(err.value) and other_hash in str(err.value) and str(other_dir) in str(err.value)
    # a shard stamped by another bundle than survey.json's: named when it is read
    out = tmp_path / "copy"
    import shutil

    shutil.copytree(surveys["compact"], out)
    _, part = list_parts(out)[0]
    with h5py.File(part, "a") as f:
        f.attrs["bundle_hash"] = "f" * 64
    survey = open_survey(out)
    with pytest.raises(BundleMismatchError, match="f" * 64) as err:
        survey.spectra()
    assert survey_hash in str(err.value) and str(part) in str(err.value)


def test_done_check_knows_the_store(env, surveys, tmp_path, inline_dask):  # noqa: F811
    """A compact output is not done for the spectra store and the other way round, and a run into
    a directory of the other store is refused with a message naming both stores."""
    from img2spec.io.shards import iter_parts, read_attrs
    from img2spec.survey.run import SurveyError, run_survey
    from img2spec.survey.task import is_done

    h = env["predictor"].bundle_hash
    for store, other in (("compact", "spectra"), ("spectra", "compact")):
        for _, path, rel in iter_parts(env["shards"]):
            input_hash = read_attrs(path)["content_hash"]
            assert is_done(surveys[store], rel, h, input_hash, store) is not None
            assert is_done(surveys[store], rel, h, input_hash, other) is None
        again = run_survey(env["shards"], env["predictor"], surveys[store], env["params"], scheduler="inline://",
                           store=store)
        assert again["shards"]["done"] == 0 and not inline_dask.keys  # a rerun of the same store: a no-op
        with pytest.raises(SurveyError, match=f"--store {store}.*--store {other}"):
            run_survey(env["shards"], env["predictor"], surveys[store], env["params"], scheduler="inline://",
                       store=other)


def test_decode_cli_writes_predict_fits_for_a_query(env, surveys, tmp_path):  # noqa: F811
    from astropy.io import fits
    from typer.testing import CliRunner

    from img2spec.cli import app
    from img2spec.survey import open_survey

    survey = open_survey(surveys["compact"])
    cat = survey.catalogue.compute()
    pick = cat[cat["predicted"]].sort_values("ra").iloc[:2]
    where = " or ".join(f"object_id == '{oid}'" for oid in pick["object_id"])
    out = tmp_path / "fits"
    res = CliRunner().invoke(app, ["decode", str(surveys["compact"]), "--where", where, "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output[res.output.index("{"):])
    assert report["n_written"] == 2
    stored = _stored(surveys["spectra"])
    for oid in pick["object_id"]:
        with fits.open(out / f"spec-pred-{oid}.fits") as hdul:
            assert hdul[0].header["OBJID"] == oid and hdul[0].header["MODELHSH"] == env["predictor"].bundle_hash[:16]
            coadd = hdul["COADD"].data
            np.testing.assert_array_equal(coadd["flux"], stored[oid]["flux"])
            np.testing.assert_allclose(coadd["sigma"], stored[oid]["sigma"])
    nothing = CliRunner().invoke(app, ["decode", str(surveys["compact"]), "--out", str(out)])
    assert nothing.exit_code == 2 and "nothing selected" in nothing.output
