"""Image checks and the stretch used by prepare and by inference."""

from __future__ import annotations

import numpy as np
import pytest

from img2spec.config.prepare import ImageCheckParams
from img2spec.prep.images import (
    asinh_inplace, check_image, copy_bands, make_scaling, preprocess_cutout, preprocess_stack, sky_sigma, to_nanomaggies,
)
from img2spec.prep.synthetic import make_cutout, synthetic_objects

CHECKS = ImageCheckParams()


def _nmgy(offset=(0, 0), seed=0):
    cut = make_cutout(synthetic_objects(1)[0], 64, np.random.default_rng(seed), offset_pix=offset)
    return cut, to_nanomaggies(cut.stack(), [cut.magzp[b] for b in "grizy"])


def test_clean_centred_galaxy_passes():
    _, img = _nmgy()
    assert check_image(img, 0.25, CHECKS) is None


def test_nan_dominated_centre_is_rejected():
    _, img = _nmgy()
    img[28:36, 28:36, 3] = np.nan
    assert check_image(img, 0.25, CHECKS) == "nan_centre"


def test_saturated_centre_is_rejected():
    _, img = _nmgy()
    img[31:33, 31:33, 1] = 10 ** (-0.4 * (CHECKS.saturation_pixel_mag - 1 - 22.5))  # 1 mag brighter
    assert check_image(img, 0.25, CHECKS) == "saturated_centre"


def test_off_centre_source_is_rejected():
    _, img = _nmgy(offset=(0, 10))  # 2.5 arcsec away
    assert check_image(img, 0.25, CHECKS) == "off_centre"


def test_sky_sigma_measures_the_noise():
    cut, img = _nmgy()
    expected = 30.0 * 10 ** (-0.4 * (cut.magzp["r"] - 22.5))  # synthetic sky sigma 30 counts
    assert sky_sigma(img)[1] == pytest.approx(expected, rel=0.1)


def test_preprocess_stack_single_batch_and_cutout_agree():
    cut, img = _nmgy()
    scaling = make_scaling("grizy", np.full(5, 0.01), np.full(5, 1.0), np.full(5, 2.0), 10)
    zp = [cut.magzp[b] for b in "grizy"]
    one = preprocess_stack(cut.stack(), zp, scaling)
    batch = preprocess_stack(np.stack([cut.stack(), cut.stack()]), np.array([zp, zp]), scaling)
    assert one.shape == (64, 64, 5) and one.dtype == np.float32
    assert batch.shape == (2, 64, 64, 5)
    assert np.allclose(batch[1], one) and np.allclose(preprocess_cutout(cut, scaling), one)
    assert np.allclose(one, (np.arcsinh(img / 0.01) - 1.0) / 2.0, atol=1e-5)


def test_preprocess_is_unit_consistent_across_zero_points():
    """The same sky brightness at a different exposure time gives the same network input."""
    cut, _ = _nmgy()
    scaling = make_scaling("grizy", np.full(5, 0.01), np.zeros(5), np.ones(5), 10)
    zp = np.array([cut.magzp[b] for b in "grizy"])
    a = preprocess_stack(cut.stack(), zp, scaling)
    b = preprocess_stack(cut.stack() * 10.0, zp + 2.5, scaling)
    assert np.allclose(a, b, atol=1e-4)


def test_nan_pixels_become_finite_and_bad_shapes_fail():
    cut, _ = _nmgy()
    stack = cut.stack()
    stack[0, 0, :] = np.nan
    scaling = make_scaling("grizy", np.full(5, 0.01), np.zeros(5), np.ones(5), 10)
    assert np.all(np.isfinite(preprocess_stack(stack, [30.0] * 5, scaling)))
    with pytest.raises(ValueError):
        preprocess_stack(stack[..., :4], [30.0] * 4, scaling)


def _reference_preprocess(stack, magzp, scaling):
    """The documented formula, out of place: float64 counts -> nanomaggies, rounded to float32,
    non-finite -> 0, asinh(f / softening), then (x - offset) / scale in float32."""
    factor = 10.0 ** (-0.4 * (np.asarray(magzp, np.float64) - 22.5))
    if factor.ndim == 2:
        factor = factor[:, None, None, :]
    nmgy = (np.asarray(stack, np.float64) * factor).astype(np.float32)
    y = np.where(np.isfinite(nmgy), nmgy, np.float32(0)) / np.asarray(scaling["softening"], np.float32)
    x = np.sign(y) * np.log(np.abs(y) + np.sqrt(np.abs(y) * np.abs(y) + np.float32(1)))
    return (x - np.asarray(scaling["offset"], np.float32)) / np.asarray(scaling["scale"], np.float32)


def test_fast_preprocess_is_bitwise_the_documented_formula():
    """The in-place, row-tiled implementation rounds exactly like the plain formula (so
    images prepared for training and images preprocessed at inference are identical)."""
    rng = np.random.default_rng(3)
    stack = rng.normal(0.0, 50.0, (7, 16, 12, 5)).astype(np.float32)
    stack[0, 0, 0, 0], stack[1, 2, 3, 4], stack[2, 5, 5, 1] = np.nan, np.inf, -np.inf
    zp = rng.uniform(24.0, 32.0, (7, 5))
    scaling = make_scaling("grizy", rng.uniform(0.1, 2.0, 5), rng.normal(size=5), rng.uniform(0.5, 2.0, 5), 7)
    before = stack.copy()
    for s, z in ((stack, zp), (stack, zp[0]), (stack[3], zp[3])):
        got, ref = preprocess_stack(s, z, scaling), _reference_preprocess(s, z, scaling)
        assert got.dtype == np.float32 and np.all(np.isfinite(got))
        assert np.array_equal(got.view(np.uint32), ref.astype(np.float32).view(np.uint32))
    # A non-contiguous input takes the plain path and still agrees.
    view = stack[:, ::2]
    assert np.array_equal(preprocess_stack(view, zp, scaling), _reference_preprocess(view, zp, scaling))
    assert np.array_equal(stack, before, equal_nan=True)  # the caller's array is not modified


