"""DVC stage `fetch_spectra`: write/fetch SDSS spec-*.fits."""

from _stage import not_implemented, run_stage

if __name__ == "__main__":
    run_stage("fetch_spectra", not_implemented(4), __doc__)
