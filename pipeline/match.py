"""DVC stage `match`: match spectra and photometry on RA/Dec."""

from _stage import run_stage

from img2spec.prep.match import match

if __name__ == "__main__":
    run_stage("match", match, __doc__)
