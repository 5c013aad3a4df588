"""DVC stage `fetch_photometry`: write/fetch PS1 catalogue photometry."""

from _stage import not_implemented, run_stage

if __name__ == "__main__":
    run_stage("fetch_photometry", not_implemented(4), __doc__)
