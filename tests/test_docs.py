"""Generated README sections: the evaluation table from metrics, marker replacement."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from img2spec.cli import app
from img2spec.docs import markers, replace_section
from img2spec.evaluate.summary import markdown_table

REPO = Path(__file__).resolve().parents[1]


def _metrics(w1: float, w2: float = 0.98, tail: float = 0.003) -> dict:
    row = {"mean": 2.1051, "sem": 0.0564, "median": 1.7555, "n": 472}
    cal = {"within_1sigma": w1, "within_2sigma": w2, "within_2sigma_sem": 0.004,
           "beyond_3sigma": tail, "beyond_3sigma_sem": 0.0006}
    return {"mean_deviation": {"cnn": row, "knn_colour": {**row, "mean": 4.2}}, "calibration": {"cnn": cal}}


def test_markdown_table_rows_and_calibration_verdict():
    md = markdown_table(_metrics(0.876))
    assert "Test split: 472 galaxies" in md
    assert "| CNN pipeline (images -> VAE latents -> decoder) | 2.105 +- 0.056 | 1.76 |" in md
    assert "| kNN in PS1 colour space | 4.200 +- 0.056 |" in md and "PCA" not in md  # only methods present
    assert "87.6% of good test pixels" in md and "98.0% +- 0.4 within 2 sigma" in md
    assert "0.30% +- 0.06 beyond 3 sigma" in md and "conservative at 2 sigma" in md
    m = _metrics(0.675, 0.951)
    m["sigma_scale"] = {"cnn": {"scale": 0.497, "sigma_method": "linearised", "fitted_on": "val",
                                "test_calibration_unscaled": {"within_1sigma": 0.876, "within_2sigma": 0.983}}}
    md = markdown_table(m)
    assert "(linearised sigma times 0.497, the factor fitted on the val split; unscaled: 87.6% and 98.3%)" in md
    assert "67.5% of good test pixels within 1 sigma" in md and "close to Gaussian" in md
    # The verdict reads the 2-sigma coverage and the tails, not the fitted 1-sigma coverage.
    assert "close to Gaussian" in markdown_table(_metrics(0.50, 0.951))
    assert "overconfident at 2 sigma" in markdown_table(_metrics(0.683, 0.90))
    assert "heavier tails" in markdown_table(_metrics(0.683, 0.951, 0.02))


def test_markdown_table_photo_z_rows_only_when_scored():
    assert "sigma_NMAD" not in markdown_table(_metrics(0.683))
    m = _metrics(0.683)
    m["redshift"] = {"cnn": {"sigma_nmad": 0.0284, "bias": 0.0013, "outlier_fraction": 0.072, "n": 472},
                     "notes": {"outlier_threshold": 0.05}}
    md = markdown_table(m)
    assert "(outliers: |dz|/(1+z) > 0.05)" in md
    assert "| CNN redshift head (images) | 0.0284 | +0.0013 | 7.2% | 472 |" in md and "kNN in PS1" not in md.split("sigma_NMAD")[1]


def test_replace_section_is_idempotent_and_leaves_other_files_alone(tmp_path):
    start, end = markers("eval")
    f = tmp_path / "R.md"
    f.write_text(f"# T\n{start}\nold\n{end}\ntail\n")
    f.chmod(0o644)
    assert replace_section(f, "eval", "new\n")
    text = f.read_text()
    assert text == f"# T\n{start}\nnew\n{end}\ntail\n" and (f.stat().st_mode & 0o777) == 0o644
    assert replace_section(f, "eval", "new\n") and f.read_text() == text
    plain = tmp_path / "P.md"
    plain.write_text("no markers\n")
    assert not replace_section(plain, "eval", "x\n") and plain.read_text() == "no markers\n"


def test_readme_command_renders_committed_metrics(tmp_path):
    from img2spec.evaluate.measurements import markdown_table as measurement_table

    start, end = markers("eval")
    m_start, m_end = markers("measure")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{start}\n{end}\n{m_start}\n{m_end}\n")
    metrics = REPO / "metrics" / "evaluate.json"
    values = json.loads(metrics.read_text())
    res = CliRunner().invoke(app, ["readme", "--metrics", str(metrics), "--readme", str(readme)])
    assert res.exit_code == 0, res.output
    assert markdown_table(values) in readme.read_text()
    if "measurements" in values:  # the committed metrics carry them since the measure module landed
        assert measurement_table(values) in readme.read_text()
    missing = CliRunner().invoke(app, ["readme", "--metrics", str(tmp_path / "none.json"), "--readme", str(readme)])
    assert missing.exit_code == 1 and "none.json" in missing.output
