"""DVC stage `prepare`: clean, resample, normalise and split."""

from functools import partial

from _stage import run_stage

from img2spec.prep.prepare import prepare

if __name__ == "__main__":
    run_stage("prepare", partial(prepare, track=True), __doc__, tracked=True)
