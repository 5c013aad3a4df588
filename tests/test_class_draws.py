"""Classes decided on draws of the predicted spectrum's posterior (models/class_draws.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from img2spec.config.measure import MeasureParams
from img2spec.measure import UNCLASSIFIED
from img2spec.models.class_draws import (ClassDraws, class_probabilities, decide, draw_classes, evidence_slices,
                                         fit_class_priors, posterior_classes, probability_columns, weigh_draws)

HALPHA = 6564.61
EW_PER_LATENT = 3.0
"""The decoder's EW(Halpha) per unit of latent 0 (rest A, on a unit continuum)."""


@pytest.fixture(scope="module")
def line_decoder():
    """A rest-frame decoder whose spectrum is a unit continuum plus a Halpha line of EW 3 A x latent 0:
    star-forming (EW >= 3 A) exactly where latent 0 >= 1."""
    from img2spec.models.vae import build_rest_decoder, rest_grid

    obs_wave = np.exp(np.linspace(np.log(3800.0), np.log(9200.0), 1767))
    decoder = build_rest_decoder(obs_wave, 2, (), 0.0, 0.3)
    start, step, n_rest = rest_grid(obs_wave, 0.0, 0.3)
    wave = np.exp(start + step * np.arange(n_rest))
    width = np.gradient(wave)
    profile = np.exp(-0.5 * ((wave - HALPHA) / 2.0) ** 2)
    profile *= EW_PER_LATENT / np.sum(profile * width)  # integrates to EW_PER_LATENT A over a unit continuum
    kernel = np.stack([profile, np.zeros_like(profile)]).astype(np.float32)
    decoder.get_layer("rest_flux").set_weights([kernel, np.ones(n_rest, np.float32)])
    return decoder


def test_probabilities_are_the_share_of_draws_over_the_class_cut(line_decoder):
    mu = np.array([[0.8, 0.0], [3.0, 0.0], [-1.0, 0.0]], np.float32)
    std = np.array([[0.5, 1.0], [0.1, 1.0], [0.1, 1.0]], np.float32)
    draws = draw_classes(line_decoder, mu, std, np.full(3, 0.05), MeasureParams(), n_draws=2000)
    p_sf = draws.prob["sf_class"][:, 1]
    expected = 1 - norm.cdf((1.0 - mu[:, 0]) / std[:, 0])  # P(latent 0 >= 1)
    np.testing.assert_allclose(p_sf, expected, atol=0.04)
    np.testing.assert_array_equal(draws.classified["sf_class"], 1.0)
    # no errors given: no S/N cut, but the BPT lines other than Halpha are absent -> off the diagram
    assert np.all(draws.classified["bpt_class"] == 0) and np.all(np.isnan(draws.prob["bpt_class"]))


def test_the_prior_shift_decides_an_open_case_for_the_rarer_class(line_decoder):
    mu = np.array([[0.8, 0.0]], np.float32)
    std = np.array([[0.5, 1.0]], np.float32)
    draws = draw_classes(line_decoder, mu, std, np.full(1, 0.05), MeasureParams(), n_draws=400)
    assert decide(draws)["sf_class"][0] == 0  # P(star-forming) ~0.35: quiescent without priors
    assert decide(draws, {"sf_class": [0.8, 0.2]})["sf_class"][0] == 1  # 0.35 / 0.2 > 0.65 / 0.8
    table = posterior_classes({"sf_class": np.array([0], np.int8), "bpt_class": np.array([-1], np.int8),
                               "agn_class": np.array([-1], np.int8)}, draws, {"sf_class": [0.8, 0.2]})
    assert table["sf_class"][0] == 1 and table["sf_class_point"][0] == 0
    assert table["sf_class_p_star_forming"][0] == pytest.approx(draws.prob["sf_class"][0, 1])
    assert table["bpt_class"][0] == UNCLASSIFIED and table["bpt_class_classified_frac"][0] == 0


def test_draws_do_not_depend_on_chunking(line_decoder, monkeypatch):
    from img2spec.models import class_draws

    rng = np.random.default_rng(1)
    mu = rng.normal(1.0, 0.5, (50, 2)).astype(np.float32)
    std = np.full((50, 2), 0.3, np.float32)
    whole = draw_classes(line_decoder, mu, std, np.full(50, 0.05), MeasureParams())
    monkeypatch.setattr(class_draws, "DRAW_ROWS", 64)  # two objects per chunk
    chunked = draw_classes(line_decoder, mu, std, np.full(50, 0.05), MeasureParams())
    np.testing.assert_array_equal(whole.prob["sf_class"], chunked.prob["sf_class"])


def test_probabilities_priors_and_columns_by_hand():
    drawn = np.array([[0, 0, 1, -1], [-1, -1, -1, -1], [1, 1, 1, 1]], np.int8)
    prob, frac = class_probabilities(drawn, [0, 1])
    np.testing.assert_allclose(prob[0], [2 / 3, 1 / 3])
    assert np.all(np.isnan(prob[1])) and list(frac) == [0.75, 0.0, 1.0]
    draws = ClassDraws({"sf_class": prob}, {"sf_class": frac})
    assert fit_class_priors(draws)["sf_class"] == pytest.approx([1 / 3, 2 / 3])  # rows with a class only
    assert list(decide(draws)["sf_class"]) == [0, UNCLASSIFIED, 1]
    cols = probability_columns(draws)
    assert set(cols) == {"sf_class_p_quiescent", "sf_class_p_star_forming", "sf_class_classified_frac"}


