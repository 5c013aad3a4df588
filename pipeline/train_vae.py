"""DVC stage `train_vae`: train the spectrum VAE into models/vae/."""

from _stage import run_stage

from img2spec.models.stages import train_vae_stage


def body(params, paths) -> None:
    train_vae_stage(params, paths)


if __name__ == "__main__":
    run_stage("train_vae", body, __doc__, tracked=True)
