"""DVC stage `fetch_images`: write/fetch 5-band PS1 cutouts."""

from _stage import run_stage

from img2spec.sources import run_source_stage

if __name__ == "__main__":
    run_stage("fetch_images", lambda params, paths: run_source_stage("fetch_images", params, paths), __doc__)
