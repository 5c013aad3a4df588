"""Whole-pipeline scaling: `dvc repro` of every stage, one at a time, at several survey sizes.

For each size N a throwaway workspace is made from the files `git ls-files` lists (their
working-tree content, so the measured code is what is checked out), `params.yaml` gets
`mock.n_galaxies = N` (plus any other override), and every stage of dvc.yaml runs as
`dvc repro -s <stage>` in order, each as an isolated subprocess measured by
`common.measure_command` (wall time, CPU time, peak memory). A stage that takes less than
`SHORT_RUN_S` is re-run (`dvc repro -f -s`) up to `SHORT_REPEATS` times and its median
kept. A failed stage stops that size; later stages are reported as not run.

    python bench/scaling.py --sizes 1000 4000 [--keep DIR] [--set vae.epochs=5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (Measurement, bench_env, growth_exponent, measure_command,  # noqa: E402
                    summarise_runs)

REPO = Path(__file__).resolve().parents[1]
SHORT_RUN_S = 20.0
"""A stage run faster than this is repeated (its single timing is dominated by noise)."""
SHORT_REPEATS = 3
"""Runs of a short stage (median reported)."""
STAGE_TIMEOUT_S = 3600.0
"""One stage of one size may take at most this long."""
LINEAR_BAND = (0.85, 1.15)
"""Growth exponents b (t ~ N^b) outside this band are flagged as not linear."""
NOT_COPIED = frozenset({"dvc.lock"})
"""A fresh workspace starts without a lock file (every stage runs)."""
MOCK_STAGES = ("select", "fetch_spectra", "fetch_images", "fetch_photometry")
PREP_STAGES = ("match", "prepare")


# ------------------------------------------------------------------ workspace
def tracked_files(repo: Path = REPO) -> list[str]:
    """Files git tracks that exist in the working tree (deleted ones are skipped)."""
    out = subprocess.run(["git", "ls-files", "-z"], cwd=repo, capture_output=True, check=True).stdout
    return [f for f in out.decode().split("\0") if f and f not in NOT_COPIED and (repo / f).is_file()]


def make_workspace(dest: Path, repo: Path = REPO) -> Path:
    """Copy the tracked files of `repo` into `dest` and make it its own git repo (DVC needs one)."""
    dest.mkdir(parents=True, exist_ok=False)
    for rel in tracked_files(repo):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, target)
    git = ["git", "-c", "user.name=img2spec-bench", "-c", "user.email=bench@localhost"]
    subprocess.run([*git, "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    from common import git_state

    origin = git_state(repo)  # the commit message says what was measured
    subprocess.run([*git, "commit", "-q", "-m", f"bench snapshot of {repo} at {origin['commit']} "
                    f"({origin['dirty_files']} tracked files modified)"], cwd=dest, check=True)
    return dest


def set_dotted(raw: dict, key: str, value: Any) -> None:
    """raw['a']['b'] = value for key 'a.b' (intermediate mappings created)."""
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"params override {key}: {part} is not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """'vae.epochs=5' -> ('vae.epochs', 5) (value parsed as YAML)."""
    if "=" not in text:
        raise ValueError(f"override {text!r}: expected key=value")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def write_params(params_file: Path, overrides: dict[str, Any]) -> dict:
    """Apply dotted overrides to a params.yaml, validate with the project's config, write it back."""
    from img2spec.config import params_from_dict

    raw = yaml.safe_load(params_file.read_text()) or {}
    for key, value in overrides.items():
        set_dotted(raw, key, value)
    params_from_dict(raw, str(params_file))  # a bad override fails here, naming the key
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    return raw


def dvc_stages(workspace: Path) -> list[str]:
    """Stage names of dvc.yaml in declaration order (which is the pipeline order)."""
    return list((yaml.safe_load((workspace / "dvc.yaml").read_text()) or {}).get("stages", {}))


# ------------------------------------------------------------------ stage facts
def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def stage_report(workspace: Path, stage: str) -> dict:
    """The stage's own report (reports/<stage>.json or metrics/<stage>.json), if it writes one."""
    for path in (workspace / "reports" / f"{stage}.json", workspace / "metrics" / f"{stage}.json"):
        if path.exists():
            return _read_json(path)
    return {}


