"""`make bench`: speed, memory, scaling and science quality in one run.

1. Scaling (`bench/scaling.py`): the whole DVC pipeline, stage by stage, at each `--sizes`
   mock survey size in throwaway copies of the repository. Mock generation, preparation,
   VAE and CNN training throughput (objects/s) and peak memory come from these
   whole-process runs (the largest size that completed is the headline).
2. Inference (`bench/bench_predict.py`'s `load_predictor` + `bench`): galaxies/s from raw
   cutout arrays to spectra with the bundle trained in step 1, at batch 1, 256 and the
   default `publish.batch_size`, each in its own process (peak memory), median of repeats.
3. Science (`bench/science.py`): CNN vs every baseline on a fresh mock survey whose seed
   training never saw, prepared with the trained image scaling.
3b. Survey (`bench/bench_survey.py`, its own process): pack, `img2spec survey` on Dask at 1 and
   2 workers, and file-based predict on the same `--survey-n` cutouts made from the trained
   run's raw mock cutouts; `survey.galaxies_per_s` is the default setting.
3c. Photo-z scaling (`bench/bench_photoz.py`, its own process): the CNN retrained by the
   pipeline's train_cnn on nested fractions of the trained run's train split, photo-z and
   spectrum D on its test split (section `photoz_scaling`; `--photoz-json` takes an existing
   bench_photoz.py output instead of measuring, also with `--render-only`).
4. Writes `reports/bench.json`, `reports/bench.md` and the section of `docs/benchmarks.md`
   between `<!-- bench:start -->` and `<!-- bench:end -->`.

    python bench/run_all.py                       # sizes 1000 4000 16000 (hours on 2 busy cores)
    python bench/run_all.py --sizes 1000 4000 --budget-minutes 90
    python bench/run_all.py --quick               # a few minutes: tiny sizes, 2-3 epochs
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scaling  # noqa: E402
from common import bench_env, machine_facts, measure_command, median  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SIZES = (1000, 4000, 16000)
INFERENCE_BATCHES = (1, 256)
"""Always measured (the published figures); the default publish.batch_size is added if different."""
INFERENCE_REPEATS = 3
SCIENCE_N = 1000
SURVEY_N = 16000
"""Cutouts of the survey section (16,000 or more, the size of the published survey figures)."""
QUICK_SURVEY_N = 200
QUICK_PHOTOZ_FRACTIONS = (0.5, 1.0)
"""--quick: two training fractions (the CNN epochs are the quick overrides in the trained run's params)."""
QUICK = {"sizes": (60, 120), "science_n": 40, "inference_repeats": 2,
         "overrides": {"vae.epochs": 3, "vae.kl_warmup_epochs": 1, "cnn.epochs": 2}}
"""--quick: a harness check in minutes. Its figures are not comparable with a full run."""
OVERHEAD_SHARE = 0.5
"""A stage whose own reported seconds are below this share of its wall time is listed as overhead-bound."""
CARRIED_SECTIONS = ("scaling", "throughput")
"""What --carry-scaling keeps from an earlier bench.json."""
MARK_START, MARK_END = "<!-- bench:start -->", "<!-- bench:end -->"  # = img2spec.docs.markers("bench")
PROJECTION_SAFETY = 1.2
"""A size is skipped when (previous size's time x size ratio x this) exceeds the remaining budget."""


# ------------------------------------------------------------------ inference
def inference_worker(root: Path, batch_size: int, repeats: int, out: Path, sigma_method: str | None = None) -> None:
    """(Runs in its own process.) Median galaxies/s of bench_predict.bench at one batch size.

    `sigma_method` None: the bundle's (what users get)."""
    import bench_predict

    from img2spec.config import load_params

    params_file = root / "params.yaml"
    params = load_params(params_file if params_file.exists() else REPO / "params.yaml")
    predictor, label = bench_predict.load_predictor(params, root)
    method = sigma_method or predictor.sigma_method
    rows = [bench_predict.bench(predictor, [batch_size], params.publish.n_samples, sigma_method=method)[0]
            for _ in range(repeats)]
    out.write_text(json.dumps({"model": label, "batch_size": batch_size, "sigma_method": method,
                               "n_samples": params.publish.n_samples,
                               "n_objects": rows[0]["n_objects"],
                               "galaxies_per_s": round(median(r["galaxies_per_s"] for r in rows), 1),
                               "galaxies_per_s_runs": [r["galaxies_per_s"] for r in rows]}))


def _epoch_line(by_size: dict[str, dict[str, Any]]) -> str:
    """Training stops early, so epochs differ by size: say so with the per-epoch throughput."""
    parts = []
    for key, name in (("vae_training", "VAE"), ("cnn_training", "CNN")):
        rows = [(n, t[key]) for n, t in by_size.items() if key in t and t[key].get("epochs")]
        if rows:
            parts.append(f"{name} " + ", ".join(f"{r['epochs']} epochs at {r['objects_per_s']:.0f}/s (N = {n})"
                                               for n, r in rows))
    if not parts:
        return ""
    return ("\nTraining stops early on the validation loss, so the epoch count differs by size; per epoch the "
            "throughput (train objects x epochs per fit second) is what to compare: " + "; ".join(parts) + ".")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _sigma_label(r: dict[str, Any]) -> str:
    """How an inference row computed its uncertainty (old reports: sampled, n_samples draws)."""
    if r.get("sigma_method", "sampled") == "linearised":
        return "linearised sigma"
    return f"sampled sigma, {r.get('n_samples', '?')} latent draws"


def _code_path(root: Path) -> str:
    """PYTHONPATH for a worker: the trained workspace's own code snapshot first, then bench/."""
    src = root / "src"
    return f"{src}:{REPO / 'bench'}" if (src / "img2spec").is_dir() else str(REPO / "bench")


def run_inference(root: Path, batch_sizes: Sequence[int], repeats: int, workdir: Path,
                  default_batch: int) -> dict[str, Any]:
    """One measured process per batch size; `galaxies_per_s` at the default batch size."""
    def measure(bs: int, sigma: str | None) -> dict[str, Any]:
        tag = f"bs{bs}" + (f"_{sigma}" if sigma else "")
        out = workdir / f"inference_{tag}.json"
        cmd = [sys.executable, __file__, "--inference-worker", str(root), "--batch", str(bs),
               "--repeats", str(repeats), "--worker-out", str(out)] + (["--sigma", sigma] if sigma else [])
        m = measure_command(cmd, cwd=REPO, env=bench_env({"PYTHONPATH": _code_path(root)}),
                            log_path=workdir / f"inference_{tag}.log")
        if not m.ok:
            return {"error": f"exit {m.returncode}: {m.log_tail[-600:]}"}
        res = _sub_report(out)
        res["peak_gib"] = round(m.peak_gib, 3)
        res["process_seconds"] = round(m.seconds, 1)
        print(f"inference: batch {bs}, sigma {res['sigma_method']}: {res['galaxies_per_s']} galaxies/s, "
              f"peak {res['peak_gib']:.2f} GiB", flush=True)
        return res

    by_bs = {str(bs): measure(bs, None) for bs in batch_sizes}
    result: dict[str, Any] = {"batch_size": default_batch, "by_batch_size": by_bs,
                              "galaxies_per_s": by_bs.get(str(default_batch), {}).get("galaxies_per_s")}
    one = by_bs.get("1", {}).get("galaxies_per_s")
    if one and result["galaxies_per_s"]:
        result["speedup_vs_batch_1"] = round(result["galaxies_per_s"] / one, 1)
    # Baseline in the same run: the sampled sigma at the default batch size.
    if by_bs.get(str(default_batch), {}).get("sigma_method") == "linearised":
        ref = measure(default_batch, "sampled")
        result["sampled_reference"] = ref
        if ref.get("galaxies_per_s") and result["galaxies_per_s"]:
            result["speedup_vs_sampled"] = round(result["galaxies_per_s"] / ref["galaxies_per_s"], 2)
    return result


def _sub_report(path: Path) -> dict[str, Any]:
    """A sub-benchmark's JSON output, its recorded command made portable (it ran on this machine's paths)."""
    res = json.loads(path.read_text())
    if isinstance(res.get("command"), str):
        res["command"] = portable_command(res["command"])
    return res


# ------------------------------------------------------------------ science
def run_science(trained_root: Path, n: int, workdir: Path, seed: int | None) -> dict[str, Any]:
    out = workdir / "science.json"
    cmd = [sys.executable, str(REPO / "bench" / "science.py"), "--trained-root", str(trained_root),
           "--n", str(n), "--workdir", str(workdir / "science"), "--out", str(out)]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    m = measure_command(cmd, cwd=REPO, env=bench_env(), log_path=workdir / "science.log")
    if not m.ok:
        return {"error": f"exit {m.returncode}: {m.log_tail[-1200:]}"}
    res = _sub_report(out)
    res["seconds"] = round(m.seconds, 1)
    res["peak_gib"] = round(m.peak_gib, 3)
    return res


# ------------------------------------------------------------------ orchestration
def run_survey_bench(trained_root: Path, n: int, workdir: Path) -> dict[str, Any]:
    """bench/bench_survey.py in its own process on the trained bundle and raw cutouts (see its doc)."""
    out = workdir / "survey.json"
    cmd = [sys.executable, str(Path(__file__).resolve().parent / "bench_survey.py"), "--n", str(n),
           "--bundle", str(trained_root / "models" / "img2spec"), "--cutouts", str(trained_root / "data" / "raw" / "images"),
           "--workdir", str(workdir / "survey"), "--out", str(out)]
    m = measure_command(cmd, cwd=REPO, env=bench_env(), log_path=workdir / "survey.log")
    if not m.ok or not out.exists():
        return {"failed": f"exit {m.returncode}: {m.log_tail[-500:]}"}
    res = _sub_report(out)
    print(f"survey: {res['galaxies_per_s']} galaxies/s at the default {res['default_n_workers']} workers, "
          f"2 vs 1 worker {res['scaling_2_vs_1']}x", flush=True)
    return res


def run_photoz(trained_root: Path, workdir: Path, fractions: Sequence[float] | None) -> dict[str, Any]:
    """bench/bench_photoz.py in its own process on the trained run (its params.yaml, its splits)."""
    out = workdir / "photoz_scaling.json"
    cmd = [sys.executable, str(Path(__file__).resolve().parent / "bench_photoz.py"), "--root", str(trained_root),
           "--out", str(out)] + (["--fractions", *map(str, fractions)] if fractions else [])
    m = measure_command(cmd, cwd=REPO, env=bench_env({"PYTHONPATH": _code_path(trained_root)}),
                        log_path=workdir / "photoz.log")
    if not m.ok or not out.exists():
        return {"failed": f"exit {m.returncode}: {m.log_tail[-800:]}"}
    res = _sub_report(out)
    res["process_seconds"], res["peak_gib"] = round(m.seconds, 1), round(m.peak_gib, 3)
    return res


def default_batch_size(trained: Path | None) -> int:
    """The batch size users get: the bundle's inference.batch_size (else params.yaml publish.batch_size)."""
    import yaml

    manifest = (trained / "models" / "img2spec" / "bundle.json") if trained else None
    if manifest and manifest.exists():
        bs = (json.loads(manifest.read_text()).get("inference") or {}).get("batch_size")
        if bs:
            return int(bs)
    params = (trained or REPO) / "params.yaml"
    return int(((yaml.safe_load(params.read_text()) or {}).get("publish") or {}).get("batch_size", 256))


def reusable_runs(previous: Path | None, sizes: Sequence[int]) -> list[dict]:
    """Completed scaling runs of an earlier bench.json whose workspaces still exist (to resume)."""
    if previous is None:
        return []
    runs = (json.loads(previous.read_text()).get("scaling") or {}).get("runs", [])
    return [r for r in runs if r["n_galaxies"] in sizes and r.get("completed") and Path(r["workspace"]).is_dir()]


def pick_trained_root(scal: dict | None, fallback: Path | None) -> Path | None:
    """The largest completed scaling workspace with a bundle, else `fallback` if it has one."""
    for run in sorted((scal or {}).get("runs", []), key=lambda r: -r["n_galaxies"]):
        ws = Path(run["workspace"])
        if run["completed"] and (ws / "models" / "img2spec" / "bundle.json").exists():
            return ws
    if fallback and (fallback / "models" / "img2spec" / "bundle.json").exists():
        return fallback
    return None


def scaling_within_budget(sizes: Sequence[int], workdir: Path, overrides: dict, budget_s: float | None,
                          t_start: float, code_from: Path = REPO, reuse: Sequence[dict] = ()) -> dict[str, Any]:
    """`scaling.run_size` for each size, skipping a size whose projected time exceeds the budget.
    `reuse`: runs of an earlier invocation (same code snapshot) kept instead of re-measured."""
    runs, skipped = sorted(reuse, key=lambda r: r["n_galaxies"]), []
    done = {r["n_galaxies"] for r in runs}
    for n in sorted(sizes):
        if n in done:
            print(f"scaling: n={n} reused from {runs[0]['workspace'].rsplit('/', 1)[0]}", flush=True)
            continue
        if budget_s is not None and runs:
            last = runs[-1]
            projected = last["total_seconds"] * n / last["n_galaxies"] * PROJECTION_SAFETY
            remaining = budget_s - (time.perf_counter() - t_start)
            if projected > remaining:
                skipped.append({"n_galaxies": n, "reason": f"projected {projected / 60:.0f} min > "
                                f"{remaining / 60:.0f} min left of the budget"})
                print(f"scaling: skip n={n} ({skipped[-1]['reason']})", flush=True)
                continue
        print(f"scaling: n={n}", flush=True)
        runs.append(scaling.run_size(n, workdir, dict(overrides), code_from))
        runs.sort(key=lambda r: r["n_galaxies"])
    return {"sizes_requested": sorted(sizes), "sizes_run": [r["n_galaxies"] for r in runs], "skipped": skipped,
            "overrides": overrides, "code_from": str(code_from), "reused_sizes": sorted(done), "runs": runs, "table": scaling.scaling_table(runs),
            "throughput_by_size": {str(r["n_galaxies"]): scaling.throughput(r) for r in runs}}


def headline_throughput(scal: dict) -> dict[str, Any]:
    """Per activity, the figure at the largest size where it was measured."""
    out: dict[str, Any] = {}
    for n in sorted(scal.get("throughput_by_size", {}), key=int):
        for key, val in scal["throughput_by_size"][n].items():
            out[key] = {**val, "at_n_galaxies": int(n)}
    return out


# ------------------------------------------------------------------ reports
def _f(x: Any, fmt: str = "{:.2f}") -> str:
    return "–" if x is None or (isinstance(x, float) and x != x) else fmt.format(x)


def _portable_path(token: str, option: str | None) -> str:
    """A path inside the repository relative to it; any other absolute path a placeholder
    named after its option (the reader's machine has its own)."""
    try:
        rel = Path(token).resolve().relative_to(REPO)
        return str(rel) if str(rel) != "." else "."
    except (ValueError, OSError):
        return (option or "--path").lstrip("-").replace("-", "_").upper()


def portable_command(command: str) -> str:
    """A recorded command line as anyone can type it: no local absolute paths (see _portable_path)."""
    try:
        tokens = shlex.split(command)
    except ValueError:
        return re.sub(r"(?<![\w.])/[^\s`'\"]+", "PATH", command)
    if command.endswith(" ") and tokens and tokens[-1].startswith("--"):
        tokens.append("")  # a trailing empty value (`--readme ''`) that a plain join lost
    out: list[str] = []
    for i, tok in enumerate(tokens):
        option = tokens[i - 1] if i and tokens[i - 1].startswith("--") else None
        key, eq, value = tok.partition("=") if tok.startswith("--") else ("", "", tok)
        if eq and value.startswith("/"):
            out.append(f"{key}={_portable_path(value, key)}")
        elif not eq and tok.startswith("/"):
            out.append(_portable_path(tok, option))
        else:
            out.append(tok)
    return shlex.join(out)


def portable_paths(obj: Any, key: str | None = None) -> Any:
    """The report with every absolute path string made portable (`_portable_path`, the key as its
    option name): a path inside the repository relative to it, any other a placeholder."""
    if isinstance(obj, dict):
        return {k: portable_paths(v, k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [portable_paths(v, key) for v in obj]
    if isinstance(obj, str) and obj.startswith("/") and " " not in obj:
        return _portable_path(obj, key)
    return obj


def _snapshot(report: dict[str, Any]) -> str:
    """Where the measured pipeline code came from, when not this checkout."""
    if report.get("carried_over"):  # the scaling section is not this run's
        return ""
    src = (report.get("scaling") or {}).get("code_from")
    return "" if not src or Path(src) == REPO else " (pipeline code: a snapshot of another checkout, `--code-from`)"


def _portable_commands(text: str) -> str:
    """Every backquoted `python ...` command of generated Markdown made portable."""
    return re.sub(r"`(python [^`]*)`", lambda m: f"`{portable_command(m.group(1))}`", text)


def carry_scaling(report: dict[str, Any], old: dict[str, Any], source: Path) -> None:
    """Copy an earlier run's scaling and training-throughput sections into `report`, with
    where they came from (shown in the Markdown): a partial re-run never passes them off as new."""
    for key in CARRIED_SECTIONS:
        if old.get(key):
            report[key] = old[key]
    report["carried_over"] = {"sections": [k for k in CARRIED_SECTIONS if old.get(k)], "from": str(source),
                              "generated": old.get("generated"), "command": old.get("command"),
                              "commit": (old.get("machine") or {}).get("git", {}).get("commit")}


def markdown(report: dict[str, Any]) -> str:
    """The short Markdown summary shown in docs/benchmarks.md."""
    m = report["machine"]
    p = m["packages"]
    lines = [f"Measured {report['generated'][:10]} by `{report['command']}` on {m['cpu_model']} "
             f"({m['cores_available']} cores, {m['memory_gib']} GiB, GPU: {m['gpu']}; load average "
             f"{m['load_average_1_5_15'][0]} at start, {report.get('load_average_end', ['?'])[0]} at end, "
             f"the benchmark's own processes included), Python {m['python']}, TensorFlow {p['tensorflow']}, "
             f"Keras {p['keras']}, numpy {p['numpy']}, astropy {p['astropy']}, bench at commit "
             f"`{m.get('git', {}).get('commit', '?')[:10]}`{_snapshot(report)}. Raw figures: `reports/bench.json`."]
    if report.get("quick"):
        lines.append("\n**Quick mode** (tiny sizes, few epochs): a harness check, not representative figures.")
    carried = report.get("carried_over")
    if carried:
        lines.append(f"\nNot re-measured in this run: {', '.join(carried['sections'])} (the training throughput and "
                     f"scaling tables) are carried over from the run of {str(carried['generated'])[:10]} "
                     f"(`{carried['command']}`, commit `{str(carried['commit'])[:10]}`), on the mock and code of then.")
    thr = report.get("throughput") or {}
    names = {"mock_generation": "Mock survey generation (select + 3 fetch stages)",
             "preparation": "Preparation (match + prepare)",
             "vae_training": "VAE training (train objects x epochs per fit second)",
             "cnn_training": "CNN training (train objects x epochs per fit second)"}
    if thr:
        lines += ["", "| Step | objects/s | peak memory (GiB) | measured at |", "|---|---:|---:|---:|"]
        for key, label in names.items():
            if key in thr:
                t = thr[key]
                extra = f", {t['epochs']} epochs" if "epochs" in t else ""
                lines.append(f"| {label} | {_f(t['objects_per_s'], '{:.1f}')} | {_f(t['peak_gib'])} | "
                             f"{t['at_n_galaxies']} galaxies{extra} |")
    inf = report.get("inference") or {}
    if inf.get("by_batch_size"):
        first = next(iter(inf["by_batch_size"].values()))
        lines += ["", f"| Inference (cutout arrays -> spectra, {_sigma_label(first)}) | galaxies/s | peak memory (GiB) |",
                  "|---|---:|---:|"]
        for bs, r in inf["by_batch_size"].items():
            tag = " (default)" if int(bs) == inf["batch_size"] else ""
            lines.append(f"| batch {bs}{tag} | {_f(r.get('galaxies_per_s'), '{:.1f}')} | {_f(r.get('peak_gib'))} |")
        ref = inf.get("sampled_reference")
        if ref:
            lines.append(f"| batch {inf['batch_size']}, {_sigma_label(ref)} (reference) | "
                         f"{_f(ref.get('galaxies_per_s'), '{:.1f}')} | {_f(ref.get('peak_gib'))} |")
    surv = report.get("survey") or {}
    if surv.get("by_workers"):
        import bench_survey

        lines += [""] + bench_survey.markdown_rows(surv)
    elif surv:
        lines += ["", f"Survey: not measured ({surv.get('skipped') or surv.get('failed')})."]
    pz = report.get("photoz_scaling") or {}
    if pz.get("rows"):
        import bench_photoz

        lines += [""] + bench_photoz.markdown_rows(pz)
    elif pz:
        lines += ["", f"Photo-z scaling: not measured ({pz.get('skipped') or pz.get('failed')})."]
    scal = report.get("scaling") or {}
    if scal.get("table"):
        sizes = [str(s) for s in scal["sizes_run"]]
        lines += ["", "Scaling: wall seconds (peak GiB) per stage, `dvc repro -s <stage>` in a fresh copy of the repo; "
                  "b = growth exponent of wall time, b_cpu of CPU time (t ~ N^b, 1 = linear; CPU time is less "
                  "affected by other jobs on the machine)", "",
                  "| Stage | " + " | ".join(f"N = {s}" for s in sizes) + " | b | b_cpu |",
                  "|---|" + "---:|" * (len(sizes) + 2)]
        for row in scal["table"]:
            cells = []
            for s in sizes:
                c = row["by_size"].get(s)
                cells.append(f"{c['seconds']:.1f} ({c['peak_gib']:.2f})" if c else "–")
            lines.append(f"| {row['stage']} | " + " | ".join(cells)
                         + f" | {_f(row.get('time_exponent'))} | {_f(row.get('cpu_exponent'))} |")
        totals = " | ".join(f"{r['total_seconds']:.0f}" for r in scal["runs"])
        lines.append(f"| **total (s)** | {totals} | | |")
        overhead = []
        for r in scal["runs"]:
            for st in r["stages"]:
                own = st.get("stage_reported_seconds")
                if st.get("ok") and own is not None and st["seconds"] > 0 and own < OVERHEAD_SHARE * st["seconds"]:
                    overhead.append(f"{st['stage']} at N = {r['n_galaxies']}: {own:.1f} of {st['seconds']:.1f} s")
        if overhead:
            lines.append("\nStages whose own work (their report's `seconds`) is under half of the wall time, the rest "
                         "being DVC hashing/caching and interpreter start-up: " + "; ".join(overhead) + ".")
        for sk in scal.get("skipped", []):
            lines.append(f"\nN = {sk['n_galaxies']} not run: {sk['reason']}.")
        nonlin = [f"{r['stage']} (b_cpu = {_f(r.get('cpu_exponent'))}, b = {_f(r.get('time_exponent'))})"
                  for r in scal["table"] if r.get("linear") is False]
        if nonlin:
            lines.append("\nNot linear in CPU time: " + ", ".join(nonlin) + " (b < 1: fixed start-up costs dominate "
                         "at these sizes; b > 1: cost grows faster than the survey).")
        epochs = _epoch_line(scal.get("throughput_by_size") or {})
        if epochs:
            lines.append(epochs)
    sci = report.get("science") or {}
    if sci.get("table"):
        lines += ["", f"Science: {sci['n_scored']} galaxies of a fresh mock survey (seed {sci['fresh_seed']}; training "
                  f"used seed {sci['training_seed']}, {sci['training_n_galaxies']} galaxies), prepared with the "
                  "trained image scaling. D_i in SDSS spectral errors (lower is better).", "",
                  "| Method | mean D ± sem | median | 16-84% | / CNN |", "|---|---:|---:|---:|---:|"]
        for name, r in sci["table"].items():
            lines.append(f"| {r['label']} | {_f(r['mean'])} ± {_f(r['sem'])} | {_f(r['median'])} | "
                         f"{_f(r['p16'])}-{_f(r['p84'])} | {_f(r['ratio_to_cnn'])} |")
        from img2spec.metrics import GAUSSIAN_WITHIN_1SIGMA, GAUSSIAN_WITHIN_2SIGMA

        cal, cal_s = sci.get("cnn_calibration"), sci.get("cnn_calibration_sampled")
        if cal:
            scale = sci.get("cnn_sigma_scale", 1.0)
            calibrated = f" x {scale:.3f}, the bundle's calibration factor" if scale != 1.0 else ""
            line = (f"\nUncertainty on these galaxies ({sci.get('cnn_sigma_method', 'sampled')} sigma{calibrated}): "
                    f"{_pct(cal.get('within_1sigma'))} of good pixels within 1 sigma, {_pct(cal.get('within_2sigma'))} "
                    "within 2 sigma of the observed spectrum (sigma = prediction and observation noise in "
                    f"quadrature; Gaussian: {_pct(GAUSSIAN_WITHIN_1SIGMA)}, {_pct(GAUSSIAN_WITHIN_2SIGMA)})")
            if cal_s:
                r = sci.get("sigma_ratio_to_sampled") or {}
                line += (f"; sampled sigma ({sci.get('sampled_n_samples', '?')} draws{', uncalibrated' if calibrated else ''}): "
                         f"{_pct(cal_s.get('within_1sigma'))} and {_pct(cal_s.get('within_2sigma'))}; "
                         f"linearised / sampled sigma per pixel, both before calibration: median {_f(r.get('p50'))} "
                         f"(5-95%: {_f(r.get('p5'))}-{_f(r.get('p95'))})")
            lines.append(line + ".")
        agree = sci.get("agreement") or {}
        if agree:
            n_ok = sum(bool(r["agrees"]) for r in agree.values())
            lines += ["", f"Against the committed test-split figures (metrics/evaluate.json): {n_ok} of {len(agree)} "
                      "agree within 3 combined standard errors.", "",
                      "| figure | fresh survey | committed | difference / se |", "|---|---:|---:|---:|"]
            g = "{:.4g}"
            lines += [f"| {k} | {_f(r['fresh'], g)} ± {_f(r['fresh_se'], g)} | {_f(r['committed'], g)} | "
                      f"{_f(r['sigmas'], '{:.1f}')} |"
                      for k, r in agree.items()]
    elif sci.get("error") or sci.get("skipped"):
        lines += ["", f"Science: not measured ({sci.get('skipped') or 'failed, see reports/bench.json'})."]
    return _portable_commands("\n".join(lines) + "\n")


def update_readme(readme: Path, table: str) -> bool:
    """Replace the text between the bench markers; False (and untouched) if they are missing."""
    from img2spec.docs import replace_section

    return replace_section(readme, "bench", table)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help=f"mock survey sizes (default {DEFAULT_SIZES})")
    ap.add_argument("--quick", action="store_true", help="tiny sizes and few epochs: checks the harness in minutes")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="params override key=value")
    ap.add_argument("--budget-minutes", type=float, default=None, help="skip scaling sizes projected to overrun")
    ap.add_argument("--skip-scaling", action="store_true", help="use --trained-root for inference and science")
    ap.add_argument("--skip-science", action="store_true")
    ap.add_argument("--trained-root", type=Path, default=None, help="trained project root (default: largest scaling run)")
    ap.add_argument("--science-n", type=int, default=None, help=f"fresh survey size (default {SCIENCE_N})")
    ap.add_argument("--science-seed", type=int, default=None)
    ap.add_argument("--inference-repeats", type=int, default=None)
    ap.add_argument("--survey-n", type=int, default=None,
                    help=f"cutouts for the survey section (default {SURVEY_N}; --quick {QUICK_SURVEY_N})")
    ap.add_argument("--skip-survey", action="store_true")
    ap.add_argument("--skip-photoz", action="store_true", help="no photo-z scaling section (bench/bench_photoz.py)")
    ap.add_argument("--photoz-json", type=Path, default=None,
                    help="use this bench_photoz.py output as the photoz_scaling section instead of measuring it")
    ap.add_argument("--workdir", type=Path, default=None, help="keep workspaces here (default: temp, removed)")
    ap.add_argument("--code-from", type=Path, default=REPO,
                    help="snapshot the tracked files of this git checkout (default: this repo)")
    ap.add_argument("--carry-scaling", type=Path, default=None,
                    help="with --skip-scaling: keep the scaling and training-throughput sections of this earlier "
                         "bench.json, labelled with their own date and command (not re-measured)")
    ap.add_argument("--reuse-scaling", type=Path, default=None,
                    help="an earlier bench.json: keep its completed sizes whose workspaces still exist")
    ap.add_argument("--out", type=Path, default=REPO / "reports" / "bench.json")
    ap.add_argument("--markdown", type=Path, default=REPO / "reports" / "bench.md")
    ap.add_argument("--readme", type=Path, default=REPO / "docs" / "benchmarks.md",
                    help="Markdown page with the bench markers (default docs/benchmarks.md); '' to leave it alone")
    ap.add_argument("--render-only", type=Path, default=None,
                    help="re-write the Markdown and README section from this bench.json; measure nothing")
    ap.add_argument("--inference-worker", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=INFERENCE_REPEATS, help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--sigma", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.inference_worker is not None:
        inference_worker(args.inference_worker, args.batch, args.repeats, args.worker_out, args.sigma)
        return

    from img2spec.io.atomic import write_json, write_text

    if args.render_only is not None:
        report = json.loads(args.render_only.read_text())
        if args.photoz_json is not None:
            report["photoz_scaling"] = json.loads(args.photoz_json.read_text())
            write_json(args.render_only, report)
            args.render_only.chmod(0o644)
        scal = report.get("scaling")
        if scal and scal.get("runs"):  # derived figures are recomputed from the raw per-stage runs
            scal["table"] = scaling.scaling_table(scal["runs"])
            scal["throughput_by_size"] = {str(r["n_galaxies"]): scaling.throughput(r) for r in scal["runs"]}
            report["throughput"] = headline_throughput(scal)
            write_json(args.render_only, report)
            args.render_only.chmod(0o644)
        table = markdown(report)
        write_text(args.markdown, table)
        args.markdown.chmod(0o644)
        if str(args.readme) and args.readme.is_file() and not update_readme(args.readme, table):
            print(f"{args.readme}: no {MARK_START}/{MARK_END} markers; README not updated", flush=True)
        print(table)
        return

    t0 = time.perf_counter()
    sizes = args.sizes or (QUICK["sizes"] if args.quick else DEFAULT_SIZES)
    overrides = {**(QUICK["overrides"] if args.quick else {}), **dict(scaling.parse_override(o) for o in args.overrides)}
    science_n = args.science_n or (QUICK["science_n"] if args.quick else SCIENCE_N)
    repeats = args.inference_repeats or (QUICK["inference_repeats"] if args.quick else INFERENCE_REPEATS)
    budget_s = args.budget_minutes * 60 if args.budget_minutes else None
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="img2spec_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "generated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": portable_command(shlex.join(["python", "bench/run_all.py",
                                                 *(argv if argv is not None else sys.argv[1:])])),
        "quick": args.quick, "machine": machine_facts(REPO),
    }
    try:
        scal = None
        if args.skip_scaling and args.carry_scaling is not None:
            carry_scaling(report, json.loads(args.carry_scaling.read_text()), args.carry_scaling)
        if not args.skip_scaling:
            scal = scaling_within_budget(sizes, workdir, overrides, budget_s, t0, args.code_from,
                                         reusable_runs(args.reuse_scaling, sizes))
            report["scaling"] = scal
            report["throughput"] = headline_throughput(scal)
        trained = pick_trained_root(scal, args.trained_root or (REPO if args.skip_scaling else None))
        report["trained_root"] = str(trained) if trained else None
        default_bs = default_batch_size(trained)
        if trained is None:
            report["inference"] = {"skipped": "no trained bundle (no scaling run completed through publish)"}
            report["science"] = {"skipped": "no trained bundle"}
            report["survey"] = {"skipped": "no trained bundle"}
        else:
            batches = sorted(set(INFERENCE_BATCHES) | {default_bs})
            report["inference"] = run_inference(trained, batches, repeats, workdir, default_bs)
            report["science"] = ({"skipped": "--skip-science"} if args.skip_science
                                 else run_science(trained, science_n, workdir, args.science_seed))
            survey_n = args.survey_n or (QUICK_SURVEY_N if args.quick else SURVEY_N)
            report["survey"] = ({"skipped": "--skip-survey"} if args.skip_survey
                                else run_survey_bench(trained, survey_n, workdir))
        if args.photoz_json is not None:
            report["photoz_scaling"] = json.loads(args.photoz_json.read_text())
        elif args.skip_photoz or trained is None:
            report["photoz_scaling"] = {"skipped": "--skip-photoz" if args.skip_photoz else "no trained bundle"}
        else:
            report["photoz_scaling"] = run_photoz(trained, workdir, QUICK_PHOTOZ_FRACTIONS if args.quick else None)
    finally:
        report["load_average_end"] = [round(x, 2) for x in __import__("os").getloadavg()]
        report["seconds"] = round(time.perf_counter() - t0, 1)
        report = portable_paths(report)
        write_json(args.out, report)
        args.out.chmod(0o644)
        table = markdown(report)
        write_text(args.markdown, table)
        args.markdown.chmod(0o644)
        if str(args.readme) and args.readme.is_file():
            if not update_readme(args.readme, table):
                print(f"{args.readme}: no {MARK_START}/{MARK_END} markers; README not updated", flush=True)
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(table)


if __name__ == "__main__":
    main()
