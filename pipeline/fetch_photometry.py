"""DVC stage `fetch_photometry`: write/fetch PS1 catalogue photometry."""

from _stage import run_stage

from img2spec.sources import run_source_stage

if __name__ == "__main__":
    run_stage("fetch_photometry", lambda params, paths: run_source_stage("fetch_photometry", params, paths), __doc__)
