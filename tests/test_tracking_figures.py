"""Evaluation figures a user reads: human legend labels, untruncated titles, log axis across decades."""

from __future__ import annotations

import numpy as np

from img2spec.evaluate import figures


def _legend_and_axes(monkeypatch, draw):
    """Run `draw` and return the legend texts, titles, x/y scales of every axes it saved."""
    import matplotlib.pyplot as plt

    seen = []
    real_close = plt.close

    def capture(fig):
        fig.canvas.draw()
        renderer, box = fig.canvas.get_renderer(), fig.bbox
        for ax in fig.axes:
            titles = [t for t in (ax.title, ax._left_title, ax._right_title) if t.get_text()]
            inside = all(box.x0 <= e.x0 and e.x1 <= box.x1 and e.y1 <= box.y1
                         for e in (t.get_window_extent(renderer) for t in titles))
            legend = ax.get_legend()
            seen.append({"legend": [t.get_text() for t in legend.get_texts()] if legend else [],
                         "title": ax.get_title(loc="left") + ax.get_title(), "xscale": ax.get_xscale(),
                         "yscale": ax.get_yscale(), "titles_inside": inside})
        real_close(fig)

    monkeypatch.setattr(figures.plt, "close", capture)
    draw()
    return seen


def test_histogram_log_axis_and_human_labels(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    wide = {"cnn": rng.lognormal(0.7, 0.3, 200), "knn_colour": rng.lognormal(1.5, 0.5, 200),
            "noise_floor": rng.normal(0.8, 0.05, 200), "mean_spectrum": rng.lognormal(3.0, 1.0, 200)}
    axes = _legend_and_axes(monkeypatch, lambda: figures.histogram_figure(
        tmp_path / "h.png", wide, np.linspace(0, 20, 21)))
    assert axes[0]["xscale"] == "log"
    assert any(t.startswith("kNN in PS1 colour space") for t in axes[0]["legend"])
    assert not any("knn_colour" in t or "noise_floor" in t for t in axes[0]["legend"])
    narrow = {"cnn": rng.normal(2.0, 0.2, 200), "knn_colour": rng.normal(3.0, 0.3, 200)}
    axes = _legend_and_axes(monkeypatch, lambda: figures.histogram_figure(
        tmp_path / "n.png", narrow, np.linspace(0, 5, 21)))
    assert axes[0]["xscale"] == "linear"
    assert (tmp_path / "h.png").stat().st_size > 0


def test_example_titles_fit_in_the_figure(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    wave = np.linspace(3800, 9200, 120)
    label = "worst: objid 1237648720693755918, z=0.0712"
    row = dict(label=label, image=rng.random((16, 16, 5)), obs=rng.normal(1, 0.1, 120), ivar=np.full(120, 100.0),
               pred=np.ones(120), sigma=np.full(120, 0.1), knn=np.full(120, 1.05), d_cnn=1.2, d_knn=2.3)
    axes = _legend_and_axes(monkeypatch, lambda: figures.examples_figure(tmp_path / "e.png", wave, [row]))
    spectrum = next(a for a in axes if a["legend"])
    assert label in spectrum["title"]
    assert any(t.startswith("kNN in PS1 colour space") for t in spectrum["legend"])
    assert all(a["titles_inside"] for a in axes)  # no title clipped by the figure edge
