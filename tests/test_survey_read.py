"""Reading a survey back (`img2spec.survey.open_survey`, `img2spec decode`): the compact store's
spectra, decoded on read, equal bit for bit what `--store spectra` writes for the same shards, with
shards decoded one at a time or several at once on threads (`read.ordered_map`); selections by ids,
HEALPix pixel and query; a bundle-hash mismatch is a clear error; the done check knows the store.
The tiny bundle and shards of test_survey, tasks run in this process."""

from __future__ import annotations

import json
import threading
import time

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


def test_shards_decoded_at_once_equal_one_at_a_time(env, surveys):  # noqa: F811
    from img2spec.survey import open_survey

    at_once, serial = open_survey(surveys["compact"], parallel=3), open_survey(surveys["compact"], parallel=1)
    assert (at_once.parallel, serial.parallel) == (3, 1)
    rows = at_once.select()
    shards = [part.catalogue["shard"].iloc[0] for _, part in at_once.decode_selected(rows)]
    assert len(shards) >= 3 and shards == sorted(shards)  # several shards, back in shard order
    for with_sigma in (True, False):
        a, b = at_once.spectra(with_sigma=with_sigma), serial.spectra(with_sigma=with_sigma)
        assert list(a.object_id) == list(b.object_id)
        for name in ("flux", "sigma"):
            assert np.array_equal(getattr(a, name).view(np.uint32), getattr(b, name).view(np.uint32)), name


def test_ordered_map_keeps_order_bounds_work_in_flight_and_stops_on_errors():
    from img2spec.survey.read import ordered_map

    started: list[int] = []

    def slow_first(i: int) -> int:  # early items finish last
        started.append(i)
        time.sleep(0.02 * (5 - i) if i < 5 else 0)
        return i * i

    results = ordered_map(slow_first, range(12), parallel=3)
    assert next(results) == 0
    assert len(started) <= 4  # 3 calls in flight, one more submitted as the first is taken
    assert [0, *results] == [i * i for i in range(12)]
    # one thread: every call in the caller's thread
    caller = threading.get_ident()
    assert list(ordered_map(lambda i: threading.get_ident() == caller, range(3), parallel=1)) == [True] * 3

    def fails_at_two(i: int) -> int:
        if i == 2:
            raise ValueError(f"bad item {i}")
        time.sleep(0.01)
        return i

    calls = ordered_map(fails_at_two, range(50), parallel=2)
    assert [next(calls), next(calls)] == [0, 1]
    with pytest.raises(ValueError, match="bad item 2"):
        next(calls)


def _blas_threads() -> set[int]:
    from threadpoolctl import threadpool_info

    return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


def test_blas_limit_shared_by_concurrent_decodes():
    """The tail's BLAS limit holds while any thread is inside it and the count from before comes
    back when the last one leaves: a decoding thread leaving never lifts it under another's product."""
    from img2spec.models.split import SplitDecoder

    before = _blas_threads()
    if not before or before == {1}:
        pytest.skip("numpy has no BLAS library threadpoolctl controls, or it runs one thread anyway")
    split = SplitDecoder(lambda x: x, lambda x, t: x, np.eye(2, dtype=np.float32), np.zeros(2, np.float32), 2,
                         blas_threads=1)
    with split.blas_limit():  # held by the thread that starts the decoding threads, as decode_selected does
        inside_a, a_left, b_may_leave = threading.Event(), threading.Event(), threading.Event()
        seen: dict[str, set[int]] = {}

        def a() -> None:
            with split.blas_limit():
                inside_a.set()
                b_may_leave.wait(5)
            a_left.set()

        def b() -> None:
            inside_a.wait(5)
            with split.blas_limit():
                b_may_leave.set()
                a_left.wait(5)  # a has left: the limit must still hold for b
                seen["b_after_a_left"] = _blas_threads()
                assert split.flux(np.ones((1, 2), np.float32)).tolist() == [[1.0, 1.0]]

        threads = [threading.Thread(target=a), threading.Thread(target=b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert seen["b_after_a_left"] == {1}
        assert _blas_threads() == {1}  # still held here
    assert _blas_threads() == before  # restored once every holder left


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