def training_facts(workspace: Path) -> dict[str, dict[str, Any]]:
    """Per trained model: epochs run and pure training seconds, from metrics/ and reports/
    train_*.json (train_vae.json is flat; train_cnn.json has one entry per model: cnn, pca_cnn), with
    the epoch count of reports/plots/<model>_history.csv as a fallback."""
    out: dict[str, dict[str, Any]] = {}
    for folder in ("metrics", "reports"):  # reports/ holds the timings (reports/train_*.json)
        vae = _read_json(workspace / folder / "train_vae.json")
        if vae:
            out.setdefault("vae", {}).update(vae)
        for name, vals in _read_json(workspace / folder / "train_cnn.json").items():
            if isinstance(vals, dict):
                out.setdefault(name, {}).update(vals)
    for model in ("vae", "cnn"):
        path = workspace / "reports" / "plots" / f"{model}_history.csv"
        if path.exists() and "epochs_run" not in out.get(model, {}):
            rows = [line for line in path.read_text().splitlines() if line.strip()]
            out.setdefault(model, {})["epochs_run"] = max(len(rows) - 1, 0)
    return out


def split_counts(workspace: Path) -> dict[str, int]:
    meta = _read_json(workspace / "data" / "processed" / "meta.json")
    return {k: int(v) for k, v in (meta.get("splits") or {}).items()}


# ------------------------------------------------------------------ run
def run_stage(workspace: Path, stage: str, env: dict[str, str], log_dir: Path,
              short_run_s: float = SHORT_RUN_S, short_repeats: int = SHORT_REPEATS,
              timeout_s: float = STAGE_TIMEOUT_S) -> dict[str, Any]:
    """`dvc repro -s stage` (repeated with -f if short); timings, memory and the stage's report."""
    dvc = str(Path(sys.executable).parent / "dvc")
    log = log_dir / f"{stage}.log"
    runs: list[Measurement] = [measure_command([dvc, "repro", "-s", stage], cwd=workspace, env=env,
                                               log_path=log, timeout_s=timeout_s)]
    report = stage_report(workspace, stage)
    while runs[-1].ok and runs[0].seconds < short_run_s and len(runs) < short_repeats:
        runs.append(measure_command([dvc, "repro", "-f", "-s", stage], cwd=workspace, env=env,
                                    log_path=log, timeout_s=timeout_s))
    out = {"stage": stage, **summarise_runs(runs)}
    own = report.get("seconds")
    if isinstance(own, (int, float)):
        out["stage_reported_seconds"] = own
    if not out["ok"]:
        bad = next(r for r in runs if not r.ok)
        out["error"] = ("timed out" if bad.timed_out else f"exit {bad.returncode}") + ": " + bad.log_tail[-800:]
    return out


def run_size(n: int, workdir: Path, overrides: dict[str, Any], repo: Path = REPO,
             stages: Sequence[str] | None = None, **stage_kw: Any) -> dict[str, Any]:
    """The whole pipeline at `n` mock galaxies in `workdir/n<N>`; returns per-stage figures."""
    ws = make_workspace(workdir / f"n{n}", repo)
    write_params(ws / "params.yaml", {**overrides, "mock.n_galaxies": n})
    log_dir = workdir / f"n{n}-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = bench_env({"PYTHONPATH": str(ws / "src"), "MLFLOW_TRACKING_URI": f"sqlite:///{ws / 'mlflow.db'}",
                     "IMG2SPEC_CACHE": str(ws / ".cache")})
    t0 = time.perf_counter()
    results: list[dict[str, Any]] = []
    failed = None
    for stage in stages or dvc_stages(ws):
        if failed:
            results.append({"stage": stage, "ok": False, "not_run": f"upstream stage {failed} failed"})
            continue
        print(f"  n={n} {stage} ...", end="", flush=True)
        res = run_stage(ws, stage, env, log_dir, **stage_kw)
        print(f" {res['seconds']:.1f} s x{res['repeats']}, peak {res['peak_gib']:.2f} GiB"
              + ("" if res["ok"] else "  FAILED"), flush=True)
        results.append(res)
        if not res["ok"]:
            failed = stage
    return {"n_galaxies": n, "workspace": str(ws), "total_seconds": round(time.perf_counter() - t0, 1),
            "completed": failed is None, "failed_stage": failed, "splits": split_counts(ws),
            "training": training_facts(ws), "stages": results}


# ------------------------------------------------------------------ analysis
def _stage(run: dict, name: str) -> dict | None:
    return next((s for s in run["stages"] if s["stage"] == name and s.get("ok")), None)


def group_seconds(run: dict, names: Sequence[str]) -> tuple[float, float] | None:
    """(summed median seconds, max peak GiB) of a group of stages, if all succeeded."""
    got = [_stage(run, s) for s in names]
    if not all(got):
        return None
    return sum(g["seconds"] for g in got), max(g["peak_gib"] for g in got)