def test_float32_asinh_is_within_3e7_of_the_exact_value():
    """The log form used by the stretch against float64 arcsinh, across the range a cutout spans."""
    rng = np.random.default_rng(5)
    y = np.concatenate([rng.normal(0, s, 20000) for s in (1e-3, 1.0, 30.0, 3e4)]).astype(np.float32)
    y[:3] = 0.0, -0.0, 1e-30
    exact = np.arcsinh(y.astype(np.float64))
    got = asinh_inplace(y.copy())
    assert np.all(np.abs(got - exact) <= 3e-7 * np.maximum(1.0, np.abs(exact)))
    big = np.abs(y) > 1e-6  # below, ln(1 + |y|) rounds to 0: absolute, not relative, precision
    assert np.array_equal(np.sign(got[big]), np.sign(y[big])) and np.all(got[y < 0] == -asinh_inplace(-y[y < 0]))
    strided = y.reshape(-1, 4)[:, ::2]  # not contiguous: written back in place
    ref = asinh_inplace(np.ascontiguousarray(strided))
    assert np.array_equal(asinh_inplace(strided), ref) and np.array_equal(y.reshape(-1, 4)[:, ::2], ref)


def test_stack_checks_equal_one_object_at_a_time():
    """check_images on a mixed stack (clean, off-centre, NaN and saturated centres, a NaN border
    that forces nanmedian, more objects than one chunk) gives each object's own verdict."""
    from img2spec.prep.images import CHECK_CHUNK, check_images

    rng = np.random.default_rng(3)
    n = CHECK_CHUNK + 7
    images = []
    for i in range(n):
        offset = (0, 0) if i % 3 else tuple(rng.integers(-14, 15, 2))
        images.append(_nmgy(offset=offset, seed=i)[1])
    stack = np.stack(images)
    stack[5, 26:38, 26:38, 1] = np.nan
    stack[6, 31, 31, 0] = 1e6
    stack[7, 0, 0, 2] = np.nan  # border pixel: this object's sky level needs nanmedian
    single = [check_image(img, 0.25, CHECKS) for img in stack]
    assert check_images(stack, 0.25, CHECKS) == single
    assert {"nan_centre", "saturated_centre", "off_centre", None} <= set(single)


def test_fast_median_and_detection_image_equal_numpys_own_bit_for_bit():
    """The sky-level median (one selection) and the band-by-band detection sum round exactly as
    np.median and np.where(...).sum(axis=-1) do, so the quality cuts keep their verdicts."""
    from img2spec.prep.images import _detection_image, median_lastaxis

    rng = np.random.default_rng(11)
    for m in (1792, 1791, 2, 1):
        values = (rng.standard_normal((9, 5, m)) * rng.uniform(1e-3, 1e3, (9, 5, 1))).astype(np.float32)
        values[0, 0] = 1.0  # all tied
        values[1, 1, : m // 2] = -2.0  # a tied lower half
        assert np.array_equal(median_lastaxis(values).view(np.uint32), np.median(values, axis=-1).view(np.uint32))
    crop = (rng.standard_normal((6, 42, 42, 5)) * rng.uniform(1e-3, 1e3, (6, 1, 1, 5))).astype(np.float32)
    level = rng.standard_normal((6, 5)).astype(np.float32)
    crop[2, 4, 4, 3], crop[3, :, :, 1] = np.nan, np.inf
    ref = np.where(np.isfinite(crop), crop - level[:, None, None, :], np.float32(0)).sum(axis=-1)
    assert np.array_equal(_detection_image(crop, level).view(np.uint32), ref.view(np.uint32))


def test_band_by_band_copy_of_a_moved_view_equals_numpys_copy():
    """`to_nanomaggies` reads band-first shards through a bands-last view: its band-by-band copy
    writes the same bits as np.copyto, and a contiguous or differently shaped input still works."""
    rng = np.random.default_rng(3)
    first = rng.standard_normal((4, 5, 8, 6)).astype(np.float32)
    view = np.moveaxis(first, 1, -1)
    ref, got = np.empty(view.shape, np.float32), np.empty(view.shape, np.float32)
    np.copyto(ref, view)
    copy_bands(got, view)
    np.testing.assert_array_equal(got.view(np.uint32), ref.view(np.uint32))
    contiguous = np.ascontiguousarray(view)
    copy_bands(got, contiguous * 2)
    np.testing.assert_array_equal(got, contiguous * 2)
    zp = rng.uniform(24, 26, (4, 5))
    moved = to_nanomaggies(view, zp, out=np.empty(view.shape, np.float32))
    np.testing.assert_array_equal(moved.view(np.uint32), to_nanomaggies(contiguous, zp).view(np.uint32))
