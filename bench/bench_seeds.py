"""Seed-to-seed scatter of the headline figures: the training stages re-run with other seeds.

A model is trained once per `make repro` with the seeds in params.yaml, so the standard errors
in `metrics/evaluate.json` (over test objects) do not include how much a figure moves when the
same network is trained again from another initialisation and batch order. This bench measures
that: for each seed it runs train_vae -> encode -> train_cnn (CNN and PCA + CNN) -> train_direct
-> evaluate through the stages' library entry points, in a scratch root that links the project's
`data/processed` (same data, same split), with `vae.seed`, `cnn.seed` and `evaluate.seed` set to
the seed. The project's own `metrics/evaluate.json` is the run of the seed in params.yaml (the
pipeline is deterministic on one machine), so only the other seeds are trained.

    python bench/bench_seeds.py --seeds 1 2 --out reports/seeds.json     # + the committed run
    python bench/bench_seeds.py --seeds 1 --set vae.epochs=2 --set cnn.epochs=1 --no-root   # harness check

Writes, after every seed, `--out` with each figure's values per seed, mean, sample standard
deviation (ddof 1) and n. A difference between two configurations smaller than these standard
deviations is not a finding. Each seed costs one training of every model (~15 min on 2 cores).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scaling import set_dotted  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SEED_KEYS = ("vae.seed", "cnn.seed", "evaluate.seed")
"""Every seed of the training and scoring stages (the data and split stay the project's)."""
HEADLINE = re.compile(
    r"^(mean_deviation\.\w+\.mean"
    r"|redshift\.\w+\.(sigma_nmad|bias|outlier_fraction|coverage_[12]sigma)"
    r"|measurements\.\w+\.(cnn|cnn_given_z|pca_cnn|direct|vae_ceiling)\.(bias|nmad)"
    r"|classes\.\w+\.\w+\.balanced_accuracy"
    r"|calibration\.\w+\.within_[12]sigma)$")
"""Figures whose scatter is reported (dotted keys of metrics/evaluate.json)."""


def numeric_leaves(tree: Any, prefix: str = "") -> Iterable[tuple[str, float]]:
    """(dotted key, value) of every number in a JSON tree (booleans are not numbers here)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from numeric_leaves(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield prefix, float(tree)


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    """The headline figures of one evaluate.json."""
    return {k: v for k, v in numeric_leaves(metrics) if HEADLINE.match(k)}


def scatter(per_seed: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Per figure: values by seed, mean, sample std (ddof 1; None with one seed) and n."""
    keys = sorted(set().union(*(v.keys() for v in per_seed.values()))) if per_seed else []
    out = {}
    for key in keys:
        vals = {s: m[key] for s, m in per_seed.items() if key in m and np.isfinite(m[key])}
        arr = np.array(list(vals.values()))
        out[key] = {"values": vals, "n": len(arr), "mean": float(arr.mean()) if len(arr) else None,
                    "std": float(arr.std(ddof=1)) if len(arr) > 1 else None}
    return out


def seed_params(params_file: Path, seed: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """params.yaml with every training seed set to `seed` and the dotted overrides applied."""
    raw = yaml.safe_load(params_file.read_text()) or {}
    for key in SEED_KEYS:
        set_dotted(raw, key, seed)
    for key, value in overrides.items():
        set_dotted(raw, key, value)
    return raw


def train_and_evaluate(root: Path, processed: Path, raw_params: dict[str, Any]) -> dict[str, Any]:
    """The training and evaluate stages in `root` (data/processed linked); metrics/evaluate.json."""
    from img2spec.config import params_from_dict
    from img2spec.evaluate.stage import evaluate_stage
    from img2spec.models.direct import train_direct_stage
    from img2spec.models.stages import encode_stage, train_cnn_stage, train_vae_stage
    from img2spec.paths import Paths

    paths = Paths(root)
    paths.processed.parent.mkdir(parents=True, exist_ok=True)
    if not paths.processed.exists():
        paths.processed.symlink_to(processed.resolve(), target_is_directory=True)
    (root / "params.yaml").write_text(yaml.safe_dump(raw_params, sort_keys=False))
    params = params_from_dict(raw_params, str(root / "params.yaml"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"  # the scratch root's own store
    for stage in (train_vae_stage, encode_stage, train_cnn_stage, train_direct_stage, evaluate_stage):
        t0 = time.perf_counter()
        stage(params, paths)
        print(f"seeds: {root.name}: {stage.__name__} {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return json.loads((paths.metrics / "evaluate.json").read_text())


def parse_set(items: list[str]) -> dict[str, Any]:
    """--set key=value (YAML-parsed value) -> {key: value}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected key=value")
        out[key] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", required=True, help="seeds to train (besides the project's run)")
    ap.add_argument("--root", type=Path, default=REPO, help="project root: params.yaml, data/processed, metrics/")
    ap.add_argument("--out", type=Path, default=REPO / "reports" / "seeds.json")
    ap.add_argument("--work", type=Path, default=None, help="scratch roots (default: a new temporary directory)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted params override")
    ap.add_argument("--no-root", action="store_true", help="do not count the project's metrics/evaluate.json")
    args = ap.parse_args(argv)
    overrides = parse_set(args.set)
    params_file = args.root / "params.yaml"
    own_seed = (yaml.safe_load(params_file.read_text()) or {}).get("cnn", {}).get("seed", 0)
    per_seed: dict[str, dict[str, float]] = {}
    if not args.no_root and not overrides:
        per_seed[str(own_seed)] = headline(json.loads((args.root / "metrics" / "evaluate.json").read_text()))
    work = args.work or Path(tempfile.mkdtemp(prefix="img2spec-seeds-"))
    report: dict[str, Any] = {"generated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                              "seed_keys": list(SEED_KEYS), "overrides": overrides,
                              "includes_project_run": str(own_seed) in per_seed}
    for seed in args.seeds:
        if str(seed) in per_seed:
            continue
        t0 = time.perf_counter()
        metrics = train_and_evaluate(work / f"seed_{seed}", args.root / "data" / "processed",
                                     seed_params(params_file, seed, overrides))
        per_seed[str(seed)] = headline(metrics)
        report.setdefault("seconds_per_seed", {})[str(seed)] = round(time.perf_counter() - t0, 1)
        report.update(seeds=sorted(per_seed, key=int), figures=scatter(per_seed))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
        print(f"seeds: seed {seed} done in {time.perf_counter() - t0:.0f} s -> {args.out}", file=sys.stderr)
    for key in ("mean_deviation.cnn.mean", "mean_deviation.vae_ceiling.mean", "redshift.cnn.sigma_nmad",
                "measurements.halpha_ew.vae_ceiling.nmad", "classes.sf_quiescent.cnn.balanced_accuracy"):
        fig = report.get("figures", {}).get(key)
        if fig and fig["std"] is not None:
            print(f"{key}: mean {fig['mean']:.4g}, std {fig['std']:.2g} over {fig['n']} seeds")
    return report


if __name__ == "__main__":
    main()
