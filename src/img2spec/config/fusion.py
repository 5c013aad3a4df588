"""`fusion`: the CNN's spectrum pulled toward the direct model's predictions of its measurements (owned by models/fusion.py)."""

from typing import Literal

from pydantic import Field

from .base import Section

FusedQuantity = Literal["halpha_ew", "dn4000", "hdelta_a", "log_oiii_hbeta", "log_nii_halpha"]
"""What the direct model predicts (`models.direct.QUANTITIES`)."""


class FusionParams(Section):
    enabled: bool = True
    """Fuse in evaluate, predict and survey (needs the direct model: cnn.train_direct, and a
    rest-frame decoder); False: the CNN's latents as they are."""
    weight: float = Field(10.0, gt=0)
    """Weight of the direct model's likelihood against the CNN's latent prior."""
    quantities: tuple[FusedQuantity, ...] = ("halpha_ew", "dn4000", "hdelta_a")
    """The direct predictions the decoded spectrum's measurements are pulled toward."""
    iterations: int = Field(2, ge=1)
    """Levenberg-Marquardt steps per galaxy (each one decoder body pass and its Jacobian)."""
    classes: bool = True
    """Weigh each draw of the spectrum's posterior by the direct model's probability of the class
    the draw measures as (`models.class_draws.weigh_draws`); False: the draws' classes alone."""
