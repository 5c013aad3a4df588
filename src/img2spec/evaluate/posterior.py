"""The CNN's classes in the evaluate stage: decided on draws of its spectrum's posterior.

`models.class_draws` draws each test object's latent posterior, measures and classifies every
draw; the class priors of the decision are fitted here on the val split (no z given, as users
run it most) and published with the bundle, so predict and survey decide as evaluate scored.
Each draw is measured with the error model of the point spectrum it replaces: the observation's
ivar carried onto the rest grid at the catalogue z (`measurements.rest_error_model`). With the
fusion's class evidence (`fusion.classes`) the draws are weighed with the direct model's class
probabilities (`models.class_draws.weigh_draws`), on val as on test.
The point spectrum's own classes stay scored as `<method>_point`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config.measure import MeasureParams
from ..io.processed import ProcessedData
from .measurements import rest_error_model
from .rows import RowView, load_rows

POINT_METHOD = "{}_point"
"""Classes of the point spectrum of a method, scored beside its posterior classes."""


@dataclass(frozen=True)
class Latents:
    """A prediction's latent posterior and the z its spectrum was decoded at (rest-frame decoders)."""

    mu: np.ndarray
    std: np.ndarray
    z_used: np.ndarray
    class_evidence: np.ndarray | None = None
    """(N, K) the fusion's class probabilities the draws are weighed with (None: none)."""


def _draws(decoder, data: ProcessedData, rows: np.ndarray, lat: Latents, mp: MeasureParams):
    from ..models.class_draws import draw_classes, weigh_draws
    from ..models.inference import rest_decoder

    rest = rest_decoder(decoder)
    if rest is None:
        return None
    z = data.catalog["z"].to_numpy(np.float64)[rows]
    ivar = rest_error_model(data.wave, load_rows(data.ivar, rows), z, rest.grid.wave)
    draws = draw_classes(decoder, lat.mu, lat.std, lat.z_used, mp, ivar=ivar)
    return None if draws is None else weigh_draws(draws, lat.class_evidence)


def fit_val_priors(models, data: ProcessedData, mp: MeasureParams, photometry, *, batch_size: int,
                   refine=None) -> dict | None:
    """`models.class_draws.fit_class_priors` on the val split, the CNN run without z (None: no val
    objects or an observed-frame decoder); `refine`: the CNN modes' fusion (`models.fusion`)."""
    from ..models.class_draws import fit_class_priors
    from ..models.inference import latent_std, predict_outputs

    val = data.indices("val")
    if len(val) == 0:
        return None
    mu, logvar, z_pred, _ = predict_outputs(models.cnn, RowView(data.images, val), photometry=photometry,
                                            batch_size=batch_size)
    if z_pred is None:
        return None
    std = latent_std(logvar)
    evidence = None
    if refine is not None:
        mu, evidence = refine(models.decoder, mu, std, z_pred, RowView(data.images, val), photometry, batch_size)
    draws = _draws(models.decoder, data, val, Latents(mu, std, z_pred, evidence), mp)
    return None if draws is None else {"priors": fit_class_priors(draws), "fitted_on": "val",
                                       "n_objects": int(len(val))}


def add_posterior_classes(tables: dict[str, dict[str, np.ndarray]], latents: dict[str, Latents], decoder,
                          data: ProcessedData, test: np.ndarray, mp: MeasureParams, priors: dict | None) -> None:
    """Replace the class columns of each method in `latents` by its posterior classes, keeping the
    point spectrum's as method `<method>_point` (class columns only)."""
    from ..models.class_draws import CLASS_COLUMNS, posterior_classes

    for method, lat in latents.items():
        if method not in tables:
            continue
        draws = _draws(decoder, data, test, lat, mp)
        if draws is None:
            continue
        point = tables[method]
        tables[POINT_METHOD.format(method)] = {col: point[col] for col in CLASS_COLUMNS}
        tables[method] = posterior_classes(point, draws, (priors or {}).get("priors"))
