"""DVC stage `select` (named select_candidates.py: `select` would shadow the stdlib module): select candidates (mock: simulate the survey; sdss: SkyServer SQL)."""

from _stage import run_stage

from img2spec.sources import run_source_stage

if __name__ == "__main__":
    run_stage("select", lambda params, paths: run_source_stage("select", params, paths), __doc__)
