"""DVC stage `encode`: encode every spectrum into VAE latents (data/latents/)."""

from _stage import run_stage

from img2spec.models.stages import encode_stage


def body(params, paths) -> None:
    encode_stage(params, paths)


if __name__ == "__main__":
    run_stage("encode", body, __doc__)
