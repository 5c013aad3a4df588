"""MLflow tracking: where runs go, how they are named, nested, tagged and what they log.

Tracking URI: `MLFLOW_TRACKING_URI` if set (e.g. the team server of `make mlflow-server`),
else `sqlite:///<root>/mlflow.db` with artifacts in `<root>/mlartifacts/`.

One experiment, `img2spec`, holds the pipeline. Each pipeline execution (one `dvc repro`
of one commit, code state and params) is ONE parent run, named `repro <time> @ <commit>`;
the tracked stages (prepare, train_vae, train_cnn, evaluate, publish) are runs nested
under it. The parent row carries the headline metrics under self-explaining names
(`mean_deviation_cnn`, `mean_deviation_knn_colour`, `..._sem`), the key model params and
the data version, so the MLflow runs table compares pipeline executions row by row.
Each stage run logs only the params sections its `dvc.yaml` stage lists. Tuning
studies have their own experiment (`img2spec/tune`).

Nothing secret reaches MLflow: every string param and tag passes `logs.redact_text`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import yaml

from .config import Params, flatten
from .io.markdown import markers
from .logs import redact_text

log = logging.getLogger(__name__)

EXPERIMENT_PREFIX = "img2spec"
PIPELINE_EXPERIMENT = "img2spec"
PIPELINE_RUN_TAG = "img2spec.pipeline_run"
PIPELINE_RUN_ENV = "IMG2SPEC_PIPELINE_RUN"
ROLE_TAG = "img2spec.role"
STAGE_TAG = "img2spec.stage"
DATA_TAG_PREFIX = "img2spec.data."
DATA_VERSION_TAG = "data_version"
"""Short DVC hash of data/processed: the data version a pipeline run trained and scored on."""
DATA_VERSION_PATH = "data/processed"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"  # MLflow 3 UI: open on the runs table, not GenAI traces
NOTE_TAG = "mlflow.note.content"  # experiment / run description shown by the MLflow UI
VIEW_KEY = "img2spec-compare"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
"""A runs-table view stored on the experiment, opened by `?viewStateShareKey=` (MLflow UI 3)."""
VIEW_METRICS = (
    "mean_deviation_cnn", "mean_deviation_cnn_sem", "mean_deviation_knn_colour", "mean_deviation_knn_colour_sem",
    "mean_deviation_mean_spectrum", "mean_deviation_pca_cnn", "mean_deviation_vae_ceiling", "val_mean_deviation_cnn",
)
VIEW_PARAMS = ("vae.latent_dim", "cnn.loss", "cnn.filters", "cnn.epochs", "data.source")
VIEW_CHAR_PX, VIEW_PAD_PX = 7, 40  # column width per header character + padding (MLflow UI font)
SHORT_HASH = 12
TRACKING_ENV, REGISTRY_ENV = "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"

KEY_PARAMS = (
    "data.source", "data.cutout_size", "mock.n_galaxies", "prepare.frame",
    "vae.latent_dim", "vae.kl_weight", "vae.epochs", "vae.learning_rate",
    "cnn.loss", "cnn.filters", "cnn.dense_units", "cnn.input_pool", "cnn.epochs", "cnn.learning_rate",
)
"""Params shown on the pipeline's parent run (the stage runs log their full sections)."""

PIPELINE_DESCRIPTION = """\
**img2spec pipeline runs.** One row per pipeline execution (`dvc repro`): a parent run named
`repro <time> @ <commit>` whose stage runs (prepare, train_vae, train_cnn, evaluate, publish)
are nested under it (expand the row). Select two or more rows and press **Compare**.

Headline metric, on the test split (lower is better): `mean_deviation_cnn`, the mean over test
spectra of D_i = mean over good pixels p (ivar > 0, and_mask == 0) of |pred_ip - obs_ip| sqrt(ivar_ip),
i.e. in units of the SDSS per-pixel error; `_sem` is its standard error, `median_deviation_*` the median.
Baselines scored on the same objects: `mean_deviation_knn_colour` (k nearest neighbours in colour),
`mean_deviation_mean_spectrum` (scaled mean training spectrum), `mean_deviation_pca_cnn` (PCA latents,
same CNN), `mean_deviation_vae_ceiling` (the representation's reconstruction of the observed
spectrum: the ceiling of any prediction through it) and, on mock data, `mean_deviation_noise_floor`
(the noiseless truth: 0.80 for pure Gaussian noise, ~0.98 on the calibrated mock with its sky
residuals and bad pixels).
Every other method the evaluate stage scores gets the same three names (e.g. `cnn_given_z`: the
CNN given the catalogue redshift). `val_mean_deviation_cnn` is the same metric on the validation
split at the end of training. Tag `data_version` is the DVC hash of data/processed; params are the key model settings.
"""


