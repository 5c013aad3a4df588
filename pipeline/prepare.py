"""DVC stage `prepare`: clean, resample, normalise and split."""

from _stage import not_implemented, run_stage

if __name__ == "__main__":
    run_stage("prepare", not_implemented(5), __doc__)
