"""DVC stage `train_cnn`: train the image CNN (and the PCA + CNN baseline) into models/cnn/."""

from _stage import run_stage

from img2spec.models.stages import train_cnn_stage


def body(params, paths) -> None:
    train_cnn_stage(params, paths)


if __name__ == "__main__":
    run_stage("train_cnn", body, __doc__, tracked=True)
