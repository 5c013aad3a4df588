"""The description of a registered model version: what it scores, on which data, what changed.

Shown by the MLflow UI on the model version's page, so a user picking a version (or an
alias) sees the headline numbers and the difference from the version before it.
"""

from __future__ import annotations

from typing import Any, Mapping

from .. import tracking

HEADLINE = ("cnn", "knn_colour", "mean_spectrum", "pca_cnn", "vae_ceiling", "noise_floor")
"""Methods quoted in the description, in this order (those the evaluation scored)."""
MAX_CHANGES = 20
"""Params changes listed one by one; more are counted."""


def _metric_lines(metrics: Mapping[str, Any]) -> list[str]:
    lines = []
    for method in HEADLINE:
        m = metrics.get(method)
        if isinstance(m, Mapping) and isinstance(m.get("mean"), (int, float)):
            lines.append(f"- mean_deviation_{method}: {m['mean']:.3f} +- {float(m.get('sem', float('nan'))):.3f} "
                         f"(median {float(m.get('median', float('nan'))):.3f})")
    return lines


def params_changes(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """'key: old -> new' for every logged param that differs (added/removed as '(none)')."""
    keys = sorted(set(before) | set(after))
    return [f"{k}: {before.get(k, '(none)')} -> {after.get(k, '(none)')}"
            for k in keys if before.get(k) != after.get(k)]


def version_description(
    manifest: Mapping[str, Any],
    run_params: Mapping[str, str],
    run_tags: Mapping[str, str],
    previous: Mapping[str, Any] | None = None,
) -> str:
    """Markdown: metrics, data version, commit, and what changed since `previous`
    ({'version', 'params', 'tags', 'metrics'} of the previous version's run), if any."""
    data = run_tags.get(tracking.DATA_VERSION_TAG, "unknown")
    commit = str(manifest.get("git_commit", "unknown"))[:12]
    dirty = " (with uncommitted changes)" if manifest.get("git_dirty") else ""
    lines = [
        "Test-split mean deviation D (SDSS per-pixel errors; lower is better):",
        *_metric_lines(manifest.get("metrics") or {}),
        "",
        f"Data version (DVC hash of data/processed): {data}",
        f"Code: commit {commit}{dirty}; bundle hash {str(manifest.get('bundle_hash', ''))[:16]}",
    ]
    if previous is None:
        lines += ["", "What changed: first registered version."]
        return "\n".join(lines)
    changes = params_changes(previous.get("params") or {}, run_params)
    prev_tags = previous.get("tags") or {}
    lines += ["", f"What changed since version {previous.get('version')}:"]
    if prev_tags.get(tracking.DATA_VERSION_TAG, "unknown") != data:
        lines.append(f"- data version: {prev_tags.get(tracking.DATA_VERSION_TAG, 'unknown')} -> {data}")
    prev_commit = str(prev_tags.get("mlflow.source.git.commit", "unknown"))[:12]
    if prev_commit != commit:
        lines.append(f"- commit: {prev_commit} -> {commit}")
    lines += [f"- {c}" for c in changes[:MAX_CHANGES]]
    if len(changes) > MAX_CHANGES:
        lines.append(f"- ... and {len(changes) - MAX_CHANGES} more params")
    before = (previous.get("metrics") or {}).get("mean_deviation_cnn")
    now = ((manifest.get("metrics") or {}).get("cnn") or {}).get("mean")
    if isinstance(before, (int, float)) and isinstance(now, (int, float)):
        lines.append(f"- mean_deviation_cnn: {before:.3f} -> {now:.3f}")
    if lines[-1].startswith("What changed"):
        lines.append("- nothing in params, data or commit (a rerun)")
    return "\n".join(lines)


def previous_version(client: Any, name: str, version: str) -> dict[str, Any] | None:
    """The highest registered version of `name` below `version`, with its run's params, tags and metrics."""
    versions = [v for v in client.search_model_versions(f"name = '{name}'")
                if str(v.version).isdigit() and int(v.version) < int(version)]
    if not versions:
        return None
    prev = max(versions, key=lambda v: int(v.version))
    out: dict[str, Any] = {"version": str(prev.version), "params": {}, "tags": {}, "metrics": {}}
    if prev.run_id:
        try:
            run = client.get_run(prev.run_id)
        except Exception:  # noqa: BLE001 - the run may have been deleted: describe without it
            return out
        out.update(params=dict(run.data.params), tags=dict(run.data.tags), metrics=dict(run.data.metrics))
    return out