# ---------------------------------------------------------------- store and experiments

def comparison_view() -> str:
    """The runs table a user comparing pipeline executions wants: named metric, key param and
    data-version columns, newest first (JSON of the MLflow UI's shared view state)."""
    columns = ([f"metrics.`{m}`" for m in VIEW_METRICS] + [f"params.`{p}`" for p in VIEW_PARAMS]
               + [f"tags.`{DATA_VERSION_TAG}`"])
    widths = {c: VIEW_CHAR_PX * len(c.split("`")[1]) + VIEW_PAD_PX for c in columns}  # full names visible
    # the UI applies widths only to the columns listed in columnOrder
    return json.dumps({"selectedColumns": columns, "columnOrder": columns, "columnWidths": widths,
                       "orderByKey": "attributes.start_time", "orderByAsc": False})


def ui_path(experiment_id: str) -> str:
    """Path (after the server's address) of the comparison view of an experiment in the MLflow UI."""
    return f"/#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"


def tracking_uri(root: str | Path = ".") -> str:
    """The user's `MLFLOW_TRACKING_URI`, else the project's SQLite store under `root`."""
    uri = os.environ.get(TRACKING_ENV)
    if uri:
        return uri
    return f"sqlite:///{(Path(root) / 'mlflow.db').resolve()}"


def artifact_root(root: str | Path = ".") -> Path:
    return (Path(root) / "mlartifacts").resolve()


def configure(root: str | Path = ".") -> str:
    """Point MLflow at the project's tracking store, and its model registry at the user's
    `MLFLOW_REGISTRY_URI` or else that same store; returns the tracking URI."""
    import mlflow

    uri = tracking_uri(root)
    user_env = {key: os.environ.get(key) for key in (TRACKING_ENV, REGISTRY_ENV)}
    mlflow.set_tracking_uri(uri)
    # Both URIs are process-global: an earlier call for another root must not leave its registry.
    mlflow.set_registry_uri(user_env[REGISTRY_ENV] or uri)
    # MLflow copies both URIs into os.environ; left there, this project's store would pass
    # for the user's choice when a later call in this process points at another root.
    for key, value in user_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    return uri


def experiment(name: str = PIPELINE_EXPERIMENT, root: str | Path = ".", description: str | None = None) -> str:
    """Create (once) and activate experiment `name` with its kind and description; returns its id."""
    import mlflow

    configure(root)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = None
        if tracking_uri(root).startswith("sqlite"):
            location = (artifact_root(root) / name.replace("/", "-")).as_uri()
        try:
            exp_id = client.create_experiment(name, artifact_location=location)
        except Exception:  # noqa: BLE001 - another process created it first
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
            exp_id = exp.experiment_id
        tags: dict[str, str] = {}
    else:
        exp_id, tags = exp.experiment_id, dict(exp.tags)
    wanted = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
    if description:
        link = f"**[Open the comparison view]({ui_path(exp_id).lstrip('/')})** (metric columns, newest first).\n\n"
        wanted[NOTE_TAG] = link + description
        wanted[VIEW_TAG] = comparison_view()
    for key, value in wanted.items():
        if tags.get(key) != value:
            client.set_experiment_tag(exp_id, key, value)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


# ---------------------------------------------------------------- code and data versions

