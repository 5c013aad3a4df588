"""DVC stage `train_vae`: train the spectrum VAE."""

from _stage import not_implemented, run_stage

if __name__ == "__main__":
    run_stage("train_vae", not_implemented(6), __doc__)
