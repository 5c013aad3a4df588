"""Training/inference speed of the VAE and CNN at a chosen size (prints figures; not a test).

    .venv/bin/python bench/bench_train.py [--processed data/processed] [--n 1000 --size 64 --pix 1767]
        [--epochs 2] [--params params.yaml]

With --processed, times the real prepared data; otherwise a synthetic set of the given size.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from img2spec.logs import quiet_tensorflow, setup_logging

quiet_tensorflow()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processed", default=None)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--pix", type=int, default=1767)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    setup_logging("WARNING")

    from img2spec.config import load_params
    from img2spec.io.processed import ProcessedData
    from img2spec.models.inference import encode_spectra, predict_spectra
    from img2spec.models.latents import Latents
    from img2spec.prep.synthetic import write_synthetic_processed
    from img2spec.models.train import train_cnn, train_vae

    import keras

    class EpochTimer(keras.callbacks.Callback):
        """Wall time of every epoch; the first one carries graph tracing, so report the rest."""

        def __init__(self):
            super().__init__()
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.t0)

        def steady(self):
            rest = self.times[1:] or self.times
            return sum(rest) / len(rest)

    params = load_params(args.params)
    if args.processed:
        data = ProcessedData.open(args.processed)
    else:
        tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
        data = ProcessedData.open(write_synthetic_processed(tmp / "processed", n=args.n, n_pix=args.pix,
                                                            size=args.size))
    n_train = len(data.indices("train"))
    print(f"data: {len(data)} objects ({n_train} train), {data.flux.shape[1]} pixels, images {data.images.shape[1:]}")
    vp = params.vae.model_copy(update={"epochs": args.epochs, "kl_warmup_epochs": 0})
    timer = EpochTimer()
    t = time.perf_counter()
    vae = train_vae(vp, data, callbacks=[timer])
    dt = time.perf_counter() - t
    print(f"VAE  {vp.encoder_units}/{vp.decoder_units} L={vp.latent_dim}: total {dt:.1f} s, first epoch "
          f"{timer.times[0]:.1f} s, then {timer.steady():.2f} s/epoch ({1e3 * timer.steady() / n_train:.3f} ms/object)")
    mu, lv = encode_spectra(vae.model.encoder, data.flux, data.ivar, z=data.catalog["z"].to_numpy())
    for loss in ("latent", "spectrum"):
        cp = params.cnn.model_copy(update={"epochs": args.epochs, "loss": loss})
        timer = EpochTimer()
        t = time.perf_counter()
        cnn = train_cnn(cp, data, Latents(mu, lv), vae.model.decoder, callbacks=[timer])
        dt = time.perf_counter() - t
        print(f"CNN  filters={cp.filters} input_pool={cp.input_pool} loss={loss}: total {dt:.1f} s, first epoch "
              f"{timer.times[0]:.1f} s, then {timer.steady():.2f} s/epoch ({1e3 * timer.steady() / n_train:.2f} ms/image)")
    t = time.perf_counter()
    pred = predict_spectra(cnn.model, vae.model.decoder, data.images, n_samples=params.evaluate.n_samples)
    dt = time.perf_counter() - t
    print(f"predict_spectra ({params.evaluate.n_samples} samples): {1e3 * dt / len(data):.2f} ms/object "
          f"(flux {pred.flux.shape})")


if __name__ == "__main__":
    main()
