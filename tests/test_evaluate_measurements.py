"""evaluate/measurements.py: scores of measurements and classes against a known truth."""

from __future__ import annotations

import numpy as np
import pytest

from img2spec.evaluate.measure_figures import measurements_figure
from img2spec.evaluate.measurements import (class_scores, measure_methods, robust_difference,
                                            score_measurements)
from img2spec.measure import AGN_LABELS, BPT_LABELS, MASKED
from test_measure import EDGES, HALPHA, HBETA, MP, NII, OIII, WAVE, gaussian_bins

REQUIRED = ("dn4000", "halpha_ew", "hdelta_a", "oiii_hbeta", "nii_halpha")


def truth_spectra(n: int, seed: int = 0, swap: bool = False):
    """n spectra: half star-forming (weak [NII], [OIII]), half Seyfert-like (strong both), with
    a 4000 A break of random strength; z in 0.03-0.2. swap: same redshifts, the other class
    and another break strength (a wrong neighbour)."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.03, 0.2, n)
    rest = WAVE[None, :] / (1 + z[:, None])
    jump = rng.uniform(1.1, 2.0, n)[:, None]
    if swap:
        jump = jump[::-1]
    flux = np.where(rest < 3975.0, 1.0, jump) * (4000.0 / rest) ** 2 * 3.0   # F_nu step -> f_lambda
    agn = np.arange(n) % 2 == (0 if swap else 1)
    ratios = {HALPHA: np.full(n, 60.0), HBETA: np.full(n, 20.0),
              NII: np.where(agn, 70.0, 15.0), OIII: np.where(agn, 200.0, 10.0)}
    for lam, f in ratios.items():
        flux += gaussian_bins(EDGES, lam * (1 + z), 2.5 * (1 + z), f)
    return flux, z, agn


MASKED_OBJECT = 0


def halpha_pixels(z: float) -> np.ndarray:
    """Grid pixels inside the observed-frame Halpha line window at redshift z."""
    lo, hi = MP.lines["halpha"].line
    return np.flatnonzero((WAVE >= lo * (1 + z)) & (WAVE <= hi * (1 + z)))


@pytest.fixture(scope="module")
def scored():
    n = 60
    truth, z, agn = truth_spectra(n)
    ivar = np.full(truth.shape, 400.0)           # sigma 0.05 per pixel: every line detected
    ivar[MASKED_OBJECT, halpha_pixels(z[MASKED_OBJECT])] = 0.0   # Halpha masked in one object's observation
    rng = np.random.default_rng(1)
    obs = truth + rng.normal(0, 0.05, truth.shape)
    preds = {"cnn": truth.copy(), "knn_colour": truth_spectra(n, swap=True)[0]}   # kNN: a wrong neighbour
    tables = measure_methods(WAVE, z, "observed", obs, ivar, preds, truth, MP)
    return tables, score_measurements(tables, MP), agn


def test_sections_and_methods(scored):
    tables, s, _ = scored
    assert set(tables) == {"truth", "observed", "cnn", "knn_colour"}
    assert set(REQUIRED) <= set(s["measurements"])
    for q in REQUIRED:
        assert set(s["measurements"][q]) == {"observed", "cnn", "knn_colour"}
        assert {"bias", "nmad", "n"} <= set(s["measurements"][q]["cnn"])
    assert set(s["classes"]) == {"sf_quiescent", "bpt", "agn"}
    assert s["notes"]["reference"] == "truth"


def test_perfect_prediction_scores_zero_and_wrong_objects_do_not(scored):
    _, s, agn = scored
    for q in REQUIRED:
        perfect = s["measurements"][q]["cnn"]
        assert perfect["bias"] == pytest.approx(0.0, abs=1e-9) and perfect["nmad"] == pytest.approx(0.0, abs=1e-9)
        assert perfect["n"] > 40
    assert s["measurements"]["dn4000"]["knn_colour"]["nmad"] > 0.1          # another object's break
    assert s["measurements"]["oiii_hbeta"]["knn_colour"]["nmad"] > 0.5      # SF <-> AGN swapped
    obs = s["measurements"]["dn4000"]["observed"]
    assert 0 < obs["nmad"] < 0.05                                            # noise-limited, small
    agn_c = s["classes"]["agn"]
    assert agn_c["cnn"]["accuracy"] == 1.0 and agn_c["knn_colour"]["accuracy"] == 0.0   # alternating -> all wrong
    conf = agn_c["cnn"]["confusion"]
    assert conf["agn"]["agn"] == int(agn.sum()) and conf["not_agn"]["not_agn"] == agn_c["cnn"]["n"] - int(agn.sum())
    assert sum(sum(row.values()) for row in conf.values()) == agn_c["cnn"]["n"]


def test_masked_pixels_mask_every_method_alike(scored):
    """The observation's mask applies to every method: the CNN's and the truth's unmasked Halpha
    is not measured where the observed spectrum could not be, and nowhere else is anything lost."""
    tables, _, _ = scored
    assert halpha_pixels(0.1).size >= 3
    for m, t in tables.items():
        flag = t["halpha_flag"]
        assert flag[MASKED_OBJECT] & MASKED, m
        assert np.isnan(t["halpha_flux"][MASKED_OBJECT]) and np.isnan(t["halpha_ew"][MASKED_OBJECT]), m
        others = np.arange(len(flag)) != MASKED_OBJECT
        assert not np.any(flag[others] & MASKED), m
        assert np.all(np.isfinite(t["halpha_flux"][others])), m
        assert not t["hbeta_flag"][MASKED_OBJECT] & MASKED, m   # the other lines stay measured


def test_without_truth_the_observed_spectrum_is_the_reference():
    truth, z, _ = truth_spectra(8)
    ivar = np.full(truth.shape, 400.0)
    tables = measure_methods(WAVE, z, "observed", truth, ivar, {"cnn": truth * 1.1}, None, MP)
    s = score_measurements(tables, MP)
    assert s["notes"]["reference"] == "observed"
    assert set(s["measurements"]["dn4000"]) == {"cnn"}
    # a flux scale changes neither Dn4000 nor EWs nor ratios
    assert s["measurements"]["dn4000"]["cnn"]["bias"] == pytest.approx(0.0, abs=1e-9)
    assert s["measurements"]["halpha_ew"]["cnn"]["bias"] == pytest.approx(0.0, abs=1e-6)


def test_robust_difference_and_class_scores():
    r = robust_difference(np.array([1.0, 2.0, np.nan, 4.0]), np.array([0.0, 1.0, 1.0, np.nan]))
    assert r == {"bias": 1.0, "nmad": 0.0, "n": 2, "n_missing": 1}
    c = class_scores(np.array([0, 0, 1, 1, -1]), np.array([0, 1, 1, -1, 1]), AGN_LABELS)
    assert c["n"] == 4 and c["accuracy"] == 0.5 and c["balanced_accuracy"] == 0.5 and c["n_unclassified"] == 1
    assert c["confusion"]["agn"]["unclassified"] == 1 and c["confusion"]["not_agn"]["agn"] == 1
    assert set(class_scores(np.array([2]), np.array([2]), BPT_LABELS)["confusion"]) == {"star_forming", "composite", "agn"}


def test_figure_is_written(scored, tmp_path):
    tables, s, _ = scored
    measurements_figure(tmp_path / "m.png", tables, s["notes"]["reference"])
    assert (tmp_path / "m.png").stat().st_size > 10_000
    assert not [p for p in tmp_path.iterdir() if p.name != "m.png"]      # no temporary left behind


def test_readme_paragraph_rendered_from_metrics(scored, tmp_path):
    import json

    from typer.testing import CliRunner

    from img2spec.cli import app
    from img2spec.evaluate.measurements import markdown_table

    _, s, _ = scored
    metrics = {"mean_deviation": {"cnn": {"mean": 2.0, "sem": 0.1, "median": 1.8, "n": 60}},
               "measurements": s["measurements"], "classes": s["classes"], "notes": {"measurements": s["notes"]}}
    text = markdown_table(metrics)
    assert "| Dn4000 | +0.000 / 0.000" in text and "Doorenbos et al. 2024 report 82%" in text
    assert "100.0%" in text.split("| agn |")[1].split("\n")[0]          # the CNN's AGN accuracy, from metrics
    path, readme = tmp_path / "evaluate.json", tmp_path / "README.md"
    path.write_text(json.dumps(metrics))
    readme.write_text("x\n<!-- eval:start -->\nold\n<!-- eval:end -->\n<!-- measure:start -->\nold\n<!-- measure:end -->\n")
    result = CliRunner().invoke(app, ["readme", "--metrics", str(path), "--readme", str(readme)])
    assert result.exit_code == 0, result.output
    assert "Doorenbos" in readme.read_text() and "old" not in readme.read_text()


def test_flat_mlflow_metrics(scored):
    from img2spec.evaluate.measurements import flat_metrics

    _, s, _ = scored
    flat = flat_metrics(s)
    assert flat["measure.dn4000.cnn.nmad"] == pytest.approx(0.0, abs=1e-9)
    assert flat["classes.agn.knn_colour.accuracy"] == 0.0
    assert all(np.isfinite(v) for v in flat.values())