def test_weighed_draws_are_the_product_of_the_two_experts_renormalised():
    """Each scheme's draw shares times the evidence, renormalised; a class no draw measures as stays
    at 0 however likely the evidence makes it; rows without usable evidence, or without a classified
    draw, keep what the draws say; the classified share is the draws'."""
    sl = evidence_slices()
    assert [(c, s.stop - s.start) for c, s in sl.items()] == [("sf_class", 2), ("bpt_class", 3), ("agn_class", 2)]
    bpt = np.array([[0.5, 0.5, 0.0], [0.25, 0.25, 0.5], [np.nan] * 3, [0.5, 0.25, 0.25]], np.float32)
    two = np.full((4, 2), 0.5, np.float32)
    draws = ClassDraws({"sf_class": two, "bpt_class": bpt, "agn_class": two},
                       {c: np.array([1.0, 1.0, 0.0, 1.0], np.float32) for c in sl})
    ev = np.full((4, 7), 0.5)
    ev[:, sl["bpt_class"]] = [[0.2, 0.3, 0.5], [0.6, 0.2, 0.2], [0.2, 0.3, 0.5], [np.nan, 0.5, 0.5]]
    ev[0, sl["sf_class"]] = [0.9, 0.1]
    got = weigh_draws(draws, ev)
    np.testing.assert_allclose(got.prob["bpt_class"][0], [0.4, 0.6, 0.0], rtol=1e-6)  # agn: no draw, stays 0
    np.testing.assert_allclose(got.prob["bpt_class"][1], np.array([0.15, 0.05, 0.1]) / 0.3, rtol=1e-6)
    assert np.all(np.isnan(got.prob["bpt_class"][2]))  # no classified draw
    np.testing.assert_allclose(got.prob["bpt_class"][3], bpt[3])  # no usable evidence
    np.testing.assert_allclose(got.prob["sf_class"][0], [0.9, 0.1], rtol=1e-6)
    np.testing.assert_allclose(got.prob["agn_class"], two)
    assert got.classified is draws.classified and weigh_draws(draws, None) is draws
    assert list(decide(got)["bpt_class"]) == [1, 0, UNCLASSIFIED, 0]


LINES = {"hbeta": 4862.68, "oiii_5007": 5008.24, "halpha": 6564.61, "nii_6584": 6585.27}


@pytest.fixture(scope="module")
def bpt_decoder():
    """A rest-frame decoder whose 3 latents move the four BPT lines and the continuum's slope apart:
    its draws land on every side of the class cuts (star-forming, composite, AGN, the 4000 A break)."""
    from img2spec.models.vae import build_rest_decoder, rest_grid

    obs_wave = np.exp(np.linspace(np.log(3800.0), np.log(9200.0), 1767))
    decoder = build_rest_decoder(obs_wave, 3, (), 0.0, 0.3)
    start, step, n_rest = rest_grid(obs_wave, 0.0, 0.3)
    wave = np.exp(start + step * np.arange(n_rest))
    line = {k: np.exp(-0.5 * ((wave - w) / 2.0) ** 2) for k, w in LINES.items()}
    kernel = np.stack([3.0 * line["halpha"] + line["hbeta"] + 0.5 * line["nii_6584"],
                       1.5 * line["oiii_5007"] + line["nii_6584"] - 0.3 * line["hbeta"],
                       0.5 * np.tanh((wave - 4000.0) / 100.0)]).astype(np.float32)
    decoder.get_layer("rest_flux").set_weights([kernel, np.ones(n_rest, np.float32)])
    return decoder, n_rest


@pytest.mark.parametrize("errors", ["sigma", "ivar_masked", "none", "dn4000"])
def test_folded_class_measurement_equals_measuring_every_draw(bpt_decoder, monkeypatch, errors):
    """The folded tail (`FoldedClasses`) and measuring each decoded draw band by band give the same codes."""
    from img2spec.models import class_draws

    decoder, n_rest = bpt_decoder
    rng = np.random.default_rng(2)
    n = 40
    mu = rng.normal([1.0, 0.5, 0.0], [0.8, 0.8, 1.0], (n, 3)).astype(np.float32)
    std = np.full((n, 3), 0.4, np.float32)
    sigma = np.full((n, n_rest), 0.05, np.float32)
    mp, kw = MeasureParams(), {"sigma": sigma}
    if errors == "ivar_masked":
        ivar = 1.0 / sigma.astype(np.float64) ** 2
        ivar[: n // 2][rng.random((n // 2, n_rest)) < 0.01] = 0.0  # half the objects with masked pixels
        kw = {"ivar": ivar}
    elif errors == "none":
        kw = {}
    elif errors == "dn4000":
        mp = MeasureParams.model_validate({"classes": {"sf_criterion": "dn4000"}})
    folded = draw_classes(decoder, mu, std, np.full(n, 0.05), mp, n_draws=16, **kw)
    monkeypatch.setattr(class_draws.FoldedClasses, "of", classmethod(lambda cls, wave, mp: None))
    measured = draw_classes(decoder, mu, std, np.full(n, 0.05), mp, n_draws=16, **kw)
    for col in folded.prob:
        np.testing.assert_array_equal(folded.prob[col], measured.prob[col])
        np.testing.assert_array_equal(folded.classified[col], measured.classified[col])
    if errors != "none":  # the case is not trivial: draws on the diagram in more than one class
        bpt = folded.prob["bpt_class"][np.isfinite(folded.prob["bpt_class"]).all(axis=1)]
        assert (bpt.max(axis=0) > 0).sum() >= 2
    sf = folded.prob["sf_class"]
    assert np.nanmin(sf[:, 1]) < 0.5 < np.nanmax(sf[:, 1])