def _git(root: str | Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout


def pipeline_outputs(root: str | Path = ".") -> list[str]:
    """Paths the pipeline itself writes (dvc.yaml outs, metrics, plots; dvc.lock).

    They change on every `dvc repro`, so they do not make the working tree dirty.
    """
    found = ["dvc.lock"]
    dvc_yaml = Path(root) / "dvc.yaml"
    if not dvc_yaml.exists():
        return found
    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {}) or {}
    for stage in stages.values():
        for key in ("outs", "metrics", "plots"):
            for entry in stage.get(key, []) or []:
                found.append(next(iter(entry)) if isinstance(entry, dict) else str(entry))
    return found


def _strip_generated(text: str) -> str:
    """Markdown with the generated `<!-- name:start/end -->` sections emptied."""
    out, skipping = [], False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("<!-- ") and stripped.endswith(":end -->"):
            skipping = False
        if not skipping:
            out.append(line)
        if stripped.startswith("<!-- ") and stripped.endswith(":start -->"):
            name = stripped[len("<!-- "):-len(":start -->")]
            skipping = markers(name)[0] == stripped
    return "\n".join(out)


def _only_generated_changed(root: Path, rel: str) -> bool:
    """True if a tracked Markdown file differs from HEAD only inside generated sections."""
    if not rel.endswith(".md"):
        return False
    try:
        head = _git(root, "show", f"HEAD:{rel}")
        now = (root / rel).read_text()
    except (OSError, subprocess.CalledProcessError, UnicodeDecodeError):
        return False
    return _strip_generated(head) == _strip_generated(now)


def dirty_files(root: str | Path = ".") -> list[str]:
    """Tracked files changed since HEAD, without what the pipeline itself writes."""
    root = Path(root)
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    outputs = [p.rstrip("/") for p in pipeline_outputs(root)]
    changed = []
    for line in status.splitlines():
        rel = line[3:].split(" -> ")[-1].strip().strip('"')
        if any(rel == o or rel.startswith(o + "/") for o in outputs):
            continue
        if _only_generated_changed(root, rel):
            continue
        changed.append(rel)
    return changed


def git_commit(root: str | Path = ".") -> tuple[str, bool]:
    """(commit sha or 'unknown', working tree dirty beyond the pipeline's own outputs?)."""
    try:
        sha = _git(root, "rev-parse", "HEAD").strip()
        return sha, bool(dirty_files(root))
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False


def _code_state(root: str | Path) -> str:
    """Hash of the uncommitted changes to code and config (empty when clean)."""
    try:
        files = dirty_files(root)
        if not files:
            return ""
        return hashlib.sha1(_git(root, "diff", "HEAD", "--no-ext-diff", "--", *files).encode()).hexdigest()
    except (OSError, subprocess.CalledProcessError):
        return ""


def pipeline_run_id(params: Params | None = None, root: str | Path = ".") -> str:
    """Id shared by all stages of one pipeline execution: env override, else a hash of
    the commit, the uncommitted code changes and the params."""
    env = os.environ.get(PIPELINE_RUN_ENV)
    if env:
        return env
    sha, _ = git_commit(root)
    if params is not None:
        text = json.dumps(params.model_dump(mode="json"), sort_keys=True).encode()
    else:
        params_file = Path(root) / "params.yaml"
        text = params_file.read_bytes() if params_file.exists() else b""
    return hashlib.sha1(sha.encode() + _code_state(root).encode() + text).hexdigest()[:SHORT_HASH]


def data_version(paths: Iterable[str | Path], root: str | Path = ".") -> dict[str, str]:
    """DVC hashes of `paths` as recorded in dvc.lock outputs (the data version of inputs)."""
    lock = Path(root) / "dvc.lock"
    if not lock.exists():
        return {}
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    recorded: dict[str, str] = {}
    for stage in stages.values():
        for out in stage.get("outs", []) or []:
            recorded[str(out["path"])] = str(out.get("md5") or out.get("hash") or "")
    return {str(p): recorded[str(p)] for p in paths if str(p) in recorded}


