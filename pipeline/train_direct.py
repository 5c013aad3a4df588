"""DVC stage `train_direct`: the same image CNN trained to predict the spectral measurements and
classes directly (the bound of what the images know) into models/direct/."""

from _stage import run_stage

from img2spec.models.direct import train_direct_stage


def body(params, paths) -> None:
    train_direct_stage(params, paths)


if __name__ == "__main__":
    # Not tracked here: the stage opens its MLflow run itself, only when cnn.train_direct trains something.
    run_stage("train_direct", body, __doc__)
