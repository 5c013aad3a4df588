"""DVC stage `train_cnn`: train the image-to-latent CNN."""

from _stage import not_implemented, run_stage

if __name__ == "__main__":
    run_stage("train_cnn", not_implemented(6), __doc__)
