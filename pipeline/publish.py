"""DVC stage `publish`: build and register the inference bundle."""

from _stage import not_implemented, run_stage

if __name__ == "__main__":
    run_stage("publish", not_implemented(8), __doc__)
