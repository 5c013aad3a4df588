"""DVC stage `evaluate`: metric, baselines and figures."""

from _stage import not_implemented, run_stage

if __name__ == "__main__":
    run_stage("evaluate", not_implemented(6), __doc__)
