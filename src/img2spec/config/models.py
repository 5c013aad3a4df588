"""`vae` and `cnn`: architectures and training (owned by models/)."""

from typing import Literal

from pydantic import Field

from .base import Section


class VAEParams(Section):
    latent_dim: int = Field(8, ge=1, le=256)
    encoder_units: tuple[int, ...] = (512, 128)
    decoder_units: tuple[int, ...] = (128, 512)
    decoder_skip: bool = False
    """The decoder's output layer also reads the latents directly (an MLP plus a linear map of the
    latents: the linear part can hold line strengths the way PCA components do)."""
    learning_rate: float = Field(1e-3, gt=0)
    kl_weight: float = Field(1.0, ge=0)
    kl_warmup_epochs: int = Field(5, ge=0)
    batch_size: int = Field(64, ge=1)
    epochs: int = Field(40, ge=1)
    patience: int = Field(6, ge=1)
    lr_patience: int = Field(3, ge=1)       # epochs without val improvement before the LR is cut
    lr_factor: float = Field(0.5, gt=0, lt=1)
    frame: Literal["observed", "rest"] = "observed"
    """observed: the decoder outputs the observed grid. rest: it decodes a rest-frame spectrum
    and redshifts it explicitly onto the observed grid (true z in training, the CNN's
    predicted z or the user's at inference; needs cnn.redshift_weight > 0)."""
    rest_oversample: float = Field(1.0, gt=0)
    """frame: rest: rest-grid pixels per observed-grid pixel width."""
    line_weight: float = Field(1.0, ge=1)
    """Likelihood weight of pixels near the emission lines (config.constants.LINE_REST_VACUUM_A at the
    object's z) relative to the rest: lines are a few pixels of the grid and carry little ivar
    weight, so an unweighted chi-square lets the decoder draw a smooth continuum. 1: plain chi2."""
    line_halfwidth_kms: float = Field(400.0, gt=0)
    """Half-width of the up-weighted window around each line (km/s)."""
    seed: int = 0


