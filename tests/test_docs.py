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
    assert "| CNN pipeline (images -> latents -> decoder) | 2.105 +- 0.056 | 1.76 |" in md
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
    assert "| CNN redshift head | 0.0284 | +0.0013 | 7.2% | 472 |" in md and "kNN in PS1" not in md.split("sigma_NMAD")[1]


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


def _row(mean: float, n: int = 472) -> dict:
    return {"mean": mean, "sem": 0.05, "median": mean - 0.1, "n": n}


def _meas(bias: float) -> dict:
    return {"bias": bias, "nmad": 0.25, "n": 100}


ALL_MEASURED = ["cnn", "cnn_given_z", "direct", "pca_cnn", "knn_colour", "vae_ceiling", "mean_spectrum", "observed"]


def _synthetic_evaluate() -> dict:
    """An evaluate.json with every method the README tables know, in scrambled order, plus one they
    do not know (which must not appear)."""
    methods = ["observed", "mean_spectrum", "knn_colour", "unknown_method", "cnn_given_z", "vae_ceiling",
               "cnn", "pca_cnn", "direct"]
    meas = {q: {m: _meas(0.01 * i) for i, m in enumerate(methods)} for q in ("dn4000", "halpha_ew")}
    cls = {"sf_quiescent": {m: {"accuracy": 0.5, "balanced_accuracy": 0.4, "n": 90} for m in methods}}
    dev = {m: _row(1.0 + i) for i, m in enumerate(["noise_floor", "cnn", "vae_ceiling", "cnn_given_z"])}
    z = {"cnn": {"sigma_nmad": 0.02, "bias": 0.001, "outlier_fraction": 0.02, "n": 472,
                 "coverage_1sigma": 0.61, "coverage_2sigma": 0.93},
         "cnn_images_only": {"sigma_nmad": 0.03, "bias": -0.002, "outlier_fraction": 0.05, "n": 472,
                             "coverage_1sigma": 0.55, "coverage_2sigma": 0.90},
         "knn_colour": {"sigma_nmad": 0.014, "bias": 0.0, "outlier_fraction": 0.03, "n": 472},
         "notes": {"outlier_threshold": 0.05}}
    return {"mean_deviation": dev, "measurements": meas, "classes": cls, "redshift": z,
            "notes": {"measurements": {"reference": "truth"}}}


def _section(text: str, name: str) -> str:
    start, end = markers(name)
    return text.split(start, 1)[1].split(end, 1)[0]


def test_readme_command_renders_every_method_in_order(tmp_path):
    from img2spec.docs import MEASURE_LABELS

    readme = tmp_path / "README.md"
    readme.write_text("intro\n" + "\n".join(f"{a}\nold\n{b}" for a, b in (markers("eval"), markers("measure"))) + "\ntail\n")
    metrics = tmp_path / "evaluate.json"
    metrics.write_text(json.dumps(_synthetic_evaluate()))
    res = CliRunner().invoke(app, ["readme", "--metrics", str(metrics), "--readme", str(readme)])
    assert res.exit_code == 0, res.output
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro\n") and text.endswith("tail\n")
    ev = _section(text, "eval")
    rows = [line.split(" | ")[0].lstrip("| ") for line in ev.splitlines() if line.startswith("| ") and "+-" in line]
    assert rows == ["CNN, no z given", "CNN, catalogue z given",
                    "representation ceiling (reconstruction of the observed spectrum)", "noiseless truth (noise floor)"]
    assert "| CNN, catalogue z given | 4.000 +- 0.050 | 3.90 |" in ev and "Test split: 472 galaxies" in ev
    z_head = next(line for line in ev.splitlines() if "sigma_NMAD" in line)
    assert z_head == "| method | sigma_NMAD | bias | outliers | within 1 sigma | within 2 sigma | n |"
    assert "| CNN redshift head | 0.0200 | +0.0010 | 2.0% | 61.0% | 93.0% | 472 |" in ev
    assert "| CNN redshift head, images only | 0.0300 | -0.0020 | 5.0% | 55.0% | 90.0% | 472 |" in ev
    assert "| kNN in PS1 colour space | 0.0140 | +0.0000 | 3.0% | - | - | 472 |" in ev
    meas = _section(text, "measure")
    header = next(line for line in meas.splitlines() if line.startswith("| quantity"))
    labels = [MEASURE_LABELS[m] for m in ALL_MEASURED]
    labels[0] = "CNN, no z given"
    assert header == "| quantity | " + " | ".join(labels) + " |"
    assert "unknown" not in meas and "|---|" + "---:|" * 8 in meas
    # dn4000 cells follow the header's order: the scrambled input put cnn at index 6, observed at 0.
    dn = next(line for line in meas.splitlines() if line.startswith("| Dn4000"))
    assert dn.split(" | ")[1] == "+0.060 / 0.250 (100)" and dn.split(" | ")[-1] == "+0.000 / 0.250 (100) |"
    assert "| HdeltaA [A] | - |" in meas                                   # not measured: a dash, not a crash
    assert meas.count("40.0%), n=90") == 8


