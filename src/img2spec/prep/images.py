"""Image preparation: quality checks, a common flux unit, and the asinh stretch.

Raw cutouts are linear counts with a per-band AB zero point MAGZP. They are first
put on one unit, nanomaggies (AB zero point 22.5), so exposure-time differences
between objects vanish. The network then sees, per band b,

    x = (asinh(f / s_b) - m_b) / d_b

with softening s_b = `asinh_softening` x the median sky sigma of the training
images (linear near the noise, logarithmic in bright cores) and m_b, d_b the mean
and standard deviation of asinh(f / s_b) over all training pixels. asinh is evaluated
in float32 as sign(y) ln(|y| + sqrt(y^2 + 1)) (`asinh_inplace`): within 3e-7 (absolute,
or relative above 1) of the exact value, and several times faster than numpy's arcsinh, which
was the largest CPU cost of survey inference. Non-finite
pixels become 0 nanomaggies (the sky level) before the stretch. The constants
live in `image_scaling.json`; `preprocess_stack` / `preprocess_cutout` apply
them, in `prepare` and at inference alike.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy.ndimage import uniform_filter

from .. import BANDS
from ..config.prepare import ImageCheckParams
from ..io.ps1_cutout import Cutout
from ..measure.stats import NMAD_SCALE

NANOMAGGY_ZP = 22.5
"""AB magnitude of 1 nanomaggy."""
MAD_TO_SIGMA = NMAD_SCALE  # sigma of Gaussian noise per median absolute deviation
SKY_BORDER_FRACTION = 0.125
"""Sky noise is measured on a border strip this fraction of the side wide (away from the galaxy)."""
SCALING_VERSION = 1
CHECK_CHUNK = 64
"""`check_images` works on this many cutouts at a time: its temporaries stay in the CPU caches."""
ASINH_CHUNK = 1 << 14
"""`asinh_inplace` works on this many values at a time (64 KiB of float32: its passes stay in cache)."""


def _band_rows(arr: np.ndarray, per_band: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`arr` (..., W, C) viewed as (..., W*C), and per-band values (C,) or (N, C) tiled to
    broadcast against that view.

    numpy's inner loop then runs over W*C contiguous values instead of C; the arithmetic
    is element for element the same, several times faster. `arr` must be C-contiguous
    (the in-place callers pass arrays they just allocated).
    """
    per_band = np.asarray(per_band)
    w, c = arr.shape[-2], arr.shape[-1]
    rows = arr.reshape(arr.shape[:-2] + (w * c,))
    if per_band.ndim == 1:
        return rows, np.tile(per_band, w)
    return rows, np.tile(per_band, (1, w)).reshape((per_band.shape[0],) + (1,) * (arr.ndim - 3) + (w * c,))


def _tileable(arr: np.ndarray, per_band: np.ndarray) -> bool:
    return arr.ndim >= (3 if np.ndim(per_band) == 2 else 2) and arr.flags.c_contiguous


def copy_bands(out: np.ndarray, stack: np.ndarray) -> None:
    """`np.copyto(out, stack)` for (..., n_bands) arrays; band by band when the bands are not the
    stack's fastest axis (a view of band-first cutouts with the bands moved last): numpy's generic
    copy of that transposition took ~1.5-2x the time of the n_bands strided copies (64x64x5
    cutouts, 16 at a time)."""
    if stack.ndim >= 2 and stack.strides[-1] != stack.itemsize and out.shape == stack.shape:
        for b in range(stack.shape[-1]):
            out[..., b] = stack[..., b]
    else:
        np.copyto(out, stack)


