"""img2spec survey on a Dask LocalCluster (2 worker processes): spectra equal the Predictor's, reruns
skip every shard, a corrupt part is reported while the rest finish, a killed worker changes nothing,
and a killed client leaves no worker behind and resumes to the outputs of an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time

import numpy as np
import pandas as pd
import psutil
import pytest

from img2spec import BANDS
from img2spec.config import params_from_dict
from img2spec.io.ps1_cutout import write_cutout
from img2spec.io.shards import CutoutShard, list_parts, read_spectra_shard, write_cutout_shard
from img2spec.paths import Paths
from img2spec.predict.bundle_info import BundleInfo
from test_predict_support import build_project, galaxy_cutout

N_EXTRA = 10


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The tiny bundle of test_predict, its cutouts plus more (two sky pixels, one NaN centre), packed."""
    from img2spec.predict import Predictor
    from img2spec.predict.bundle import build_bundle
    from img2spec.survey.pack import pack

    root = tmp_path_factory.mktemp("proj")
    facts = build_project(root)
    build_bundle(params_from_dict({"publish": {"batch_size": 5, "registry": False}}), Paths(root))
    predictor = Predictor.from_path(root / "models" / "img2spec")
    rng = np.random.default_rng(9)
    extra = root / "extra"
    cutouts = list(facts["cutouts"])
    for i in range(N_EXTRA):
        c = galaxy_cutout(2000 + i, rng)
        c.ra += 40.0  # another HEALPix pixel
        cutouts.append(c)
        write_cutout(extra / f"{c.objid}.fits", c)
    bad = galaxy_cutout(3000, rng)
    bad.data["r"][4:12, 4:12] = np.nan  # the whole 8x8 centre box
    write_cutout(extra / "nan_centre.fits", bad)
    # the spectra store: these tests read the spectra files (the compact store: test_survey_read)
    params = params_from_dict({"survey": {"healpix_order": 3, "objects_per_part": 4, "n_workers": 2,
                                          "threads_per_worker": 1, "retries": 1, "batch_size": 3,
                                          "store": "spectra"}})
    shards = root / "shards"
    pack([root / "data" / "raw" / "images", extra], shards, params)
    # what the Predictor gives for every good cutout, one call on all of them
    images = np.stack([predictor.preprocess_cutout(c) for c in cutouts])
    ref = predictor.predict(images)
    expected = {str(c.objid): (ref.flux[k], ref.sigma[k]) for k, c in enumerate(cutouts)}
    return {"root": root, "predictor": predictor, "params": params, "shards": shards, "expected": expected,
            "n_good": len(cutouts), "bad_id": str(bad.objid)}


def _outputs(out):
    got = {}
    for _, path in list_parts(out):
        sp = read_spectra_shard(path)
        for k, oid in enumerate(sp.object_id):
            got[oid] = (sp.flux[k], sp.sigma[k])
    return got


