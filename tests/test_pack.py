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


def _objects(shards) -> dict[str, list[str]]:
    """Object id -> the parts (relative paths) that hold it."""
    found: dict[str, list[str]] = {}
    for _, path in list_parts(shards):
        for oid in read_cutout_shard(path).object_id:
            found.setdefault(str(oid), []).append(path.relative_to(shards).as_posix())
    return found


def test_two_packs_into_one_directory_keep_each_others_parts(tmp_path):
    """Packs of two input sets into one directory (same sky pixels) both keep their parts; a repack
    of one set with another part size replaces only that set's parts; temporaries of a dead writer
    go, those of a live writer stay."""
    import os
    import subprocess

    from img2spec.io.atomic import temp_path

    rng = np.random.default_rng(5)
    sets = {}
    for name, first in (("a", 100), ("b", 200)):
        d = tmp_path / name
        sets[name] = [galaxy_cutout(first + i, rng) for i in range(5)]  # all near one sky position
        for c in sets[name]:
            write_cutout(d / f"{c.objid}.fits", c)
    ids = {name: {str(c.objid) for c in cs} for name, cs in sets.items()}
    shards = tmp_path / "shards"
    params = params_from_dict({"survey": {"healpix_order": 4, "objects_per_part": 2}})
    pack([tmp_path / "a"], shards, params)
    b_report = pack([tmp_path / "b"], shards, params)
    found = _objects(shards)
    assert set(found) == ids["a"] | ids["b"] and all(len(v) == 1 for v in found.values())
    b_parts = {p.relative_to(shards).as_posix(): p.stat().st_mtime_ns for _, p in list_parts(shards)
               if p.relative_to(shards).as_posix() in {q["path"] for q in b_report["parts"]}}
    assert len(b_parts) == 3

    # temporaries: one of a dead writer, one of this (live) process
    pdir = next(shards.glob("healpix=*"))
    dead = subprocess.Popen(["true"])
    dead.wait()
    dead_tmp = temp_path(pdir / "part-x.hdf5", pid=dead.pid)
    live_tmp = temp_path(pdir / "part-y.hdf5", pid=os.getpid())
    dead_tmp.write_bytes(b"partial")
    live_tmp.write_bytes(b"being written")

    a_again = pack([tmp_path / "a"], shards, params_from_dict({"survey": {"healpix_order": 4, "objects_per_part": 3}}))
    found = _objects(shards)
    assert set(found) == ids["a"] | ids["b"] and all(len(v) == 1 for v in found.values())  # no duplicate of a
    assert {v[0] for k, v in found.items() if k in ids["a"]} == {p["path"] for p in a_again["parts"]}
    assert len(a_again["parts"]) == 2
    assert {rel: (shards / rel).stat().st_mtime_ns for rel in b_parts} == b_parts  # b untouched
    assert not dead_tmp.exists() and live_tmp.exists()
