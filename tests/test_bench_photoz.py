"""bench/bench_photoz.py on a tiny trained root (the synthetic data/processed, a 2-epoch VAE):
two training fractions at 1 CNN epoch, the report's structure, and the run_all section."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import bench_photoz  # noqa: E402

TINY = {
    "vae": {"latent_dim": 3, "encoder_units": [32], "decoder_units": [32], "epochs": 2, "kl_warmup_epochs": 1,
            "patience": 2, "batch_size": 32},
    "cnn": {"filters": [4, 8], "dense_units": 16, "epochs": 3, "patience": 2, "batch_size": 32,
            "redshift_weight": 1.0, "photometry": True},  # the hybrid photo-z head (params.yaml: on; model default: off)
    "evaluate": {"knn_neighbours": 3},
}
FRACTIONS = (0.5, 1.0)


@pytest.fixture(scope="module")
def trained_root(tmp_path_factory) -> Path:
    """data/processed (the one synthetic writer), models/vae and data/latents as the pipeline writes them."""
    from img2spec.config import params_from_dict
    from img2spec.io.processed import ProcessedData
    from img2spec.models.stages import encode_stage
    from img2spec.models.train import train_vae
    from img2spec.paths import Paths
    from img2spec.prep.synthetic import write_synthetic_processed

    root = tmp_path_factory.mktemp("photoz_root")
    paths = Paths(root)
    write_synthetic_processed(paths.processed, n=100)
    (root / "params.yaml").write_text(yaml.safe_dump(TINY))
    params = params_from_dict(TINY)
    train_vae(params.vae, ProcessedData.open(paths.processed), out_dir=paths.vae_dir)
    encode_stage(params, paths)
    return root


@pytest.fixture(scope="module")
def report(trained_root):
    out = trained_root / "out" / "photoz.json"
    rep = bench_photoz.main(["--root", str(trained_root), "--fractions", *map(str, FRACTIONS), "--epochs", "1",
                             "--out", str(out)])
    return rep, out


def test_report_structure_and_finite_metrics(report, trained_root):
    rep, out = report
    assert json.loads(out.read_text())["rows"] == json.loads(json.dumps(rep["rows"]))  # the file is the result
    assert rep["complete"] and rep["overrides"] == {"cnn.epochs": 1, "cnn.patience": 1}
    assert rep["cnn_params"]["epochs"] == 1 and "Pasquet" in rep["anchor"]
    rows = rep["rows"]
    assert [r["fraction"] for r in rows] == list(FRACTIONS)
    n = [r["n_train"] for r in rows]
    assert n[0] < n[1] == rep["n_train_full"] == 60  # 0.6 of 100 in train; fraction 1 is all of it
    for r in rows:
        assert {"n_train", "cnn", "knn_colour", "cnn_mean_d", "cnn_sem_d", "train_seconds"} <= set(r)
        assert r["epochs_run"] == 1
        for method in ("cnn", "cnn_images_only", "knn_colour"):
            m = r[method]
            assert m["n"] == rep["n_test"] == 20
            for key in ("sigma_nmad", "bias", "outlier_fraction", "sigma_nmad_err"):
                assert np.isfinite(m[key]), (method, key)
        assert np.isfinite(r["cnn_mean_d"]) and r["cnn_sem_d"] > 0
    fit = rep["fit"]["cnn"]
    assert fit["n_points"] == 2 and np.isfinite(fit["slope"])
    # A 1-epoch CNN may not improve with n: then there is no projection, and its note says why.
    assert ("extrapolation" in fit["note"]) == (fit["n_train_at_target"] is not None)
    md = "\n".join(bench_photoz.markdown_rows(rep))
    assert md.count("\n| 30 |") == 1 and md.count("\n| 60 |") == 1 and "Pasquet" in md
    assert rep["pipeline_reference"] is None  # no metrics/evaluate.json in this root
    ref = {"cnn_photoz": {"sigma_nmad": 0.0291}, "cnn_mean_deviation": {"mean": 2.599}}
    assert "CNN sigma_NMAD 0.0291, mean D 2.599" in "\n".join(bench_photoz.markdown_rows({**rep, "pipeline_reference": ref}))


@pytest.mark.slow  # one more CNN training (~10 s on a busy machine)
def test_fraction_one_is_the_pipelines_training(report, trained_root):
    """The full-fraction row is train_cnn on ProcessedData itself: same subset, same scores."""
    import keras

    from img2spec.config import params_from_dict
    from img2spec.evaluate.redshift import catalogue_photometry
    from img2spec.io.processed import ProcessedData
    from img2spec.metrics import summarise
    from img2spec.models.latents import load_latents
    from img2spec.models.train import train_cnn
    from img2spec.paths import Paths

    rep, _ = report
    paths = Paths(trained_root)
    data = ProcessedData.open(paths.processed)
    sub = bench_photoz.nested_subsets(data.indices("train"), FRACTIONS, bench_photoz.SUBSAMPLE_SEED)
    assert np.array_equal(sub[-1], data.indices("train")) and np.isin(sub[0], sub[1]).all()
    view = bench_photoz.TrainSubset(paths.processed, train_rows=sub[0])
    assert np.array_equal(view.indices("train"), sub[0]) and np.array_equal(view.indices("test"), data.indices("test"))
    params = params_from_dict({**TINY, "cnn": {**TINY["cnn"], "epochs": 1, "patience": 1}})
    decoder = keras.saving.load_model(paths.vae_dir / "decoder.keras", compile=False)
    res = train_cnn(params.cnn, data, load_latents(paths.latents), decoder)
    test = data.indices("test")  # the hybrid CNN is scored with its catalogue photometry, as the bench scores it
    _, d = bench_photoz.evaluate_test(res.model, decoder, data, test, catalogue_photometry(data, test))
    assert summarise(d)["mean"] == pytest.approx(rep["rows"][-1]["cnn_mean_d"], rel=1e-4)


def test_power_law_fit_and_projection():
    n = np.array([1000, 2000, 4000, 8000])
    fit = bench_photoz.power_law_fit(n, 0.05 * (n / 1000.0) ** -0.5)
    assert fit["slope"] == pytest.approx(-0.5) and fit["slope_err"] == pytest.approx(0, abs=1e-9)
    assert fit["n_train_at_target"] == pytest.approx(25_000, rel=1e-6)  # 0.05 (n/1000)^-0.5 = 0.01
    flat = bench_photoz.power_law_fit(n, [0.03, 0.03, 0.031, 0.032])
    assert flat["slope"] > 0 and flat["n_train_at_target"] is None
    assert bench_photoz.power_law_fit([1000], [0.02])["slope"] is None


def test_bad_fraction_is_refused():
    with pytest.raises(ValueError, match="not in"):
        bench_photoz.nested_subsets(np.arange(10), [1.5], 0)
    with pytest.raises(ValueError, match="< 2"):
        bench_photoz.nested_subsets(np.arange(10), [0.05], 0)


def test_run_all_renders_the_section(report, tmp_path):
    import run_all

    rep, out = report
    bench = {"generated": "2026-11-29T23:00:00+00:00", "command": "python bench/run_all.py --render-only x",
             "machine": {"cpu_model": "cpu", "cores_available": 2, "memory_gib": 8, "gpu": "none",
                         "load_average_1_5_15": [0.1, 0.1, 0.1], "python": "3.x",
                         "packages": {k: "1" for k in ("tensorflow", "keras", "numpy", "astropy")}}}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(bench))
    run_all.main(["--render-only", str(path), "--photoz-json", str(out), "--markdown", str(tmp_path / "bench.md"),
                  "--readme", ""])
    merged = json.loads(path.read_text())
    assert merged["photoz_scaling"]["rows"][-1]["n_train"] == rep["rows"][-1]["n_train"]
    md = (tmp_path / "bench.md").read_text()
    assert "Photo-z and spectrum D vs CNN training size" in md and "| 60 |" in md
    assert "Photo-z scaling: not measured (--skip-photoz)" in run_all.markdown({**bench, "photoz_scaling": {
        "skipped": "--skip-photoz"}})
