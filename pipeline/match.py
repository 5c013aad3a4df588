"""DVC stage `match`: match spectra and photometry on RA/Dec."""

from _stage import not_implemented, run_stage

if __name__ == "__main__":
    run_stage("match", not_implemented(5), __doc__)