def test_readme_tables_keep_old_metrics_working():
    from img2spec.docs import evaluation_table, measurement_table

    old = {"mean_deviation": {"cnn": _row(2.0), "knn_colour": _row(4.0)},
           "redshift": {"cnn": {"sigma_nmad": 0.02, "bias": 0.0, "outlier_fraction": 0.02, "n": 472},
                        "notes": {"outlier_threshold": 0.05}},
           "measurements": {"dn4000": {"cnn": _meas(0.1), "observed": _meas(0.0)}}, "classes": {}}
    ev = evaluation_table(old)
    assert "| CNN pipeline (images -> latents -> decoder) | 2.000 +- 0.050 |" in ev and "no z given" not in ev
    assert "within 1 sigma |" not in ev and "| method | sigma_NMAD | bias | outliers | n |" in ev
    meas = measurement_table(old)
    assert "| quantity | CNN | observed spectrum |" in meas
    assert measurement_table({"mean_deviation": {}}).startswith("No spectral measurements")


def test_committed_readme_shows_committed_metrics():
    """`make repro` re-renders the README's tables; a committed README that disagrees with the
    committed metrics means someone edited a generated block by hand or skipped `img2spec readme`."""
    from img2spec.docs import evaluation_table, measurement_table

    values = json.loads((REPO / "metrics" / "evaluate.json").read_text())
    text = (REPO / "README.md").read_text()
    assert _section(text, "eval") == "\n" + evaluation_table(values)
    assert _section(text, "measure") == "\n" + measurement_table(values)


def test_readme_command_reports_missing_metrics_and_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    missing = CliRunner().invoke(app, ["readme", "--metrics", str(tmp_path / "none.json"), "--readme", str(readme)])
    assert missing.exit_code == 1 and "none.json" in missing.output
    metrics = tmp_path / "evaluate.json"
    metrics.write_text(json.dumps(_synthetic_evaluate()))
    res = CliRunner().invoke(app, ["readme", "--metrics", str(metrics), "--readme", str(readme)])
    assert res.exit_code == 1 and "eval:start" in res.output and readme.read_text() == "no markers\n"


def test_class_table_shows_the_point_spectrum_classes_after_the_cnn():
    from img2spec.docs import measurement_table

    values = _synthetic_evaluate()
    for m, acc in (("cnn_point", 0.3), ("cnn_given_z_point", 0.2)):
        values["classes"]["sf_quiescent"][m] = {"accuracy": acc, "balanced_accuracy": acc, "n": 90}
    table = measurement_table(values)
    quantity_header = next(line for line in table.splitlines() if line.startswith("| quantity"))
    assert "point spectrum" not in quantity_header  # the measurements are the point spectrum's alone
    header = next(line for line in table.splitlines() if line.startswith("| classes"))
    cols = header.strip("| ").split(" | ")[1:]
    assert cols[:4] == ["CNN, no z given", "CNN, catalogue z given", "CNN point spectrum, no z given",
                        "CNN point spectrum, catalogue z given"]
    row = next(line for line in table.splitlines() if line.startswith("| sf_quiescent")).split(" | ")
    assert row[3] == "30.0% (30.0%), n=90" and row[4] == "20.0% (20.0%), n=90" and len(row) == 1 + len(cols)
