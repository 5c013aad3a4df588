"""DVC stage `select` (named select_candidates.py: `select` would shadow the stdlib module): select candidates (mock: simulate the survey; sdss: SkyServer SQL)."""

from _stage import not_implemented, run_stage

if __name__ == "__main__":
    run_stage("select", not_implemented(4), __doc__)