def to_nanomaggies(stack: np.ndarray, magzp: Sequence[float] | np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Counts -> nanomaggies; `stack` (..., n_bands), `magzp` (n_bands,) or (N, n_bands).

    The product is formed in float64 and rounded once to float32 (numpy's buffered loop,
    no full-size float64 temporary). `out`: a C-contiguous float32 array of the stack's
    shape to write into (it may be `stack` itself, or a view of another layout of it).
    """
    zp = np.asarray(magzp, dtype=np.float64)
    factor = 10.0 ** (-0.4 * (zp - NANOMAGGY_ZP))
    stack = np.asarray(stack)
    if out is not None and out is not stack and stack.dtype.kind == "f" and stack.dtype.itemsize <= 4:
        copy_bands(out, stack)  # exact (float32 values): only the layout changes, e.g. bands moved last
        stack = out
    if _tileable(stack, factor) and (factor.ndim == 1 or factor.shape[0] == stack.shape[0]):
        out = np.empty(stack.shape, np.float32) if out is None else out
        rows, tiled = _band_rows(stack, factor)
        np.multiply(rows, tiled, out=out.reshape(rows.shape), dtype=np.float64, casting="unsafe")
        return out
    if factor.ndim == 2:  # (N, n_bands) -> broadcast over (N, H, W, n_bands)
        factor = factor[:, None, None, :]
    if out is not None:
        return np.multiply(stack, factor, out=out, dtype=np.float64, casting="unsafe")
    return (np.asarray(stack, np.float64) * factor).astype(np.float32)


def _border(nmgy: np.ndarray) -> np.ndarray:
    """(..., M, n_bands) pixels of the border strip of (..., H, W, n_bands) images, where the sky dominates."""
    h, w, nb = nmgy.shape[-3:]
    lead = nmgy.shape[:-3]
    b = max(1, int(round(min(h, w) * SKY_BORDER_FRACTION)))
    strips = (nmgy[..., :b, :, :], nmgy[..., -b:, :, :], nmgy[..., b:-b, :b, :], nmgy[..., b:-b, -b:, :])
    return np.concatenate([x.reshape(*lead, -1, nb) for x in strips], axis=-2)


def sky_level_and_sigma(nmgy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band sky median and robust sigma (MAD) of an (H, W, n_bands) image's border strip."""
    border = _border(nmgy)
    med_fn = np.median if np.isfinite(border).all() else np.nanmedian  # nanmedian is ~5x slower
    with np.errstate(all="ignore"):
        level = med_fn(border, axis=0)
        sigma = MAD_TO_SIGMA * med_fn(np.abs(border - level), axis=0)
    return level, sigma


def sky_sigma(nmgy: np.ndarray) -> np.ndarray:
    """Robust per-band noise (MAD) of an (H, W, n_bands) image on its border strip."""
    return sky_level_and_sigma(nmgy)[1]


def _centre_box(h: int, w: int, box: int) -> tuple[slice, slice]:
    y0 = max(0, h // 2 - box // 2)
    x0 = max(0, w // 2 - box // 2)
    return slice(y0, y0 + box), slice(x0, x0 + box)


def check_image(nmgy: np.ndarray, pixel_scale: float, checks: ImageCheckParams,
                sky_level: np.ndarray | None = None) -> str | None:
    """The first reason to reject an (H, W, n_bands) nanomaggy image, or None.

    Reasons: 'nan_centre', 'saturated_centre', 'off_centre'. `sky_level` (per band)
    is computed from the border strip when not given. One object of `check_images`.
    """
    level = None if sky_level is None else np.asarray(sky_level)[None]
    return check_images(nmgy[None], pixel_scale, checks, sky_level=level)[0]


def check_images(nmgy: np.ndarray, pixel_scale: float, checks: ImageCheckParams,
                 sky_level: np.ndarray | None = None) -> list[str | None]:
    """`check_image` of every (H, W, n_bands) image of an (N, H, W, n_bands) stack at once.

    Survey-scale inference checks thousands of cutouts per batch; per-object numpy calls
    cost as much CPU as the network, so every step here works on the whole stack.
    `sky_level` is (N, n_bands) when given.
    """
    if len(nmgy) > CHECK_CHUNK:
        return [r for i in range(0, len(nmgy), CHECK_CHUNK) for r in check_images(
            nmgy[i:i + CHECK_CHUNK], pixel_scale, checks, None if sky_level is None else sky_level[i:i + CHECK_CHUNK])]
    n, h, w, _ = nmgy.shape
    reasons: list[str | None] = [None] * n
    ys, xs = _centre_box(h, w, checks.centre_box_pix)
    centre = nmgy[:, ys, xs, :]
    finite = np.isfinite(centre)
    nan_centre = np.any(1.0 - finite.mean(axis=(1, 2)) > checks.max_nan_fraction_centre, axis=1)
    saturation = 10.0 ** (-0.4 * (checks.saturation_pixel_mag - NANOMAGGY_ZP))
    n_sat = np.sum(np.where(finite, centre, 0.0) >= saturation, axis=(1, 2))
    saturated = np.any(n_sat > checks.max_saturated_pixels_centre, axis=1)
    for i in np.flatnonzero(nan_centre | saturated):
        reasons[i] = "nan_centre" if nan_centre[i] else "saturated_centre"
    todo = np.flatnonzero(~(nan_centre | saturated))
    if len(todo) == 0:
        return reasons
    # Light peak of the smoothed, sky-subtracted detection image near the centre; only the
    # search disc plus the smoothing margin is needed (a cheap crop of the full cutout).
    level = _sky_levels(nmgy[todo]) if sky_level is None else np.asarray(sky_level)[todo]
    level = np.where(np.isfinite(level), level, 0.0).astype(np.float32)
    reach = int(np.ceil(checks.centre_search_radius_arcsec / pixel_scale)) + checks.smoothing_pix
    y0, x0 = max(0, h // 2 - reach), max(0, w // 2 - reach)
    crop = nmgy[todo, y0:h // 2 + reach, x0:w // 2 + reach, :]
    detect = _detection_image(crop, level)
    detect = uniform_filter(detect, size=(1, checks.smoothing_pix, checks.smoothing_pix), mode="nearest")
    r_arcsec = _radius_arcsec(h, w, pixel_scale)[y0:h // 2 + reach, x0:w // 2 + reach]
    search = r_arcsec <= checks.centre_search_radius_arcsec
    peak = np.argmax(np.where(search, detect, -np.inf).reshape(len(todo), -1), axis=1)
    for i in todo[r_arcsec.ravel()[peak] > checks.max_centre_offset_arcsec]:
        reasons[i] = "off_centre"
    return reasons


def _sky_levels(nmgy: np.ndarray) -> np.ndarray:
    """(N, n_bands) border-strip sky medians of an (N, H, W, n_bands) stack (`sky_level_and_sigma`'s level)."""
    border = np.ascontiguousarray(np.swapaxes(_border(nmgy), 1, 2))  # (N, n_bands, M): contiguous medians
    clean = np.isfinite(border).all(axis=(1, 2))
    level = np.empty(border.shape[:2], border.dtype)
    level[clean] = median_lastaxis(border[clean])  # nanmedian is ~5x slower: only where needed
    if not clean.all():
        with np.errstate(all="ignore"):
            level[~clean] = np.nanmedian(border[~clean], axis=-1)
    return level


def median_lastaxis(values: np.ndarray) -> np.ndarray:
    """`np.median(values, axis=-1)` of finite values, bit for bit, in one selection instead of two.

    np.median partitions around both middle elements of an even-length row and averages them;
    partitioning around the upper one leaves the lower one as the maximum of the lower half
    (6x faster on the 1,792-pixel border strips of 64-pixel cutouts). NaN rows: use np.nanmedian.
    """
    k = values.shape[-1] // 2
    part = np.partition(values, k, axis=-1)
    upper = part[..., k]
    if values.shape[-1] % 2:
        return upper
    return np.true_divide(np.add(part[..., :k].max(axis=-1), upper), 2, dtype=values.dtype)


def _detection_image(crop: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Band sum of the sky-subtracted (N, h, w, n_bands) crop, non-finite pixels counting 0.

    Added band by band in `np.sum(axis=-1)`'s order (bit for bit the same, tested): numpy's
    reduction over a 5-element axis costs several times more.
    """
    diff = crop - level[:, None, None, :]
    finite = np.isfinite(crop)
    if not finite.all():
        np.copyto(diff, np.float32(0), where=~finite)
    total = diff[..., 0].copy()
    for b in range(1, diff.shape[-1]):
        total += diff[..., b]
    return total


@lru_cache(maxsize=8)
def _radius_arcsec(h: int, w: int, pixel_scale: float) -> np.ndarray:
    """Distance of every pixel from the cutout centre, arcsec (cached per geometry)."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.hypot(yy - (h - 1) / 2.0, xx - (w - 1) / 2.0) * pixel_scale


def stretch_nanomaggies(nmgy: np.ndarray, scaling: dict) -> np.ndarray:
    """Apply the asinh stretch and standardisation to nanomaggy pixels (..., n_bands)."""
    return stretch_inplace(np.array(nmgy, dtype=np.float32, copy=True), scaling)


def stretch_inplace(out: np.ndarray, scaling: dict) -> np.ndarray:
    """`stretch_nanomaggies` on a C-contiguous float32 (..., n_bands) array the caller owns (overwritten).

    float32 throughout, in place and per band over contiguous rows (`_band_rows`): the
    same roundings as the out-of-place formula without its full-size temporaries; this
    is a large share of inference time.
    """
    finite = np.isfinite(out)
    if not finite.all():
        np.copyto(out, np.float32(0), where=~finite)
    del finite
    soft = np.asarray(scaling["softening"], np.float32)
    rows, soft = _band_rows(out, soft) if _tileable(out, soft) else (out, soft)
    rows /= soft
    asinh_inplace(out)
    if "offset" in scaling:
        offset, scale = np.asarray(scaling["offset"], np.float32), np.asarray(scaling["scale"], np.float32)
        if rows is not out:
            offset, scale = _band_rows(out, offset)[1], _band_rows(out, scale)[1]
        rows -= offset
        rows /= scale
    return out


def asinh_inplace(arr: np.ndarray) -> np.ndarray:
    """asinh of a finite, C-contiguous float32 array, in place: sign(y) ln(|y| + sqrt(y^2 + 1)).

    Seven SIMD float32 passes over cache-sized chunks cost less than numpy's scalar-quality
    arcsinh; the log form loses relative (not absolute) precision only near y = 0, where
    the stretched value is standardised against an offset of order 1 anyway. The sign goes
    back on with copysign: a masked `negative(where=...)` cost 10 ns per value, more than
    all the other passes together.
    """
    if not arr.flags.c_contiguous:  # reshape would copy: work on a copy, then write it back
        np.copyto(arr, asinh_inplace(np.ascontiguousarray(arr)))
        return arr
    flat = arr.reshape(-1)
    mag = np.empty(min(ASINH_CHUNK, flat.size), np.float32)
    tmp = np.empty(min(ASINH_CHUNK, flat.size), np.float32)
    for start in range(0, flat.size, ASINH_CHUNK):
        y = flat[start:start + ASINH_CHUNK]
        a, t = mag[:y.size], tmp[:y.size]
        np.abs(y, out=a)
        np.multiply(a, a, out=t)
        t += np.float32(1)
        np.sqrt(t, out=t)
        t += a
        np.log(t, out=t)
        np.copysign(t, y, out=y)
    return arr


def preprocess_stack(stack: np.ndarray, magzp: Sequence[float] | np.ndarray, scaling: dict) -> np.ndarray:
    """Raw counts (H, W, 5) or (N, H, W, 5) -> network input, float32, same shape.

    `magzp`: per-band zero points, (5,) or (N, 5); `scaling`: `image_scaling.json`.
    """
    stack = np.asarray(stack)
    if stack.ndim not in (3, 4) or stack.shape[-1] != len(scaling["bands"]):
        raise ValueError(f"expected (H, W, {len(scaling['bands'])}) or (N, H, W, ...) stack, got {stack.shape}")
    return stretch_inplace(to_nanomaggies(stack, magzp), scaling)


def preprocess_cutout(cutout: Cutout, scaling: dict) -> np.ndarray:
    """One `Cutout` -> (H, W, 5) float32 network input, bands in `scaling['bands']` order."""
    bands = tuple(scaling.get("bands", BANDS))
    return preprocess_stack(cutout.stack(bands), [cutout.magzp[b] for b in bands], scaling)


def softening_from_sky(sky_sigmas: np.ndarray, factor: float) -> np.ndarray:
    """Per-band softening: `factor` x median sky sigma over (training) images (N, n_bands)."""
    med = np.nanmedian(np.asarray(sky_sigmas, np.float64), axis=0)
    if not np.all(np.isfinite(med) & (med > 0)):
        raise ValueError(f"cannot set the asinh softening: median sky sigma per band is {med.tolist()}")
    return factor * med


class StretchStats:
    """Streaming per-band mean and standard deviation of stretched pixels."""

    def __init__(self, n_bands: int) -> None:
        self.n = 0
        self.s1 = np.zeros(n_bands)
        self.s2 = np.zeros(n_bands)

    def add(self, stretched: np.ndarray) -> None:
        flat = stretched.reshape(-1, stretched.shape[-1])
        self.n += flat.shape[0]
        self.s1 += flat.sum(axis=0, dtype=np.float64)
        self.s2 += np.einsum("ij,ij->j", flat, flat, dtype=np.float64)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n == 0:
            raise ValueError("no training pixels to standardise the images with")
        mean = self.s1 / self.n
        std = np.sqrt(np.maximum(self.s2 / self.n - mean**2, 0.0))
        return mean, np.where(std > 0, std, 1.0)


def make_scaling(bands: Sequence[str], softening: np.ndarray, mean: np.ndarray, std: np.ndarray, n_train: int) -> dict:
    """The `image_scaling.json` document."""
    return {
        "version": SCALING_VERSION,
        "stretch": "asinh",
        "formula": "(asinh(f_nmgy / softening) - offset) / scale",
        "unit": "nanomaggy (AB zero point 22.5); counts * 10**(-0.4 * (MAGZP - 22.5))",
        "bands": list(bands),
        "softening": [float(v) for v in softening],
        "offset": [float(v) for v in mean],
        "scale": [float(v) for v in std],
        "fitted_on": "train",
        "n_train_images": int(n_train),
    }
