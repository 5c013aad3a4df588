"""DVC stage `publish`: build the inference bundle models/img2spec/ and register it in MLflow."""

from _stage import run_stage

from img2spec.predict.publish import publish

if __name__ == "__main__":
    run_stage("publish", publish, __doc__, tracked=True)