# ---------------------------------------------------------------- params

def _dvc_yaml(root: str | Path) -> Path | None:
    """The project's dvc.yaml: in `root`, else the one of the checkout this code runs from."""
    for candidate in (Path(root) / "dvc.yaml", Path(__file__).resolve().parents[2] / "dvc.yaml"):
        if candidate.exists():
            return candidate
    return None


def stage_sections(stage: str, root: str | Path = ".") -> list[str] | None:
    """The params a dvc.yaml stage depends on (sections or dotted keys); None if unknown."""
    path = _dvc_yaml(root)
    if path is None:
        return None
    spec = ((yaml.safe_load(path.read_text()) or {}).get("stages", {}) or {}).get(stage)
    if spec is None:
        return None
    keys: list[str] = []
    for entry in spec.get("params", []) or []:
        # "section" or "section.key"; a {file: [keys]} entry names keys of another params file
        keys.extend([entry] if isinstance(entry, str) else [k for v in entry.values() for k in v])
    return keys


def _loggable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        value = str(list(value))
    if isinstance(value, str):
        return redact_text(value)
    return value


def select_params(params: Params, sections: Iterable[str] | None) -> dict[str, Any]:
    """Flattened params under `sections` (None: all), redacted and ready for `log_params`."""
    flat = flatten(params)
    if sections is not None:
        prefixes = tuple(sections)
        flat = {k: v for k, v in flat.items() if any(k == p or k.startswith(p + ".") for p in prefixes)}
    return {k: _loggable(v) for k, v in flat.items()}


def deviation_metrics(summaries: Mapping[str, Mapping[str, float]], prefix: str = "") -> dict[str, float]:
    """MLflow names for D summaries per method: mean_deviation_<m>, mean_deviation_<m>_sem,
    median_deviation_<m> (non-finite values dropped)."""
    import math

    out = {}
    for method, s in summaries.items():
        for key, name in (("mean", f"mean_deviation_{method}"), ("sem", f"mean_deviation_{method}_sem"),
                          ("median", f"median_deviation_{method}")):
            value = s.get(key)
            if isinstance(value, (int, float)) and math.isfinite(float(value)):
                out[prefix + name] = float(value)
    return out


# ---------------------------------------------------------------- runs

def _parent_run(exp_id: str, run_key: str, params: Params | None, root: str | Path) -> str:
    """The pipeline execution's parent run: found by its id tag, else created."""
    import mlflow

    from mlflow.entities import Param

    client = mlflow.MlflowClient()
    found = client.search_runs(
        [exp_id], filter_string=f"tags.`{PIPELINE_RUN_TAG}` = '{run_key}' and tags.`{ROLE_TAG}` = 'pipeline'",
        order_by=["attributes.start_time ASC"], max_results=1,
    )
    if found:
        return found[0].info.run_id
    sha, dirty = git_commit(root)
    when = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    name = f"repro {when} @ {sha[:7]}{' (dirty)' if dirty else ''}"
    tags = {PIPELINE_RUN_TAG: run_key, ROLE_TAG: "pipeline", "mlflow.source.git.commit": sha,
            "img2spec.git_dirty": str(dirty),
            NOTE_TAG: f"Pipeline execution {run_key}: commit {sha[:12]}"
                      f"{' with uncommitted changes' if dirty else ''}; stages nested below."}
    run = client.create_run(exp_id, run_name=name, tags=tags)
    if params is not None:
        flat = select_params(params, None)
        key_params = {k: flat[k] for k in KEY_PARAMS if k in flat}
        if key_params:
            client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in key_params.items()])
    return run.info.run_id


def pipeline_parent_id() -> str | None:
    """Run id of the active stage run's parent (the pipeline execution), if any."""
    import mlflow

    run = mlflow.active_run()
    if run is None:
        return None
    return mlflow.get_run(run.info.run_id).data.tags.get("mlflow.parentRunId")


