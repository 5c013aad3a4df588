"""DVC stage `fetch_images`: write/fetch 5-band PS1 cutouts."""

from _stage import not_implemented, run_stage

if __name__ == "__main__":
    run_stage("fetch_images", not_implemented(4), __doc__)
