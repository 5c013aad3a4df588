"""Which spectral representation keeps the lines and the 4000 A break? (VAL split only.)

Trains each VAE variant on the prepared data's train split (early stopping on val, as the
pipeline does), reconstructs the VAL spectra (encode the observed spectrum, decode at its
catalogue z) and scores the reconstruction the way evaluate scores predictions: D against the
observation, and EW(Halpha), Dn4000, the BPT ratios and classes against the noiseless truth
(mock data). The test split is never read.

    python bench/bench_representation.py --processed data/processed --out reports/representation.json \
        --variant rest16_kl0.1:frame=rest,latent_dim=16,kl_weight=0.1 ...
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from img2spec.config import load_params
from img2spec.evaluate.measurements import measure_methods, score_measurements
from img2spec.io.processed import ProcessedData
from img2spec.metrics import deviation, summarise

DEFAULT_VARIANTS = (
    "observed8:frame=observed,latent_dim=8,kl_weight=1.0",
    "rest8:frame=rest,latent_dim=8,kl_weight=1.0",
    "rest16_kl0.1:frame=rest,latent_dim=16,kl_weight=0.1",
)
QUANTITIES = ("halpha_ew", "dn4000", "hdelta_a", "oiii_hbeta", "nii_halpha")
SCHEMES = ("sf_quiescent", "bpt", "agn")


def parse_variant(text: str) -> tuple[str, dict]:
    """'name:key=value,key=value' -> (name, {key: value}) with numbers and booleans parsed, a+b as a tuple."""
    name, _, spec = text.partition(":")
    update = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        if "+" in value:  # a list: a+b+c
            update[key] = tuple(value.split("+"))
            continue
        if value.lower() in ("true", "false"):
            update[key] = value.lower() == "true"
            continue
        try:
            update[key] = int(value) if value.isdigit() else float(value)
        except ValueError:
            update[key] = value
    return name, update



def variant_section(section, text: str):
    """(name, `section` with the variant's overrides) for a `--variant` 'name:key=value,...', validated
    by the section's schema (a mistyped key or value is an error, not a silent default)."""
    name, update = parse_variant(text)
    current = section.model_dump()
    for key, value in update.items():  # one value for a list field: a list of one
        if isinstance(current.get(key), (list, tuple)) and not isinstance(value, tuple):
            update[key] = (value,)
    return name, type(section).model_validate({**current, **update})

def score_variant(vae_params, data: ProcessedData, mp) -> dict:
    """Train one VAE and score its VAL reconstructions (D and measurements against the truth)."""
    from img2spec.models.inference import decode, decoder_input, encode_spectra
    from img2spec.models.train import train_vae, with_filled_pixels

    t0 = time.perf_counter()
    result = train_vae(vae_params, data)
    val = data.indices("val")
    obs, ivar = np.asarray(data.flux[val], np.float32), np.asarray(data.ivar[val], np.float32)
    z = data.catalog["z"].to_numpy(np.float64)[val]
    decoder = with_filled_pixels(result.model.decoder, result.info["trained_pixels"])
    mu, _ = encode_spectra(result.model.encoder, obs, ivar, z=z)
    recon = decode(decoder, decoder_input(decoder, mu, z))
    truth = None if data.truth_flux is None else np.asarray(data.truth_flux[val], np.float32)
    tables = measure_methods(data.wave, z, data.frame, obs, ivar, {"vae_ceiling": recon}, truth, mp)
    scored = score_measurements(tables, mp)
    out = {"params": vae_params.model_dump(mode="json"), "seconds": round(time.perf_counter() - t0, 1),
           "epochs_run": result.info["epochs_run"], "best_val_loss": result.best_val_loss,
           "mean_deviation": summarise(deviation(recon, obs, ivar))}
    if truth is not None:
        out["mean_deviation_truth"] = summarise(deviation(truth, obs, ivar))
    out["measurements"] = {q: scored["measurements"][q]["vae_ceiling"] for q in QUANTITIES}
    out["classes"] = {s: scored["classes"][s]["vae_ceiling"]["balanced_accuracy"] for s in SCHEMES}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processed", default="data/processed")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="reports/representation.json")
    ap.add_argument("--variant", action="append", help="name:key=value,... over params.yaml's vae section")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    data = ProcessedData.open(args.processed)
    results = {}
    for text in args.variant or DEFAULT_VARIANTS:
        name, vp = variant_section(params.vae, text)
        results[name] = score_variant(vp, data, params.measure)
        r = results[name]
        m = r["measurements"]
        print(f"{name:>16}: D {r['mean_deviation']['mean']:.3f} | EW(Ha) {m['halpha_ew']['bias']:+.2f}/"
              f"{m['halpha_ew']['nmad']:.2f} | Dn4000 {m['dn4000']['bias']:+.3f}/{m['dn4000']['nmad']:.3f} | "
              f"SF {r['classes']['sf_quiescent']:.2f} BPT {r['classes']['bpt']:.2f} AGN {r['classes']['agn']:.2f} | "
              f"{r['epochs_run']} ep {r['seconds']:.0f} s", flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"split": "val", "command": "python bench/bench_representation.py "
                                              + " ".join(argv if argv is not None else sys.argv[1:]),
                                              "variants": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
