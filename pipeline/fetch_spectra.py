"""DVC stage `fetch_spectra`: write/fetch SDSS spec-*.fits."""

from _stage import run_stage

from img2spec.sources import run_source_stage

if __name__ == "__main__":
    run_stage("fetch_spectra", lambda params, paths: run_source_stage("fetch_spectra", params, paths), __doc__)
