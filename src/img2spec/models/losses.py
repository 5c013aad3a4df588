"""Likelihood terms shared by the VAE and the CNN (Keras ops, any backend).

Spectra are compared on the ivar-weighted chi-square: a pixel with ivar = 0 (masked)
contributes exactly nothing. The chi-square is divided by the number of pixels P, a
constant, so the loss is O(1) per object (sane learning rates) while the ratio of the
likelihood to the KL term stays that of the ELBO.
"""

from __future__ import annotations

from keras import ops

from .contract import LOGVAR_CLIP  # noqa: F401  (the bound lives with the array contract; re-exported)


def chi2_per_pixel(pred, flux, ivar):
    """Half chi-square per object, divided by P: sum_p ivar (pred - flux)^2 / (2 P)."""
    good = ops.cast(ivar > 0, pred.dtype)
    # where() rather than multiply: a non-finite flux under a mask must not give 0 * inf.
    resid = ops.where(good > 0, pred - flux, ops.zeros_like(pred))
    n_pix = ops.cast(ops.shape(pred)[-1], pred.dtype)
    return 0.5 * ops.sum(ivar * ops.square(resid), axis=-1) / n_pix


def kl_divergence(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, 1)) per object, summed over latents."""
    logvar = ops.clip(logvar, -LOGVAR_CLIP, LOGVAR_CLIP)
    return 0.5 * ops.sum(ops.square(mu) + ops.exp(logvar) - 1.0 - logvar, axis=-1)


def gaussian_nll(pred_mu, pred_logvar, target_mu, target_var=None):
    """Expected Gaussian NLL of a target distribution N(target_mu, target_var) under the
    prediction N(pred_mu, exp(pred_logvar)), per object (mean over latents, constants dropped)."""
    pred_logvar = ops.clip(pred_logvar, -LOGVAR_CLIP, LOGVAR_CLIP)
    err = ops.square(target_mu - pred_mu)
    if target_var is not None:
        err = err + target_var
    return 0.5 * ops.mean(pred_logvar + err * ops.exp(-pred_logvar), axis=-1)