def _check_outputs(env, out, *, skip_parts=()):
    got = _outputs(out)
    expected = {k: v for k, v in env["expected"].items()}
    for oid, (flux, sigma) in got.items():
        np.testing.assert_allclose(flux, expected[oid][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(sigma, expected[oid][1], rtol=1e-5, atol=1e-6)
    return got


def test_shard_task_matches_predictor_and_rerun_skips(env, tmp_path):
    """The per-shard task of every survey, in this process (no cluster): spectra equal the
    Predictor's, the NaN-centre cutout is a counted skip, a second call is a no-op. The same on a
    LocalCluster is the slow test below."""
    from img2spec.io.shards import iter_parts
    from img2spec.survey.task import ModelSpec, predict_shard

    out = tmp_path / "out"
    spec = ModelSpec.of(env["predictor"])
    results = [predict_shard(str(path), rel, str(out), spec, store="spectra") for _, path, rel in iter_parts(env["shards"])]
    assert len(results) >= 4 and all(r["status"] != "skipped_done" for r in results)
    got = _check_outputs(env, out)
    assert len(got) == env["n_good"] == sum(r["n_predicted"] for r in results)
    skipped = [s for r in results for s in r["skipped"]]
    assert len(skipped) == 1 and "nan_centre" in str(skipped[0]) and env["bad_id"] in str(skipped[0])
    assert not [p for p in out.rglob(".*")]  # no temporaries
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.hdf5")}
    again = [predict_shard(str(path), rel, str(out), spec, store="spectra") for _, path, rel in iter_parts(env["shards"])]
    assert {r["status"] for r in again} == {"skipped_done"}
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.hdf5")} == mtimes


@pytest.mark.slow  # a 2-worker LocalCluster (TensorFlow import and bundle load per worker): ~1 min on 2 busy cores
def test_survey_matches_predictor_and_rerun_skips(env, tmp_path):
    from img2spec.survey.run import run_survey
    from img2spec.survey.task import PHASES, WORKER_DASK_CONFIG, WORKER_MALLOC_THRESHOLDS

    out = tmp_path / "out"
    bundle = BundleInfo.from_path(env["root"] / "models" / "img2spec")  # what the CLI's client hands over
    report = run_survey(env["shards"], bundle, out, env["params"])
    assert report["model"]["bundle_hash"] == env["predictor"].bundle_hash
    n_parts = len(list_parts(env["shards"]))
    assert n_parts >= 4 and report["shards"] == {"total": n_parts, "done": n_parts, "skipped_already_done": 0,
                                                 "failed": 0}
    assert report["cluster"]["n_workers"] == 2
    # one TensorFlow thread per Dask thread, and the workers' malloc settings (not Dask's trim default)
    assert report["cluster"]["tf_intra_inter_op_threads"] == [[1, 1]]
    assert report["cluster"]["worker_malloc"] == [WORKER_MALLOC_THRESHOLDS]
    assert report["cluster"]["worker_dask_config"] == [WORKER_DASK_CONFIG]
    assert report["cluster"]["start_method"] == "fork"  # the default on Linux
    assert report["cluster"]["prefetch_distance"] == 2  # one shard ahead per worker thread
    assert set(report["task_phase_seconds"]) == set(PHASES) and report["task_phase_seconds"]["predict"] > 0
    assert report["startup_seconds"] > 0 and report["cluster_start_seconds"] > 0 and report["task_cpu_seconds"] > 0
    assert 0 < report["shutdown_seconds"] < report["seconds"]
    got = _check_outputs(env, out)
    assert len(got) == env["n_good"] == report["objects"]["predicted"]
    assert report["objects"]["skipped_by_reason"] == {"nan_centre": 1}
    skipped = pd.read_parquet(out / "skipped.parquet")
    assert list(skipped["object_id"]) == [env["bad_id"]] and "nan_centre" in skipped["detail"][0]
    cat = pd.read_parquet(out / "catalogue")
    assert len(cat) == env["n_good"] + 1 and set(cat["healpix"].astype(int)) == {h for h, _ in list_parts(out)}
    row = cat.set_index("object_id").loc[env["bad_id"]]
    assert not row["predicted"] and row["quality_flags"] & 1 and "nan_centre" in row["skip_reason"]
    assert cat["predicted"].sum() == env["n_good"]
    assert not [p for p in out.rglob(".*")]  # no temporaries

    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.hdf5")}
    again = run_survey(env["shards"], env["predictor"], out, env["params"])
    assert again["shards"]["skipped_already_done"] == n_parts and again["shards"]["done"] == 0
    assert again["cluster"]["n_workers"] == 0  # nothing to do: no cluster started
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.hdf5")} == mtimes


def test_prepare_stack_equals_one_cutout_at_a_time_for_any_chunk(env, monkeypatch):
    """`Predictor.prepare_stack` on a shard-like (N, bands, H, W) stack moved to bands last, bands
    out of order, rejects spread over several chunks: the kept images are bit for bit
    `preprocess_cutout`'s, the rejects `check_cutout`'s, whatever the chunk size."""
    import img2spec.predict.predictor as predictor_module
    from img2spec.predict.predictor import check_code

    pred = env["predictor"]
    rng = np.random.default_rng(21)
    cutouts = [galaxy_cutout(5000 + i, rng, shift=6.0 if i % 9 == 4 else 0.0) for i in range(37)]
    cutouts[3].data["i"][:] = np.nan  # no finite pixel in a band
    cutouts[20].data["g"][4:12, 4:12] = np.nan  # NaN centre
    cutouts[30].data["z"][0, 0] = np.inf  # one bad border pixel: kept, zeroed by the stretch
    bands = ("y", "g", "z", "r", "i")
    stack = np.moveaxis(np.stack([np.stack([c.data[b] for b in bands]) for c in cutouts]), 1, -1)
    magzp = np.array([[c.magzp[b] for b in bands] for c in cutouts])
    ids = [c.objid for c in cutouts]
    want = {i: check_code(r) for i, c in enumerate(cutouts) if (r := pred.check_cutout(c))}
    assert {3, 20} <= set(want) and 30 not in want and len(want) < len(cutouts) - 20
    ref = np.stack([pred.preprocess_cutout(c) for i, c in enumerate(cutouts) if i not in want])
    for chunk in (1, 5, 16, 1000):
        monkeypatch.setattr(predictor_module, "PREPARE_CHUNK", chunk)
        got = pred.prepare_stack(stack, magzp, bands, np.full(len(cutouts), 0.25), ids)
        assert {i: code for i, (code, _) in got.rejected.items()} == want
        assert got.kept.tolist() == [i for i in range(len(cutouts)) if i not in want]
        assert np.array_equal(got.images.view(np.uint32), ref.view(np.uint32))


def test_survey_client_reads_the_manifest_without_tensorflow(env):
    """The client only hands the bundle to its workers: BundleInfo and the survey modules load it
    (hash, inference options, provenance as the Predictor's) without importing TensorFlow or ONNX Runtime."""
    import subprocess
    import sys

    bundle = env["root"] / "models" / "img2spec"
    code = (
        "import sys, json; from img2spec.predict.bundle_info import BundleInfo; import img2spec.survey.run; "
        "import img2spec.cli; from img2spec.survey.task import ModelSpec; "
        f"b = BundleInfo.load({str(bundle)!r}); s = ModelSpec.of(b); "
        "print(json.dumps([b.bundle_hash, b.sigma_method, b.n_samples, b.provenance['source'], s.path, "
        "'tensorflow' in sys.modules, 'keras' in sys.modules, 'onnxruntime' in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    got = json.loads(out.strip().splitlines()[-1])
    pred = env["predictor"]
    # nor the ONNX runtime: workers forked from the client inherit no runtime's thread pool
    assert got == [pred.bundle_hash, pred.sigma_method, pred.n_samples, "path", str(bundle.resolve()), False, False,
                   False]


def test_local_worker_teardown_exits_at_once_with_output_flushed():
    """After the LocalCluster plugin's teardown, the process's exit skips every other exit handler
    (TensorFlow's slow finalisation among them), exits 0, and what it printed is not lost."""
    import subprocess
    import sys

    code = (
        "import atexit, sys; atexit.register(print, 'later exit handler ran'); "
        "from img2spec.survey.run import _local_worker_plugin; _local_worker_plugin().teardown(None); "
        "print('work done', end=''); sys.exit(3)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout == "work done"


def test_steady_rate_leaves_out_each_workers_first_shard():
    """Per worker: objects of its warm shards over their span; summed over workers; None without a warm shard."""
    from img2spec.survey.run import steady_rate

    tasks = [
        {"pid": 1, "started": 0.0, "finished": 10.0, "n_predicted": 100, "loaded_bundle": True},  # TF import, traces
        {"pid": 1, "started": 10.0, "finished": 12.0, "n_predicted": 200, "loaded_bundle": False},
        {"pid": 1, "started": 12.5, "finished": 14.0, "n_predicted": 150, "loaded_bundle": False},
        {"pid": 2, "started": 1.0, "finished": 9.0, "n_predicted": 100, "loaded_bundle": True},
        {"pid": 2, "started": 9.0, "finished": 13.0, "n_predicted": 300, "loaded_bundle": False},
        {"pid": 3, "started": 2.0, "finished": 9.0, "n_predicted": 100, "loaded_bundle": True},  # no warm shard
    ]
    assert steady_rate(tasks) == pytest.approx(350 / 4.0 + 300 / 4.0)
    assert steady_rate([t for t in tasks if t["loaded_bundle"]]) is None


def _worker_pids() -> list[int]:
    """Dask worker processes of the LocalCluster (children of this process, forked or spawned)."""
    pids, me = [], psutil.Process()
    for p in me.children(recursive=True):
        try:
            if "spawn_main" in " ".join(p.cmdline()) or p.cmdline() == me.cmdline():
                pids.append(p.pid)
        except psutil.Error:  # exited meanwhile
            continue
    return pids


@pytest.mark.slow  # two more LocalCluster runs, one with a killed worker
def test_corrupt_part_reported_and_killed_worker_changes_nothing(env, tmp_path):
    from img2spec.survey.run import run_survey

    shards = tmp_path / "shards"
    shutil.copytree(env["shards"], shards)
    parts = list_parts(shards)
    corrupt = parts[1][1]
    corrupt.write_bytes(b"\x89HDF\r\n garbage" * 100)
    # a shard whose images lack a band: every object is a counted skip, as in predict
    src = parts[0][1]
    from img2spec.io.shards import read_cutout_shard

    full = read_cutout_shard(src)
    four = CutoutShard(full.object_id, full.ra, full.dec, full.image_flux[:, :4], full.magzp[:, :4], BANDS[:4],
                       full.pixel_scale)
    write_cutout_shard(shards / "healpix=999" / "part-00000.hdf5", four)
    out = tmp_path / "out"
    killed: list[tuple[int, int]] = []

    def kill_one_worker():
        # once the first shard is written, kill -9 a worker while the others are still to do
        while not finished.is_set():
            done = len(list(out.glob("healpix=*/*.hdf5")))
            pids = _worker_pids()
            if done >= 1 and pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append((pids[0], done))
                return
            time.sleep(0.005)

    finished = threading.Event()
    killer = threading.Thread(target=kill_one_worker, daemon=True)
    killer.start()
    try:
        report = run_survey(shards, env["predictor"], out, env["params"])
    finally:
        finished.set()
        killer.join(5)
    n_parts = len(parts) + 1
    assert killed and killed[0][1] < n_parts - 1  # the kill happened mid-run
    assert report["shards"]["failed"] == 1 and report["failed"][0]["shard"] == corrupt.relative_to(shards).as_posix()
    assert "ShardFormatError" in report["failed"][0]["reason"]
    # A worker killed after writing its shard but before reporting it leaves the shard complete:
    # Dask's retry finds the output with the same bundle hash and skips it, so both counts are "done".
    assert report["shards"]["done"] + report["shards"]["skipped_already_done"] == n_parts - 1
    assert report["objects"]["skipped_by_reason"]["missing_band"] == len(full)  # the 4-band shard
    skipped = pd.read_parquet(out / "skipped.parquet")
    assert skipped["detail"].str.contains("band(s) ['y'] missing", regex=False).sum() == len(full)
    assert set(skipped.loc[skipped["reason"] == "missing_band", "shard"]) == {"healpix=999/part-00000.hdf5"}
    got = _check_outputs(env, out)
    corrupt_ids = set(read_cutout_shard(env["shards"] / corrupt.relative_to(shards)).object_id)
    assert set(got) == set(env["expected"]) - corrupt_ids
    assert not [p for p in out.rglob(".*")]  # the killed worker's temporary was cleaned up
    saved = json.loads((out / "survey.json").read_text())
    assert saved["failed"] == report["failed"]


def test_predict_accepts_single_band_files(env, tmp_path):
    """`img2spec predict` groups PS1 cutout-service files per object, as pack does, and predicts the same spectra."""
    from astropy.table import Table

    from img2spec.predict import RunOptions, run_predict
    from test_pack import write_band_file

    rng = np.random.default_rng(11)
    d = tmp_path / "single"
    d.mkdir()
    cutouts = [galaxy_cutout(4000 + i, rng) for i in range(3)]
    for c in cutouts:
        for band in BANDS:
            if not (c is cutouts[2] and band == "z"):
                write_band_file(d / f"{c.objid}_{band}.fits", c, band)
    out = tmp_path / "out"
    summary = run_predict(env["predictor"], [d], RunOptions(out_dir=out, per_object=False, table=out / "t.fits"))
    assert summary.n_predicted == 2
    assert [(s.reason, len(s.file.split(","))) for s in summary.skipped] == [("incomplete_band_set", 4)]
    table = Table.read(out / "t.fits")
    ref = env["predictor"].predict(np.stack([env["predictor"].preprocess_cutout(c) for c in cutouts[:2]]))
    rows = {str(r["OBJID"]).strip(): k for k, r in enumerate(table)}
    for k, c in enumerate(cutouts[:2]):
        np.testing.assert_allclose(np.asarray(table["FLUX"][rows[str(c.objid)]]), ref.flux[k], rtol=1e-5, atol=1e-6)


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _gone(proc: psutil.Process) -> bool:
    """Exited (a zombie counts: nobody may reap an orphan in a container whose init does not)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _spectra_arrays(out) -> dict:
    """Every dataset and attribute of every spectra shard under `out`, keyed by its relative path."""
    import h5py

    got = {}
    for _, path in list_parts(out):
        with h5py.File(path, "r") as f:
            got[path.relative_to(out).as_posix()] = (
                {name: f[name][()] for name in f}, {k: f.attrs[k] for k in f.attrs})
    return got


CLIENT_KILL_TIMEOUT_S = 300.0
"""Upper bound on the killed run reaching its first shard output (cluster start, TF import, bundle load)."""
ORPHAN_WAIT_S = 15.0
"""Workers exit on the client's death (prctl + watchdog of io.processes, Dask's parent pipe): well within this."""


@pytest.mark.slow
def test_client_kill9_leaves_no_orphans_and_resumes_to_identical_outputs(env, tmp_path):
    """kill -9 of the `img2spec survey` client mid-run: its workers die, no partial output exists under a
    final name, and the rerun skips the finished shards and ends with outputs identical to an uninterrupted run."""
    import subprocess
    import sys

    import yaml

    from img2spec.io.atomic import temp_owner
    from img2spec.io.processes import pid_alive
    from img2spec.io.shards import read_attrs
    from img2spec.survey.pack import pack
    from img2spec.survey.run import run_survey
    from img2spec.survey.task import is_done

    # One object per shard and per forward pass: ~20 tasks, so the client is killed with most still to do.
    survey = {"healpix_order": 3, "objects_per_part": 1, "n_workers": 2, "threads_per_worker": 1, "retries": 1,
              "batch_size": 1, "store": "spectra"}
    params = params_from_dict({"survey": survey})
    shards = tmp_path / "shards"
    pack([env["root"] / "data" / "raw" / "images", env["root"] / "extra"], shards, params)
    parts = list_parts(shards)
    assert len(parts) == env["n_good"] + 1
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump({"survey": survey}))
    out = tmp_path / "out"
    bundle = env["root"] / "models" / "img2spec"
    cmd = [sys.executable, "-m", "img2spec.cli", "survey", str(shards), "--model", str(bundle), "--out", str(out),
           "--params", str(pfile)]
    seen: dict[int, psutil.Process] = {}
    killed = False
    with open(tmp_path / "killed.log", "wb") as log_fh:
        client = subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + CLIENT_KILL_TIMEOUT_S
            while client.poll() is None and time.monotonic() < deadline:
                seen.update({p.pid: p for p in _descendants(client.pid)})  # workers, restarted ones too
                if out.is_dir() and list_parts(out):  # a first shard is done
                    client.send_signal(signal.SIGKILL)
                    killed = True
                    break
                time.sleep(0.01)
        finally:
            if client.poll() is None:  # timed out, or the test failed: never leave the client running
                client.kill()
            client.wait()
    log_text = (tmp_path / "killed.log").read_text(errors="replace")
    assert killed and client.returncode == -signal.SIGKILL, log_text[-3000:]
    assert seen, "the killed client had no worker processes"

    # No orphans: every process the client started (Dask worker processes) exits without it.
    deadline = time.monotonic() + ORPHAN_WAIT_S
    while not all(_gone(p) for p in seen.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [(p.pid, p.cmdline()) for p in seen.values() if not _gone(p)]
    for p in seen.values():  # do not leave them running if the assertion below fails
        if not _gone(p):
            p.kill()
    assert not alive, f"orphaned after the client's kill -9: {alive}"

    # Under final names only complete outputs: every spectra shard readable and marked done.
    n_done = 0
    for healpix, path in list_parts(out):
        rel = path.relative_to(out).as_posix()
        attrs = read_attrs(path)
        assert attrs is not None and read_spectra_shard(path).flux.shape[0] == attrs["n_objects"]
        n_done += is_done(out, rel, env["predictor"].bundle_hash, read_attrs(shards / rel)["content_hash"], "spectra") is not None
    assert 1 <= n_done < len(parts), (n_done, len(parts))  # killed mid-run
    # Temporaries a kill -9 cannot clean up belong to dead writers, which the rerun removes.
    temps = [p for p in out.rglob(".*") if temp_owner(p.name) is not None]
    assert all(not pid_alive(temp_owner(p.name)) for p in temps), temps

    # the rerun and the reference on one worker (less CPU): the outputs do not depend on the worker count
    one = params_from_dict({"survey": {**survey, "n_workers": 1}})
    resumed = run_survey(shards, env["predictor"], out, one)
    assert resumed["shards"] == {"total": len(parts), "done": len(parts) - n_done, "skipped_already_done": n_done,
                                 "failed": 0}
    assert not list(out.rglob(".*"))  # no temporaries left after the rerun

    ref = tmp_path / "ref"
    whole = run_survey(shards, env["predictor"], ref, one)
    assert whole["shards"]["done"] == len(parts)
    got, expected = _spectra_arrays(out), _spectra_arrays(ref)
    assert sorted(got) == sorted(expected) and len(got) == len(parts)
    for rel, (data, attrs) in expected.items():
        assert sorted(got[rel][0]) == sorted(data) and got[rel][1].keys() == attrs.keys(), rel
        for name, values in data.items():
            np.testing.assert_array_equal(got[rel][0][name], values, err_msg=f"{rel}:{name}")  # bit for bit
        for key, value in attrs.items():
            assert np.all(got[rel][1][key] == value), (rel, key)
    cat_got = pd.read_parquet(out / "catalogue").sort_values("object_id", ignore_index=True)
    cat_ref = pd.read_parquet(ref / "catalogue").sort_values("object_id", ignore_index=True)
    assert len(cat_ref) == len(parts)
    pd.testing.assert_frame_equal(cat_got, cat_ref, check_exact=True)


def _fsynced_paths(monkeypatch) -> list[str]:
    """Record the path of every fsync'ed descriptor from now on (the call itself still happens)."""
    import img2spec.survey.task as task_module

    real = os.fsync
    seen: list[str] = []

    def fsync(fd):
        seen.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(task_module.os, "fsync", fsync)
    return seen


def test_done_needs_both_outputs_stamped_and_they_are_fsynced(env, tmp_path, monkeypatch):
    """A shard counts as done only with its spectra shard and its catalogue part both present and
    both stamped with this bundle and this input; each file is fsynced under its temporary name
    (before the rename) and the directories holding the new names after it."""
    from img2spec.io.shards import iter_parts, read_attrs
    from img2spec.survey.task import ModelSpec, is_done, output_paths, predict_shard

    out = tmp_path / "out"
    spec = ModelSpec.of(env["predictor"])
    _, path, rel = next(iter_parts(env["shards"]))
    input_hash = read_attrs(path)["content_hash"]
    spectra, catalogue = output_paths(out, rel)
    synced = _fsynced_paths(monkeypatch)
    ahead = []
    monkeypatch.setattr("img2spec.survey.task.prefetch", ahead.append)
    assert predict_shard(str(path), rel, str(out), spec, store="spectra", read_ahead="next.hdf5")["status"] == "done"
    assert ahead == ["next.hdf5"]  # handed to the kernel before this shard's own work
    for final in (spectra, catalogue):
        temps = [s for s in synced if os.path.dirname(s) == str(final.parent)
                 and os.path.basename(s).startswith(f".{final.name}.tmp-")]
        assert temps, (final, synced)
    for d in (spectra.parent, catalogue.parent, catalogue.parent.parent, out):
        assert str(d) in synced, (d, synced)
    # the spectra shard (the marker) is synced after the catalogue part is complete under its final name
    first_spectra_sync = min(i for i, s in enumerate(synced) if os.path.basename(s).startswith(f".{spectra.name}"))
    assert str(catalogue.parent) in synced[:first_spectra_sync]
    assert is_done(out, rel, spec.bundle_hash, input_hash, "spectra") is not None

    frame = pd.read_parquet(catalogue)
    catalogue.unlink()  # a lost catalogue part: not done, and the task predicts the shard again
    assert is_done(out, rel, spec.bundle_hash, input_hash, "spectra") is None
    assert predict_shard(str(path), rel, str(out), spec, store="spectra")["status"] == "done" and catalogue.exists()
    frame.to_parquet(catalogue, index=False)  # a part without the stamp (as another writer leaves it)
    assert is_done(out, rel, spec.bundle_hash, input_hash, "spectra") is None
    from img2spec.survey.task import write_catalogue_part
    write_catalogue_part(catalogue, frame, {"bundle_hash": "another-bundle", "input_hash": input_hash}, out)
    assert is_done(out, rel, spec.bundle_hash, input_hash, "spectra") is None
    write_catalogue_part(catalogue, frame, {"bundle_hash": spec.bundle_hash, "input_hash": "another-input"}, out)
    assert is_done(out, rel, spec.bundle_hash, input_hash, "spectra") is None
    write_catalogue_part(catalogue, frame.iloc[:-1], {"bundle_hash": spec.bundle_hash, "input_hash": input_hash}, out)
    assert is_done(out, rel, spec.bundle_hash, input_hash, "spectra") is None  # rows missing
    write_catalogue_part(catalogue, frame, {"bundle_hash": spec.bundle_hash, "input_hash": input_hash}, out)
    assert is_done(out, rel, spec.bundle_hash, input_hash, "spectra") is not None


class _InlineFuture:
    """A finished Dask future: the task ran in this process when it was submitted."""

    def __init__(self, fn, args):
        self._result, self._error = None, None
        try:
            self._result = fn(*args)
        except Exception as exc:  # as Dask hands a task's error to the client
            self._error = exc

    def result(self):
        if self._error is not None:
            raise self._error
        return self._result

    def release(self) -> None:
        pass


class _InlineClient:
    """A Dask client whose tasks run in this process at submission; records every task key."""

    keys: list[str] = []
    dashboard_link = None

    def __init__(self, address) -> None:
        self.address = address

    def register_plugin(self, plugin) -> None:
        pass

    def nthreads(self) -> dict:
        return {"inline": 1}

    def submit(self, fn, *args, key, **kwargs):
        _InlineClient.keys.append(key)
        return _InlineFuture(fn, args)

    def close(self) -> None:
        pass


@pytest.fixture
def inline_dask(monkeypatch):
    """`run_survey(..., scheduler=...)` with its tasks run in this process (no cluster, no TensorFlow import per worker)."""
    import distributed

    monkeypatch.setattr(distributed, "Client", _InlineClient)
    monkeypatch.setattr(distributed, "as_completed", lambda futures: list(futures))
    _InlineClient.keys = []
    return _InlineClient


def test_task_keys_name_the_shard_and_output_directories(env, tmp_path, inline_dask):
    """Two surveys of shards with the same names on one scheduler never share a task key (a scheduler
    keeps results by key), while a rerun of the same survey submits the same keys."""
    from img2spec.survey.run import run_survey

    other_shards = tmp_path / "other_shards"
    shutil.copytree(env["shards"], other_shards)
    n_parts = len(list_parts(env["shards"]))
    runs = {}
    for name, shards, out in (("a", env["shards"], tmp_path / "a"), ("b", env["shards"], tmp_path / "b"),
                              ("c", other_shards, tmp_path / "c")):
        inline_dask.keys = []
        report = run_survey(shards, env["predictor"], out, env["params"], scheduler="inline://")
        assert report["shards"]["done"] == n_parts
        runs[name] = set(inline_dask.keys)
        assert len(runs[name]) == n_parts
    assert not runs["a"] & runs["b"] and not runs["a"] & runs["c"] and not runs["b"] & runs["c"]
    shutil.rmtree(tmp_path / "a")
    inline_dask.keys = []
    run_survey(env["shards"], env["predictor"], tmp_path / "a", env["params"], scheduler="inline://")
    assert set(inline_dask.keys) == runs["a"]


def test_survey_skips_go_to_a_table_and_flags_are_integers(env, tmp_path, inline_dask):
    """survey.json counts skips by reason without listing them; skipped.parquet has one row per skipped
    object; the catalogue's flag and class columns are integers (null flags, class -1 where skipped)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from img2spec.measure.classify import UNCLASSIFIED
    from img2spec.survey.run import run_survey

    out = tmp_path / "out"
    report = run_survey(env["shards"], env["predictor"], out, env["params"], scheduler="inline://")
    saved = json.loads((out / "survey.json").read_text())
    for rep in (report, saved):
        assert "skipped" not in rep and rep["objects"]["skipped"] == 1
        assert rep["objects"]["skipped_by_reason"] == {"nan_centre": 1}
    skipped = pd.read_parquet(out / "skipped.parquet")
    assert list(skipped.columns) == ["shard", "object_id", "reason", "detail"] and len(skipped) == 1
    row = skipped.iloc[0]
    assert row["object_id"] == env["bad_id"] and row["reason"] == "nan_centre" and "nan_centre" not in row["shard"]
    assert (env["shards"] / row["shard"]).is_file() and row["detail"]

    schema = pq.read_schema(next((out / "catalogue").rglob("*.parquet")))
    flag_cols = [n for n in schema.names if n.endswith("_flag") or n == "quality_flags"]
    class_cols = [n for n in schema.names if n.endswith("_class")]
    assert len(flag_cols) > 5 and {"bpt_class", "agn_class", "sf_class"} <= set(class_cols)
    for name in flag_cols + class_cols:
        assert pa.types.is_integer(schema.field(name).type), (name, schema.field(name).type)
    cat = pd.read_parquet(out / "catalogue").set_index("object_id")
    bad, good = cat.loc[env["bad_id"]], cat[cat["predicted"]]
    assert all(pd.isna(bad[n]) for n in flag_cols if n != "quality_flags") and bad["quality_flags"] & 1
    assert all(bad[n] == UNCLASSIFIED for n in class_cols)
    assert all(good[n].notna().all() for n in flag_cols)

    # a rerun predicts nothing: no skips of its own, an empty table
    again = run_survey(env["shards"], env["predictor"], out, env["params"], scheduler="inline://")
    assert again["objects"]["skipped"] == 0 and len(pd.read_parquet(out / "skipped.parquet")) == 0


def test_survey_refuses_outputs_of_another_packing(env, tmp_path, inline_dask):
    """Outputs of shards that are not in the shard directory (an earlier packing with other part names)
    stop the run with a message naming them, before anything is predicted or read beside them."""
    from img2spec.survey.run import SurveyError, run_survey

    out = tmp_path / "out"
    first = run_survey(env["shards"], env["predictor"], out, env["params"], scheduler="inline://")
    assert first["shards"]["failed"] == 0
    repacked = tmp_path / "repacked"
    shutil.copytree(env["shards"], repacked)
    _, old = list_parts(repacked)[0]
    new = old.with_name("part-renamed-00000.hdf5")  # the same objects under another packing's name
    old.rename(new)
    old_rel = old.relative_to(repacked).as_posix()
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    inline_dask.keys = []
    with pytest.raises(SurveyError, match="not in") as err:
        run_survey(repacked, env["predictor"], out, env["params"], scheduler="inline://")
    assert old_rel in str(err.value) and "--out" in str(err.value)
    assert not inline_dask.keys  # nothing submitted
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == before
    # a catalogue part alone (its spectra shard gone) is refused as well
    (out / old_rel).unlink()
    with pytest.raises(SurveyError, match=r"catalogue/.*\.parquet"):
        run_survey(repacked, env["predictor"], out, env["params"], scheduler="inline://")


def test_local_cluster_is_closed_when_the_client_fails_to_start(env, tmp_path, monkeypatch):
    """A client that cannot connect leaves no LocalCluster (no worker processes) behind."""
    import distributed

    import img2spec.survey.run as run_module

    closed: list[bool] = []

    class Cluster:
        def close(self) -> None:
            closed.append(True)

    def no_client(*args, **kwargs):
        raise OSError("client failed to start")

    monkeypatch.setattr(run_module, "_local_cluster", lambda params: Cluster())
    monkeypatch.setattr(distributed, "Client", no_client)
    with pytest.raises(OSError, match="client failed to start"):
        run_module.run_survey(env["shards"], env["predictor"], tmp_path / "out", env["params"])
    assert closed == [True]


def test_real_local_cluster_leaves_no_worker_when_the_client_fails(env, tmp_path, monkeypatch):
    """The same with a real LocalCluster of one worker (no TensorFlow in it: ~1-2 s): no worker process is left."""
    import distributed

    from img2spec.survey.run import run_survey

    def no_client(*args, **kwargs):
        raise OSError("client failed to start")

    monkeypatch.setattr(distributed, "Client", no_client)
    one = params_from_dict({"survey": {"n_workers": 1, "threads_per_worker": 1, "dashboard_port": 0}})
    with pytest.raises(OSError, match="client failed to start"):
        run_survey(env["shards"], env["predictor"], tmp_path / "out", one)
    deadline = time.monotonic() + 10
    while _worker_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _worker_pids()


@pytest.mark.parametrize("profiling", [False, True])
def test_worker_profiling_decides_the_workers_periodic_callbacks(profiling):
    """A real one-worker LocalCluster as the survey starts it: by default its worker runs without
    Dask's profiler and with `WORKER_DASK_CONFIG`'s slower checks (what the task reports to
    survey.json); `survey.worker_profiling: true` leaves Dask's defaults."""
    import dask
    import distributed

    import img2spec.survey.run as run_module
    from img2spec.survey.task import WORKER_DASK_CONFIG, worker_dask_config

    params = params_from_dict({"survey": {"n_workers": 1, "threads_per_worker": 1, "worker_profiling": profiling}})

    def probe(dask_worker):
        return worker_dask_config(), sorted(dask_worker.periodic_callbacks)

    with run_module._worker_start("fork", quiet=not params.survey.worker_profiling):
        with run_module._local_cluster(params) as cluster, distributed.Client(cluster) as client:
            ((config, callbacks),) = client.run(probe).values()
            stealing = "stealing" in cluster.scheduler.extensions
    defaults = {key: dask.config.get(key) for key in WORKER_DASK_CONFIG}
    assert defaults != WORKER_DASK_CONFIG  # the survey's settings are not Dask's
    assert config == (defaults if profiling else WORKER_DASK_CONFIG)
    assert ("profile" in callbacks) is profiling and stealing is profiling
    assert worker_dask_config() == defaults  # set for the cluster's lifetime only


def test_each_shard_task_reads_ahead_the_shard_a_worker_thread_later(tmp_path):
    from img2spec.survey.run import read_ahead_paths

    paths = [str(tmp_path / f"p{k}.hdf5") for k in range(5)]
    assert read_ahead_paths(paths, 2) == paths[2:] + [None, None]
    assert read_ahead_paths(paths, 0) == [None] * 5 and read_ahead_paths(paths, 9) == [None] * 5


def test_prefetch_asks_for_the_whole_file_in_chunks_and_never_raises(tmp_path, monkeypatch):
    """`prefetch` covers the file in PREFETCH_CHUNK requests (Linux reads one readahead window per
    call); a missing file or a platform without fadvise is a False, not an error."""
    import img2spec.io.shards as shards

    part = tmp_path / "part.hdf5"
    part.write_bytes(b"x" * (2 * shards.PREFETCH_CHUNK + 5))
    assert shards.prefetch(part) is (hasattr(os, "posix_fadvise"))
    assert shards.prefetch(tmp_path / "missing.hdf5") is False
    calls = []
    monkeypatch.setattr(shards.os, "posix_fadvise", lambda fd, offset, n, advice: calls.append((offset, n, advice)),
                        raising=False)
    monkeypatch.setattr(shards.os, "POSIX_FADV_WILLNEED", 3, raising=False)
    assert shards.prefetch(part) is True
    assert calls == [(k * shards.PREFETCH_CHUNK, shards.PREFETCH_CHUNK, 3) for k in range(3)]
    monkeypatch.delattr(shards.os, "posix_fadvise")
    assert shards.prefetch(part) is False


def test_survey_workers_fork_on_linux_only(monkeypatch, tmp_path):
    """`--start-method auto` forks the LocalCluster's workers on Linux and spawns them elsewhere; an
    explicit method is kept; an unknown one is refused before anything is written."""
    import img2spec.survey.run as run

    monkeypatch.setattr(run.sys, "platform", "linux")
    assert run.resolve_start_method() == "fork" and run.resolve_start_method("spawn") == "spawn"
    monkeypatch.setattr(run.sys, "platform", "darwin")
    assert run.resolve_start_method("auto") == "spawn" and run.resolve_start_method("forkserver") == "forkserver"
    with pytest.raises(run.SurveyError, match="'thread'.*auto, fork, forkserver, spawn"):
        run.run_survey(tmp_path / "shards", None, tmp_path / "out", None, start_method="thread")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # two LocalCluster runs, one of spawned workers (each imports Dask and the survey anew)
def test_spawned_workers_write_what_forked_workers_write(env, tmp_path):
    """The start method changes how fast a worker is up, not what it writes: the same catalogue and
    output shards, value for value, and both kinds of worker set the malloc thresholds and run with
    the survey's Dask settings."""
    import h5py

    from img2spec.io.shards import iter_parts
    from img2spec.survey.run import run_survey
    from img2spec.survey.task import WORKER_DASK_CONFIG, WORKER_MALLOC_THRESHOLDS, output_paths

    bundle = BundleInfo.from_path(env["root"] / "models" / "img2spec")
    outs, reports = {}, {}
    for method in ("fork", "spawn"):
        outs[method] = tmp_path / method
        reports[method] = run_survey(env["shards"], bundle, outs[method], env["params"], start_method=method)
        assert reports[method]["cluster"]["start_method"] == method
        assert reports[method]["cluster"]["worker_malloc"] == [WORKER_MALLOC_THRESHOLDS]
        assert reports[method]["cluster"]["worker_dask_config"] == [WORKER_DASK_CONFIG]  # a nanny hands it to a spawned worker
    cats = [pd.read_parquet(outs[m] / "catalogue").sort_values("object_id", ignore_index=True) for m in outs]
    pd.testing.assert_frame_equal(*cats)
    for _, _, rel in iter_parts(env["shards"]):
        with h5py.File(output_paths(outs["fork"], rel)[0]) as a, h5py.File(output_paths(outs["spawn"], rel)[0]) as b:
            assert sorted(a) == sorted(b) and len(a) > 3
            for name in a:
                np.testing.assert_array_equal(a[name][()], b[name][()], err_msg=f"{rel}: {name}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_malloc_thresholds_are_set_in_the_process_itself():
    """mallopt accepts the survey workers' thresholds (a fresh process: the test runner's malloc is left alone)."""
    import subprocess

    from img2spec.survey.task import WORKER_MALLOC_THRESHOLDS

    code = ("import json; from img2spec.survey.task import set_malloc_thresholds; "
            f"print(json.dumps(set_malloc_thresholds(**{WORKER_MALLOC_THRESHOLDS!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "true"

