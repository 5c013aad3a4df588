"""A hybrid bundle's survey read back from the compact store: objects with and without catalogue
photometry are predicted in separate calls (`predict.photometry.call_groups`); the latent shard
records them as separate decode groups, and decoding them gives the spectra store's bits."""

from __future__ import annotations

import numpy as np
import pandas as pd

from img2spec import BANDS
from img2spec.config import params_from_dict
from test_photoz_hybrid import hybrid_env  # noqa: F401  (the tiny project with a hybrid CNN, as a bundle)


def test_hybrid_decode_groups_give_the_spectra_store(hybrid_env, tmp_path):  # noqa: F811
    from img2spec.io.shards import list_parts, read_latent_shard, read_spectra_shard
    from img2spec.predict.bundle_info import BundleInfo
    from img2spec.survey.pack import pack
    from img2spec.survey.store import decode_predictor, decode_rows
    from img2spec.survey.task import ModelSpec, output_paths, predict_shard

    root, facts, predictor, mags = hybrid_env
    ids = [str(c.objid) for c in facts["cutouts"]]
    cat = tmp_path / "cat.csv"
    frame = pd.DataFrame({"objid": ids, **{f"mag_{b}": mags[:, k] for k, b in enumerate(BANDS)}})
    frame.loc[[0, 3], "mag_y"] = np.nan  # two objects predicted from their images alone
    frame.to_csv(cat, index=False)
    shards = tmp_path / "shards"
    pack([root / "data" / "raw" / "images"], shards, params_from_dict({"survey": {"healpix_order": 0}}), catalogue=cat)
    (_, path), = list_parts(shards)
    rel = path.relative_to(shards).as_posix()
    spec = ModelSpec.of(BundleInfo.from_path(root / "models" / "img2spec"))
    batch = 4  # several batches, some mixing objects with and without photometry
    for store in ("compact", "spectra"):
        assert predict_shard(str(path), rel, str(tmp_path / store), spec, batch, store)["status"] == "done"
    latent = read_latent_shard(output_paths(tmp_path / "compact", rel)[0])
    stored = read_spectra_shard(output_paths(tmp_path / "spectra", rel)[0])
    assert (~latent.photometry_used).sum() == 2
    groups = latent.decode_group
    assert len(np.unique(groups)) > -(-len(latent) // batch)  # a mixed batch is two groups
    decoded = decode_rows(decode_predictor(predictor, latent.attrs, "test"), latent, np.arange(len(latent))[::-1])
    for name in ("flux", "sigma"):
        assert np.array_equal(getattr(decoded, name)[::-1].view(np.uint32), getattr(stored, name).view(np.uint32)), name
