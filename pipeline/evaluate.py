"""DVC stage `evaluate`: the metric on the test split for the CNN and every baseline, figures."""

from _stage import run_stage

from img2spec.evaluate.stage import evaluate_stage


def body(params, paths) -> None:
    evaluate_stage(params, paths)


if __name__ == "__main__":
    run_stage("evaluate", body, __doc__, tracked=True)
