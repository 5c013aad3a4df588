"""img2spec pack: 5-band and single-band (PS1 cutout service) files -> HEALPix HDF5 shards + pack.json."""

from __future__ import annotations

import json

import numpy as np
from astropy.io import fits

from img2spec import BANDS
from img2spec.config import params_from_dict
from img2spec.io.ps1_cutout import cutout_wcs, write_cutout
from img2spec.io.shards import list_parts, read_cutout_shard
from img2spec.survey.healpix import healpix_pixels
from img2spec.survey.pack import pack
from test_predict_support import EXPTIME, galaxy_cutout


def write_band_file(path, cutout, band, *, wcs: bool = True) -> None:
    """One band of `cutout` as the PS1 fitscut service returns it (primary image, EXPTIME, FPA.FILTER)."""
    img = cutout.data[band]
    header = cutout_wcs(cutout.ra, cutout.dec, img.shape, cutout.pixel_scale).to_header() if wcs else fits.Header()
    header["EXPTIME"] = EXPTIME
    header["HIERARCH FPA.FILTER"] = f"{band}.00000"
    fits.PrimaryHDU(img, header=header).writeto(path)


def test_pack_groups_single_band_files_and_reports_skips(tmp_path):
    rng = np.random.default_rng(3)
    five = tmp_path / "five"
    single = tmp_path / "single"
    single.mkdir()
    multi = [galaxy_cutout(10 + i, rng) for i in range(3)]
    for c in multi:
        write_cutout(five / f"{c.objid}.fits", c)
    missing = galaxy_cutout(20, rng)
    del missing.data["i"]
    write_cutout(five / "missing_band.fits", missing)
    # two objects named '<id>_<band>.fits', one whose i band was never downloaded
    a, b, incomplete = galaxy_cutout(30, rng), galaxy_cutout(31, rng), galaxy_cutout(32, rng)
    for c in (a, b, incomplete):
        for band in BANDS:
            if not (c is incomplete and band == "i"):
                write_band_file(single / f"{c.objid}_{band}.fits", c, band)
    # skycell-style names: two neighbours 40" apart share every file-name stem, told apart by position
    near1, near2 = galaxy_cutout(40, rng), galaxy_cutout(41, rng)
    near2.ra, near2.dec = near1.ra + 40 / 3600, near1.dec
    for k, c in enumerate((near1, near2)):
        for band in BANDS:
            d = single / f"dl{k}"
            d.mkdir(exist_ok=True)
            write_band_file(d / f"rings.v3.skycell.1234.056.stk.{band}.unconv.fits", c, band)
    (single / "junk.fits").write_bytes(b"not fits at all" * 300)

    params = params_from_dict({"survey": {"healpix_order": 4, "objects_per_part": 2}})
    inputs = [five, single, single / "dl0", single / "dl1"]
    report = pack(inputs, tmp_path / "shards", params)

    shards = {}
    for healpix, path in list_parts(tmp_path / "shards"):
        shard = read_cutout_shard(path)
        assert np.all(healpix_pixels(shard.ra, shard.dec, 4) == healpix)
        assert len(shard) <= 2 and shard.bands == BANDS
        for i, oid in enumerate(shard.object_id):
            shards[oid] = (shard, i)
    # every band file of a and b is in one object, pixels equal to the 5-band originals
    for c in (a, b, *multi):
        shard, i = shards[str(c.objid)]
        for k, band in enumerate(BANDS):
            np.testing.assert_array_equal(shard.image_flux[i, k], c.data[band])
        np.testing.assert_allclose(shard.magzp[i], [c.magzp[band] for band in BANDS], rtol=1e-6)
        assert abs(shard.ra[i] - c.ra) < 1e-6 and abs(shard.dec[i] - c.dec) < 1e-6
    stems = [oid for oid in shards if oid.startswith("rings.v3.skycell.1234.056.stk.unconv_")]
    assert len(stems) == 2  # two neighbours, not one object with every band twice
    assert report["n_objects_packed"] == 3 + 2 + 2 == len(shards)
    reasons = {s["file"]: (s["reason"], s["detail"]) for s in report["skipped"]}
    inc = next(f for f, r in reasons.items() if r[0] == "incomplete_band_set")
    assert "['i']" in reasons[inc][1]
    assert len(inc.split(",")) == 4 and all("32_" in f for f in inc.split(","))
    assert "band i missing" in reasons[str(five / "missing_band.fits")][1]
    assert reasons[str(single / "junk.fits")][0] == "corrupt_image"  # the same code predict gives it
    saved = json.loads((tmp_path / "shards" / "pack.json").read_text())
    assert saved["skipped_by_reason"] == {"incomplete_band_set": 1, "missing_band": 1, "corrupt_image": 1}
    assert saved["n_parts"] == len(list_parts(tmp_path / "shards"))

    # repacking the same inputs writes the same shards (same content hashes)
    again = pack(inputs, tmp_path / "shards", params)
    assert [p["content_hash"] for p in again["parts"]] == [p["content_hash"] for p in report["parts"]]


def test_pack_needs_a_position_and_takes_it_from_the_catalogue(tmp_path):
    rng = np.random.default_rng(4)
    c = galaxy_cutout(50, rng)
    d = tmp_path / "in"
    d.mkdir()
    for band in BANDS:
        write_band_file(d / f"{c.objid}.{band}.fits", c, band, wcs=False)
    params = params_from_dict({})
    report = pack([d], tmp_path / "s1", params)
    assert report["n_objects_packed"] == 0 and report["skipped"][0]["reason"] == "no_sky_position"
    cat = tmp_path / "cat.csv"
    cat.write_text(f"objid,ra,dec,z,rKronMag\n{c.objid},{c.ra},{c.dec},0.1,17.5\n")
    report = pack([d], tmp_path / "s2", params, catalogue=cat)
    assert report["n_objects_packed"] == 1
    shard = read_cutout_shard(list_parts(tmp_path / "s2")[0][1])
    assert shard.z[0] == 0.1 and shard.rKronMag[0] == np.float32(17.5)