def log_metrics(metrics: Mapping[str, float], *, pipeline: bool = True) -> None:
    """Log to the active stage run and, with `pipeline`, to its parent (the comparison row)."""
    import mlflow
    from mlflow.entities import Metric

    values = {k: float(v) for k, v in metrics.items()}
    if not values:
        return
    mlflow.log_metrics(values)
    parent = pipeline_parent_id() if pipeline else None
    if parent:
        mlflow.MlflowClient().log_batch(
            parent, metrics=[Metric(k, v, _now_ms(), 0) for k, v in values.items()])


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def _data_tags(inputs: Iterable[str | Path], root: str | Path) -> dict[str, str]:
    versions = data_version(inputs, root)
    tags = {f"{DATA_TAG_PREFIX}{path}": md5 for path, md5 in versions.items()}
    if DATA_VERSION_PATH in versions:
        tags[DATA_VERSION_TAG] = versions[DATA_VERSION_PATH][:SHORT_HASH]
    return tags


def _set_tags(run_id: str, tags: Mapping[str, Any]) -> None:
    import mlflow
    from mlflow.entities import RunTag

    if tags:
        mlflow.MlflowClient().log_batch(
            run_id, tags=[RunTag(k, redact_text(str(v))) for k, v in tags.items()])


@contextlib.contextmanager
def start_run(
    stage: str,
    params: Params | None = None,
    *,
    inputs: list[str | Path] | None = None,
    run_name: str | None = None,
    nested: bool = False,
    root: str | Path = ".",
    tags: dict[str, Any] | None = None,
    sections: Iterable[str] | None = None,
    experiment_name: str | None = None,
) -> Iterator[Any]:
    """An MLflow run for `stage` with the standard tags and the params it depends on.

    Pipeline stages (no `experiment_name`) go to the pipeline experiment, nested under the
    parent run of this pipeline execution; the parent is reopened for the stage's duration
    so it spans the work of all its stages. If a run for the same stage is already active
    (the stage script opened it before the work), that run is reused and only gains tags.
    `sections` defaults to the stage's `params:` in dvc.yaml; `experiment_name` makes a
    standalone run there (tuning studies).
    """
    import mlflow

    data_tags = _data_tags(inputs or [], root)
    extra = {k: str(v) for k, v in (tags or {}).items()}
    active = mlflow.active_run()
    if active is not None and active.data.tags.get(STAGE_TAG) == stage:
        _set_tags(active.info.run_id, {**data_tags, **extra})
        parent = active.data.tags.get("mlflow.parentRunId")
        if parent and DATA_VERSION_TAG in data_tags:
            _set_tags(parent, {DATA_VERSION_TAG: data_tags[DATA_VERSION_TAG]})
        yield active
        return

    sha, dirty = git_commit(root)
    all_tags = {STAGE_TAG: stage, "mlflow.source.git.commit": sha,
                "img2spec.git_dirty": str(dirty), **data_tags, **extra}
    if sections is None:
        sections = stage_sections(stage, root)
    stage_params = select_params(params, sections) if params is not None else {}

    with contextlib.ExitStack() as stack:
        if nested or experiment_name is not None:
            if experiment_name is not None:
                experiment(experiment_name, root)
            all_tags[PIPELINE_RUN_TAG] = pipeline_run_id(params, root)
        else:
            exp_id = experiment(PIPELINE_EXPERIMENT, root, PIPELINE_DESCRIPTION)
            key = pipeline_run_id(params, root)
            all_tags[PIPELINE_RUN_TAG] = key
            all_tags[ROLE_TAG] = "stage"
            parent_id = _parent_run(exp_id, key, params, root)
            if DATA_VERSION_TAG in data_tags:
                _set_tags(parent_id, {DATA_VERSION_TAG: data_tags[DATA_VERSION_TAG]})
            stack.enter_context(mlflow.start_run(run_id=parent_id))
            nested = True
        all_tags = {k: redact_text(str(v)) for k, v in all_tags.items()}
        run = stack.enter_context(mlflow.start_run(run_name=run_name or stage, nested=nested, tags=all_tags))
        if stage_params:
            mlflow.log_params(stage_params)
        yield run