def throughput(run: dict) -> dict[str, Any]:
    """Objects/s and peak memory of mock generation, preparation, VAE and CNN training for one size.
    Training: train-split objects x epochs per second of the model's own fit time (the stage's
    whole-process seconds, which add loading, validation scoring and, for train_cnn, the PCA
    baseline's CNN, are given beside it)."""
    n = run["n_galaxies"]
    out: dict[str, Any] = {}
    mock = group_seconds(run, MOCK_STAGES)
    if mock:
        out["mock_generation"] = {"objects_per_s": round(n / mock[0], 2), "seconds": round(mock[0], 1),
                                  "peak_gib": mock[1], "n_objects": n}
    prep = group_seconds(run, PREP_STAGES)
    if prep:
        out["preparation"] = {"objects_per_s": round(n / prep[0], 2), "seconds": round(prep[0], 1),
                              "peak_gib": prep[1], "n_objects": n}
    n_train = (run.get("splits") or {}).get("train", 0)
    for key, stage, model in (("vae_training", "train_vae", "vae"), ("cnn_training", "train_cnn", "cnn")):
        st, facts = _stage(run, stage), (run.get("training") or {}).get(model, {})
        epochs = facts.get("epochs_run")
        fit_s = facts.get("train_seconds") or (st or {}).get("seconds")
        if st and epochs and n_train and fit_s:
            out[key] = {"objects_per_s": round(n_train * epochs / fit_s, 1), "fit_seconds": fit_s,
                        "stage_seconds": st["seconds"], "epochs": epochs, "n_train": n_train,
                        "peak_gib": st["peak_gib"]}
    return out


def scaling_table(runs: Sequence[dict]) -> list[dict[str, Any]]:
    """Per stage: seconds, CPU seconds and peak GiB at every size, and the growth exponents of
    wall and CPU time from the smallest to the largest size where the stage ran (1 = linear)."""
    runs = sorted(runs, key=lambda r: r["n_galaxies"])
    names = list(dict.fromkeys(s["stage"] for r in runs for s in r["stages"]))
    rows = []
    for name in names:
        row: dict[str, Any] = {"stage": name, "by_size": {}}
        pts = []
        for r in runs:
            st = _stage(r, name)
            if st:
                row["by_size"][str(r["n_galaxies"])] = {"seconds": st["seconds"], "peak_gib": st["peak_gib"],
                                                        "cpu_seconds": st.get("cpu_seconds")}
                pts.append((r["n_galaxies"], st["seconds"], st["peak_gib"], st.get("cpu_seconds")))
        if len(pts) >= 2:
            (n1, t1, m1, c1), (n2, t2, m2, c2) = pts[0], pts[-1]
            b = growth_exponent(n1, t1, n2, t2)
            row["time_exponent"] = None if b is None else round(b, 2)
            # CPU seconds are far less sensitive than wall time to other jobs on a shared machine
            bc = growth_exponent(n1, c1, n2, c2) if c1 and c2 else None
            row["cpu_exponent"] = None if bc is None else round(bc, 2)
            row["memory_ratio"] = round(m2 / m1, 2) if m1 > 0 else None
            judged = bc if bc is not None else b  # CPU time when known: wall time carries the machine's load
            if judged is not None:
                row["linear"] = LINEAR_BAND[0] <= judged <= LINEAR_BAND[1]
        rows.append(row)
    return rows


def run_scaling(sizes: Sequence[int], workdir: Path, overrides: dict[str, Any] | None = None,
                repo: Path = REPO, **kw: Any) -> dict[str, Any]:
    """All sizes, smallest first; returns {runs, table, throughput}."""
    runs = []
    for n in sorted(sizes):
        print(f"scaling: n={n}", flush=True)
        runs.append(run_size(n, workdir, dict(overrides or {}), repo, **kw))
    return {"sizes": sorted(sizes), "overrides": overrides or {}, "runs": runs, "table": scaling_table(runs),
            "throughput_by_size": {str(r["n_galaxies"]): throughput(r) for r in runs}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    ap.add_argument("--workdir", type=Path, default=None, help="keep workspaces here (default: temp, removed)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="params override key=value")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON result here")
    args = ap.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="img2spec_scaling_"))
    try:
        result = run_scaling(args.sizes, workdir, dict(parse_override(o) for o in args.overrides))
        text = json.dumps(result, indent=2)
        if args.out:
            args.out.write_text(text + "\n")
        print(text)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
