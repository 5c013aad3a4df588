"""Smoke tests of the benchmark harness (bench/common.py, scaling.py, science.py, run_all.py).

They check the measuring machinery and the report plumbing on tiny inputs; they never
assert a speed (timings belong to `make bench`, not to tests).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import common  # noqa: E402
import run_all  # noqa: E402
import scaling  # noqa: E402
import science  # noqa: E402

MIB = 1024**2
ALLOC = "import time, numpy as np; a = np.ones({mb} * 2**20, np.uint8); time.sleep({s})"


def test_measure_command_sees_memory_time_and_children():
    # parent and a child each hold 80 MiB at the same time: the tree sum sees both,
    # the kernel's single-process peak sees one. Measured from a small launcher process:
    # Linux carries the launcher's RSS high-water mark across fork+exec into ru_maxrss,
    # and this pytest process (TensorFlow loaded) is far bigger than 80 MiB.
    child = ALLOC.format(mb=80, s=1.0)
    code = (f"import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', {child!r}]); "
            f"{ALLOC.format(mb=80, s=1.0)}; p.wait()")
    launcher = ("import json, sys; sys.path.insert(0, sys.argv[1]); import common; "
                "m = common.measure_command([sys.executable, '-c', sys.argv[2]], interval=0.05); "
                "print(json.dumps(m.to_dict()))")
    out = subprocess.run([sys.executable, "-c", launcher, str(REPO / "bench"), code],
                         capture_output=True, text=True, check=True).stdout
    m = common.Measurement(**{k: v for k, v in json.loads(out.strip().splitlines()[-1]).items()
                              if k in common.Measurement.__dataclass_fields__})
    assert m.ok and m.returncode == 0
    assert m.seconds >= 1.0
    assert m.max_process_rss_bytes >= 80 * MIB
    assert m.peak_pss_bytes >= 150 * MIB > m.max_process_rss_bytes - 10 * MIB
    assert m.peak_gib == pytest.approx(max(m.peak_pss_bytes, m.max_process_rss_bytes) / common.GIB)


def test_measure_command_failure_and_timeout(tmp_path):
    log = tmp_path / "fail.log"
    m = common.measure_command([sys.executable, "-c", "import sys; print('boom-marker'); sys.exit(3)"], log_path=log)
    assert not m.ok and m.returncode == 3 and "boom-marker" in m.log_tail
    m = common.measure_command([sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=0.5)
    assert m.timed_out and not m.ok and m.seconds < 10


def test_summaries_and_growth():
    assert common.median([3.0, 1.0, float("nan"), 2.0]) == 2.0
    assert common.growth_exponent(1000, 2.0, 4000, 32.0) == pytest.approx(2.0)
    assert common.growth_exponent(1000, 0.0, 4000, 1.0) is None
    runs = [common.Measurement(["x"], 0, s, s, 10 * MIB, 20 * MIB, 5 * MIB) for s in (3.0, 1.0, 2.0)]
    summary = common.summarise_runs(runs)
    assert summary["seconds"] == 2.0 and summary["repeats"] == 3 and summary["ok"]
    calls = []
    timed = common.repeat_call(lambda: calls.append(1), repeats=3, warmup=1)
    assert len(calls) == 4 and timed["repeats"] == 3


def test_machine_facts():
    facts = common.machine_facts(REPO)
    assert facts["logical_cores"] >= 1 and facts["memory_gib"] > 0
    assert facts["python"].count(".") == 2
    for pkg in ("tensorflow", "numpy", "keras", "astropy"):
        assert facts["packages"][pkg][0].isdigit()
    assert len(facts["git"]["commit"]) in (40, len("unknown"))


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)


def test_workspace_copies_tracked_files_only(tmp_path):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "a.py").write_text("x = 1\n")
    (src / "dvc.yaml").write_text("stages:\n  first: {cmd: a}\n  second: {cmd: b}\n")
    _git(src, "init", "-q")
    _git(src, "add", "pkg/a.py", "dvc.yaml")
    _git(src, "commit", "-qm", "init")
    (src / "untracked.txt").write_text("no\n")
    (src / "pkg" / "a.py").write_text("x = 2\n")  # working-tree content is what gets measured
    ws = scaling.make_workspace(tmp_path / "ws", src)
    assert (ws / "pkg" / "a.py").read_text() == "x = 2\n"
    assert not (ws / "untracked.txt").exists()
    assert (ws / ".git").is_dir()
    subject = subprocess.run(["git", "log", "-1", "--format=%s"], cwd=ws, capture_output=True, text=True).stdout
    assert subject.startswith(f"bench snapshot of {src} at ") and "(1 tracked files modified)" in subject
    assert scaling.dvc_stages(ws) == ["first", "second"]
    (ws / "metrics").mkdir()
    (ws / "metrics" / "train_cnn.json").write_text('{"cnn": {"epochs_run": 4}, "pca_cnn": {}}')
    (ws / "reports" / "plots").mkdir(parents=True)
    (ws / "reports" / "train_cnn.json").write_text('{"cnn": {"train_seconds": 2.0}, "pca_cnn": {}}')
    (ws / "reports" / "plots" / "vae_history.csv").write_text("epoch,loss\n0,1\n1,0.5\n2,0.4\n")
    assert scaling.training_facts(ws) == {"cnn": {"epochs_run": 4, "train_seconds": 2.0}, "pca_cnn": {},
                                          "vae": {"epochs_run": 3}}


def test_params_override(tmp_path):
    from img2spec.config import ConfigError, load_params

    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    scaling.write_params(params, dict([scaling.parse_override("mock.n_galaxies=123"), ("vae.epochs", 2)]))
    loaded = load_params(params)
    assert loaded.mock.n_galaxies == 123 and loaded.vae.epochs == 2
    before = params.read_text()
    with pytest.raises(ConfigError, match="n_galaxie"):
        scaling.write_params(params, {"mock.n_galaxie": 5})
    assert params.read_text() == before
    with pytest.raises(ValueError, match="key=value"):
        scaling.parse_override("mock.seed")


def _run(n: int, secs: dict[str, float], peak: float = 0.5, **extra) -> dict:
    stages = [{"stage": s, "ok": True, "seconds": t, "cpu_seconds": t / 2, "peak_gib": peak} for s, t in secs.items()]
    return {"n_galaxies": n, "stages": stages, "splits": {"train": int(0.8 * n), "val": int(0.1 * n)},
            "training": {"vae": {"epochs_run": 10, "train_seconds": 8.0}, "cnn": {"epochs_run": 5}},
            "total_seconds": sum(secs.values()), "completed": True, **extra}


def test_scaling_table_and_throughput():
    names = (*scaling.MOCK_STAGES, *scaling.PREP_STAGES, "train_vae", "train_cnn")
    small = _run(1000, {s: 10.0 for s in names})
    # mock stages linear, prepare quadratic, the rest constant
    big = _run(4000, {s: 40.0 if s in scaling.MOCK_STAGES else 160.0 if s == "prepare" else 10.0 for s in names})
    table = {row["stage"]: row for row in scaling.scaling_table([big, small])}
    assert table["select"]["time_exponent"] == pytest.approx(1.0) and table["select"]["linear"]
    assert table["prepare"]["time_exponent"] == pytest.approx(2.0) and not table["prepare"]["linear"]
    assert table["prepare"]["cpu_exponent"] == pytest.approx(2.0)
    assert table["train_vae"]["time_exponent"] == pytest.approx(0.0)
    thr = scaling.throughput(small)
    assert thr["mock_generation"]["objects_per_s"] == pytest.approx(1000 / 40.0)
    assert thr["preparation"]["objects_per_s"] == pytest.approx(1000 / 20.0)
    assert thr["vae_training"]["objects_per_s"] == pytest.approx(800 * 10 / 8.0)  # fit seconds
    assert thr["cnn_training"]["objects_per_s"] == pytest.approx(800 * 5 / 10.0)  # stage seconds fallback
    failed = _run(1000, {"select": 1.0})
    failed["stages"].append({"stage": "fetch_spectra", "ok": False})
    assert "mock_generation" not in scaling.throughput(failed)
    head = run_all.headline_throughput({"throughput_by_size": {"1000": scaling.throughput(small),
                                                               "4000": scaling.throughput(big)}})
    assert head["mock_generation"]["at_n_galaxies"] == 4000


def test_report_markdown_and_readme(tmp_path):
    names = (*scaling.MOCK_STAGES, *scaling.PREP_STAGES, "train_vae", "train_cnn")
    runs = [_run(n, {s: n / 100 for s in names}, workspace=str(tmp_path)) for n in (100, 200)]
    scal = {"sizes_run": [100, 200], "runs": runs, "table": scaling.scaling_table(runs),
            "skipped": [{"n_galaxies": 400, "reason": "over budget"}],
            "throughput_by_size": {str(r["n_galaxies"]): scaling.throughput(r) for r in runs}}
    report = {"generated": "2026-11-24T00:00:00+00:00", "command": "python bench/run_all.py --quick", "quick": True,
              "machine": common.machine_facts(REPO), "scaling": scal, "throughput": run_all.headline_throughput(scal),
              "inference": {"batch_size": 256, "galaxies_per_s": 900.0, "by_batch_size": {
                  "1": {"galaxies_per_s": 30.0, "peak_gib": 1.0, "n_samples": 32},
                  "256": {"galaxies_per_s": 900.0, "peak_gib": 1.2, "n_samples": 32}}},
              "science": {"skipped": "no trained bundle"}, "load_average_end": [1.0, 1.0, 1.0]}
    md = run_all.markdown(report)
    assert "| batch 256 (default) | 900.0 |" in md and "sampled sigma, 32 latent draws" in md
    assert "N = 400 not run: over budget" in md and "Quick mode" in md
    assert md.count("| prepare |") == 1
    # Both sizes trained (VAE 10 epochs in 8 fit seconds, CNN 5 epochs in the stage's n/100 s):
    # the report says the epoch counts and the per-epoch throughput.
    assert "Training stops early" in md
    assert "VAE 10 epochs at 100/s (N = 100), 10 epochs at 200/s (N = 200)" in md
    assert "CNN 5 epochs at 400/s (N = 100), 5 epochs at 400/s (N = 200)" in md
    assert "CNN 30 epochs at 1000/s (N = 100)" in run_all._epoch_line(
        {"100": {"cnn_training": {"epochs": 30, "objects_per_s": 1000.0}}})
    # linearised default with the sampled reference row and the science calibration line
    inf = report["inference"]
    for r in inf["by_batch_size"].values():
        r["sigma_method"] = "linearised"
    inf["sampled_reference"] = {"galaxies_per_s": 450.0, "peak_gib": 1.3, "sigma_method": "sampled", "n_samples": 32}
    report["science"] = _science_result()
    md2 = run_all.markdown(report)
    assert "(cutout arrays -> spectra, linearised sigma)" in md2
    assert "| batch 256, sampled sigma, 32 latent draws (reference) | 450.0 | 1.30 |" in md2
    assert "linearised / sampled sigma per pixel, both before calibration: median 0.83" in md2
    assert "(linearised sigma x 0.500, the bundle's calibration factor)" in md2
    assert "sampled sigma (32 draws, uncalibrated)" in md2

    readme = tmp_path / "README.md"
    readme.write_text(f"# T\n\nbefore\n{run_all.MARK_START}\nold figures\n{run_all.MARK_END}\nafter\n")
    assert run_all.update_readme(readme, md)
    text = readme.read_text()
    assert "old figures" not in text and md in text and text.startswith("# T\n\nbefore\n") and text.endswith("after\n")
    assert run_all.update_readme(readme, md) and readme.read_text() == text  # idempotent
    plain = tmp_path / "PLAIN.md"
    plain.write_text("no markers\n")
    assert not run_all.update_readme(plain, md) and plain.read_text() == "no markers\n"


def _science_result() -> dict:
    """science.score on synthetic spectra: a CNN prediction with known sigmas (linearised 0.5, sampled 0.6)."""
    import numpy as np
    from types import SimpleNamespace

    rng = np.random.default_rng(0)
    obs = rng.normal(size=(20, 30))
    methods = {n: obs + rng.normal(size=obs.shape) for n in ("cnn", "mean_spectrum", "knn_colour")}
    keep = np.ones(20, bool)
    out = science.score(methods, SimpleNamespace(flux=obs, ivar=np.ones_like(obs)), keep,
                        np.full(obs.shape, 0.5), np.full(obs.shape, 0.6))
    # the ratio compares the methods before the calibration factor on the first
    scaled = science.score(methods, SimpleNamespace(flux=obs, ivar=np.ones_like(obs)), keep,
                           np.full(obs.shape, 0.25), np.full(obs.shape, 0.6), sigma_scale=0.5)
    assert scaled["sigma_ratio_to_sampled"] == out["sigma_ratio_to_sampled"]
    # |N(0,1)| <= k sqrt(sigma^2 + 1): the wider sampled sigma holds more pixels
    assert out["cnn_calibration"]["within_1sigma"] < out["cnn_calibration_sampled"]["within_1sigma"]
    assert out["sigma_ratio_to_sampled"]["p50"] == pytest.approx(0.5 / 0.6, abs=1e-4)
    return {"n_scored": 20, "fresh_seed": 1001, "training_seed": 1, "training_n_galaxies": 100,
            "cnn_sigma_method": "linearised", "cnn_sigma_scale": 0.5, "sampled_n_samples": 32, **out}


def test_science_refuses_training_seed_and_finds_scripts(tmp_path):
    params = tmp_path / "trained.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    seed = yaml.safe_load(params.read_text())["mock"]["seed"]
    with pytest.raises(ValueError, match="equals the training"):
        science.fresh_params(params, tmp_path / "fresh" / "params.yaml", 10, seed)
    raw = science.fresh_params(params, tmp_path / "fresh" / "params.yaml", 10, seed + 1)
    assert raw["mock"]["seed"] == seed + 1 and raw["mock"]["n_galaxies"] == 10
    assert science.stage_script(REPO, "select").name == "select_candidates.py"
    for stage in science.SOURCE_AND_PREP_STAGES:
        assert science.stage_script(REPO, stage).is_file()


def test_science_agreement_against_committed_figures():
    """Fresh figures equal to the committed ones agree; a committed D 10 standard errors away does not;
    a figure the committed metrics lack is left out."""
    import numpy as np

    from img2spec.evaluate.measurements import class_scores, robust_difference
    from img2spec.measure import AGN_LABELS, BPT_LABELS, SF_LABELS

    rng = np.random.default_rng(0)
    n = 300
    truth = {"halpha_ew": rng.normal(10, 8, n), "dn4000": rng.normal(1.5, 0.2, n), "hdelta_a": rng.normal(1, 2, n),
             "sf_class": rng.integers(0, 2, n), "bpt_class": rng.integers(-1, 3, n), "agn_class": rng.integers(0, 2, n)}
    cnn = {k: v + rng.normal(0, 0.1 * np.std(v), n) if k.islower() and not k.endswith("class") else v.copy()
           for k, v in truth.items()}
    cnn["sf_class"] = np.where(rng.random(n) < 0.2, 1 - truth["sf_class"], truth["sf_class"])
    tables = {"truth": truth, "cnn": cnn}
    d = {"cnn": rng.gamma(4.0, 0.5, n)}
    committed = {"mean_deviation": {"cnn": {"mean": float(d["cnn"].mean()), "sem": float(d["cnn"].std() / np.sqrt(n)),
                                            "n": n}},
                 "measurements": {q: {"cnn": robust_difference(cnn[q], truth[q])} for q in ("halpha_ew", "dn4000")},
                 "classes": {s: {"cnn": class_scores(truth[c], cnn[c], lab)} for s, c, lab in
                             (("sf_quiescent", "sf_class", SF_LABELS), ("bpt", "bpt_class", BPT_LABELS),
                              ("agn", "agn_class", AGN_LABELS))}}
    got = science.agreement(tables, d, committed)
    assert "measurements.hdelta_a.cnn.nmad" not in got  # not in the committed metrics
    assert got["measurements.halpha_ew.cnn.nmad"]["sigmas"] == 0.0 and got["measurements.dn4000.cnn.bias"]["agrees"]
    assert got["classes.sf_quiescent.cnn.balanced_accuracy"]["fresh_se"] > 0
    assert all(row["agrees"] for row in got.values()), {k: r for k, r in got.items() if not r["agrees"]}
    committed["mean_deviation"]["cnn"]["mean"] += 10 * committed["mean_deviation"]["cnn"]["sem"]
    moved = science.agreement(tables, d, committed)["mean_deviation.cnn"]
    assert not moved["agrees"] and moved["sigmas"] > 5


def test_report_paths_are_portable(tmp_path):
    """Absolute paths in a bench report: relative inside the repository, a placeholder outside."""
    report = {"survey": {"bundle": str(REPO / "models" / "img2spec"), "n": 3},
              "carried_over": {"from": str(tmp_path / "old.json")}, "runs": [str(REPO)], "note": "a / b"}
    out = run_all.portable_paths(report)
    assert out == {"survey": {"bundle": "models/img2spec", "n": 3}, "carried_over": {"from": "FROM"},
                   "runs": ["."], "note": "a / b"}


def test_pick_trained_root(tmp_path):
    def ws(name: str, bundle: bool) -> Path:
        root = tmp_path / name
        (root / "models" / "img2spec").mkdir(parents=True)
        if bundle:
            (root / "models" / "img2spec" / "bundle.json").write_text("{}")
        return root

    small, big, broken = ws("small", True), ws("big", True), ws("broken", False)
    runs = [{"n_galaxies": 100, "workspace": str(small), "completed": True},
            {"n_galaxies": 400, "workspace": str(big), "completed": True},
            {"n_galaxies": 800, "workspace": str(broken), "completed": False}]
    assert run_all.pick_trained_root({"runs": runs}, None) == big
    assert run_all.pick_trained_root(None, small) == small
    assert run_all.pick_trained_root(None, broken) is None


def test_render_only_rewrites_markdown_and_readme(tmp_path):
    report = {"generated": "2026-11-24T00:00:00+00:00", "command": "python bench/run_all.py", "quick": False,
              "machine": common.machine_facts(REPO), "science": {"skipped": "no trained bundle"},
              "inference": {"skipped": "no trained bundle"}, "load_average_end": [1.0, 1.0, 1.0]}
    src = tmp_path / "bench.json"
    src.write_text(__import__("json").dumps(report))
    readme = tmp_path / "README.md"
    readme.write_text(f"x\n{run_all.MARK_START}\nold\n{run_all.MARK_END}\n")
    md = tmp_path / "bench.md"
    run_all.main(["--render-only", str(src), "--markdown", str(md), "--readme", str(readme)])
    assert "Science: not measured (no trained bundle)" in md.read_text()
    assert md.read_text() in readme.read_text() and "old" not in readme.read_text()


def test_carried_scaling_is_labelled_with_its_own_run(tmp_path):
    """A partial re-run (--skip-scaling --carry-scaling OLD) keeps the old tables but says whose they are."""
    names = (*scaling.MOCK_STAGES, *scaling.PREP_STAGES, "train_vae", "train_cnn")
    runs = [_run(n, {s: n / 100 for s in names}, workspace=str(tmp_path)) for n in (100, 200)]
    scal = {"sizes_run": [100, 200], "runs": runs, "table": scaling.scaling_table(runs), "code_from": "/tmp/old_code",
            "throughput_by_size": {str(r["n_galaxies"]): scaling.throughput(r) for r in runs}}
    machine = common.machine_facts(REPO)
    old = {"generated": "2026-11-24T00:00:00+00:00", "command": "python bench/run_all.py --old", "machine": machine,
           "scaling": scal, "throughput": run_all.headline_throughput(scal)}
    new = {"generated": "2026-11-30T00:00:00+00:00", "command": "python bench/run_all.py --skip-scaling",
           "quick": False, "machine": machine, "load_average_end": [1.0, 1.0, 1.0]}
    run_all.carry_scaling(new, old, Path("old/bench.json"))
    md = run_all.markdown(new)
    assert new["scaling"] == scal and new["carried_over"]["sections"] == ["scaling", "throughput"]
    assert "carried over from the run of 2026-11-24 (`python bench/run_all.py --old`" in md
    assert "| prepare |" in md and "/tmp/old_code" not in md  # the old snapshot is not this run's code


def test_tree_sampler_keeps_pss_to_its_duty(monkeypatch):
    """PSS samples (the kernel walks every mapping: ~23 ms per TensorFlow process) are spaced so
    they take at most PSS_DUTY of a core; the cheap RSS sample runs every interval."""
    calls = {"pss": 0, "rss": 0}

    def slow_pss(self):
        calls["pss"] += 1
        time.sleep(0.02)
        return 1, 1

    def rss(self):
        calls["rss"] += 1
        return 1

    monkeypatch.setattr(common.TreeSampler, "sample", slow_pss)
    monkeypatch.setattr(common.TreeSampler, "sample_rss", rss)
    monkeypatch.setattr(common, "PSS_DUTY", 0.05)  # a 20 ms sample -> one per 0.4 s
    with common.TreeSampler(os.getpid(), interval=0.01) as sampler:
        time.sleep(1.0)
    assert 2 <= calls["pss"] <= 4 and sampler.pss_samples == calls["pss"]
    assert calls["rss"] >= 20


def test_recorded_commands_carry_no_local_paths():
    """Generated Markdown shows commands anyone can run: repository paths relative, others placeholders."""
    cmd = (f"python bench/run_all.py --trained-root {REPO} --workdir /tmp/b4/work --out=/var/x/bench.json "
           f"--bundle {REPO / 'models' / 'img2spec'} --readme ")
    assert run_all.portable_command(cmd) == ("python bench/run_all.py --trained-root . --workdir WORKDIR "
                                             "--out=OUT --bundle models/img2spec --readme ''")
    md = run_all._portable_commands("by `python bench/bench_survey.py --cutouts /home/u/c` on x; `/tmp/y` stays")
    assert md == "by `python bench/bench_survey.py --cutouts CUTOUTS` on x; `/tmp/y` stays"


def test_decode_bench_times_both_modes_of_a_rest_frame_decoder(tmp_path):
    import numpy as np

    import bench_decode
    from img2spec.models.vae import build_rest_decoder

    wave = np.exp(np.log(3800.0) + 2.3e-4 * np.arange(400))
    decoder = build_rest_decoder(wave, 3, [8], 0.05, 0.3)
    mu = np.random.default_rng(0).normal(size=(300, 3)).astype(np.float32)
    got = bench_decode.rates(decoder, mu, repeats=1)
    assert set(got) == {"flux_per_s", "flux_sigma_per_s"} and all(v > 0 for v in got.values())
    from img2spec.predict.bundle import BundleError

    with pytest.raises(BundleError, match="no exported graphs"):
        bench_decode.load_decoder(tmp_path, "onnx")


def test_variants_are_parsed_and_validated_by_the_schema():
    import pydantic
    from bench_representation import variant_section

    from img2spec.config import Params

    params = Params()
    name, cnn = variant_section(params.cnn, "asinh3:measure_weight=3,measure_quantities=dn4000+hdelta_a,train_pca=false")
    assert name == "asinh3" and cnn.measure_weight == 3.0 and cnn.measure_quantities == ("dn4000", "hdelta_a")
    assert cnn.train_pca is False and cnn.filters == params.cnn.filters
    with pytest.raises(pydantic.ValidationError):
        variant_section(params.vae, "typo:latent_dims=4")
    _, one = variant_section(params.cnn, "sf:measure_quantities=dn4000")
    assert one.measure_quantities == ("dn4000",)


def test_a_sub_benchmarks_recorded_command_is_made_portable(tmp_path):
    out = tmp_path / "photoz_scaling.json"
    out.write_text(json.dumps({"command": f"python bench/bench_photoz.py --root . --out {out}", "n": 3}))
    res = run_all._sub_report(out)
    assert res == {"command": "python bench/bench_photoz.py --root . --out OUT", "n": 3}