class CNNParams(Section):
    input_pool: int = Field(1, ge=1)  # average-pool the cutout by this factor first (flux-conserving)
    filters: tuple[int, ...] = (32, 64, 128)
    kernel_size: int = Field(3, ge=1)
    pool: int = Field(2, ge=1)
    dense_units: int = Field(128, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    epochs: int = Field(40, ge=1)
    patience: int = Field(6, ge=1)
    lr_patience: int = Field(3, ge=1)
    lr_factor: float = Field(0.5, gt=0, lt=1)
    loss: Literal["latent", "spectrum"] = "latent"
    shift_pixels: float = Field(0.0, ge=0, le=1)  # max sub-pixel shift of the augmentation (0: off)
    train_pca: bool = True    # also train the PCA + same-CNN baseline in the train_cnn stage
    train_direct: bool = True  # train the direct baseline (same CNN -> measurements and classes) in train_direct
    architecture: Literal["plain", "resnet"] = "plain"
    """plain: conv-BN-ReLU-pool blocks; resnet: residual blocks (two convs + projection shortcut)."""
    bn_momentum: float = Field(0.99, gt=0, lt=1)
    """Momentum of the BatchNormalization moving statistics (inference-time mean/variance)."""
    line_weight: float = Field(1.0, ge=1)
    """loss = spectrum: chi-square weight of pixels near the emission lines (as `vae.line_weight`, at the
    object's catalogue z; half-width `line_halfwidth_kms`); 1: plain chi2."""
    line_halfwidth_kms: float = Field(400.0, gt=0)
    measure_weight: float = Field(0.0, ge=0)
    """loss = spectrum with a rest-frame decoder: weight of the measurement term, the Huber loss of
    the standardised difference between what `measure` reads off the decoded rest-frame spectrum
    (EW(Halpha), Dn4000, Hdelta_A, the two BPT log ratios) and the same measurements of the
    observed spectrum (the direct baseline's targets): a few line pixels weigh almost nothing in
    the chi-square. 0: off (the loss is the chi-square alone, unchanged)."""
    measure_huber_delta: float = Field(1.0, gt=0)
    """Quadratic-to-linear transition of that Huber loss, in train-split standard deviations of each
    measurement (noisy observed measurements beyond it pull with a constant force)."""
    measure_quantities: tuple[str, ...] = ("halpha_ew", "dn4000", "hdelta_a", "log_oiii_hbeta", "log_nii_halpha")
    """The measurements the term compares (a subset of the direct baseline's quantities)."""
    measure_ew_softening: float = Field(0.0, ge=0)
    """> 0: the term compares EWs as asinh(EW / this) [A], so the star-forming / quiescent cut (3 A)
    and the emission tail are both resolved; 0: EW itself."""
    measure_balance: bool = False
    """Weigh each object's measurement term by the inverse train frequency of its class (star-forming /
    quiescent for EW(Halpha), Dn4000 and Hdelta_A; the BPT class for the line ratios), as the direct
    baseline's class heads weigh theirs: the regression sees every class as often, as balanced
    accuracy counts them."""
    measure_class_weight: float = Field(0.0, ge=0)
    """With the measurement term: weight of the class term (`models/class_loss.py`), the
    class-balanced cross-entropy of the star-forming / quiescent and BPT decisions made on the
    decoded measurements (smooth margins to the class thresholds) against the observed spectra's
    classes; 0: off."""
    measure_class_temperature: float = Field(0.5, gt=0)
    """Width of those decisions' sigmoids, in train-split standard deviations of the measurement."""
    measure_class_decisions: tuple[str, ...] = ("star_forming", "above_kauffmann03", "above_kewley01")
    """The decisions the class term scores (`class_loss.DECISIONS`)."""
    hypotheses: int = Field(1, ge=1)
    """Latent hypotheses per galaxy (multiple-choice learning): the head predicts this many latent
    means and log-variances and a probability for each; training lets the one that fits best (the
    winner) take the loss and teaches the probabilities to name it; the published network outputs
    the most probable one. Where the images leave a galaxy between two kinds of spectrum (star-forming
    or quiescent), each hypothesis can draw one of them instead of their average. 1: one latent mean."""
    hypothesis_relax: float = Field(0.05, ge=0, lt=1)
    """With hypotheses > 1: share of the loss the non-winning hypotheses still take (split evenly),
    so none is left untrained (relaxed winner-takes-all)."""
    hypothesis_winner: Literal["loss", "measurements"] = "loss"
    """With hypotheses > 1: what picks the winner and is shared as above. loss: the whole per-object
    loss; measurements: the measurement (and class) terms alone, every hypothesis taking the
    chi-square and the latent NLL in full (the hypotheses then differ in what is measured on them,
    lines and breaks, and share the continuum fit). measurements needs cnn.measure_weight > 0."""
    redshift_weight: float = Field(0.0, ge=0)
    """Weight of the redshift head's Gaussian NLL in the CNN loss; 0: no redshift head."""
    photometry: bool = False
    """Hybrid input: catalogue colours and r magnitude as a second input "photometry" (models/cnn.py)."""
    photometry_units: tuple[int, ...] = (64, 64)
    """Dense ReLU layers of the photometry branch before it joins the image features."""
    photometry_missing_fraction: float = Field(0.2, ge=0, lt=1)
    """Share of training objects per batch whose photometry is withheld (indicator set), so the
    same network also predicts from images alone."""
    ensemble: int = Field(1, ge=1)
    """Networks trained with seeds seed, seed + 1, ... and published as one (`models/ensemble.py`): each
    Gaussian output the members' equal-weight mixture, each class head their mean probability. Applies
    to the spectrum CNN, its PCA baseline and the direct model alike; tuning trials train one. 1: one."""
    seed: int = 0
