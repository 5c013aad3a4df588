"""A study-wide trial budget shared by every worker, exact under concurrency.

`tune.<part>.n_trials` is the total number of trials of a study, over all workers on
all machines and over reruns. A worker claims the next trial by taking a lock,
counting the study's live trials and creating the new trial before letting go, so
two workers can never both create trial N. The lock is a PostgreSQL advisory lock
(shared by every machine using the database) or, for SQLite, an flock on a file
beside the database (SQLite is single-machine anyway). Other databases get no lock:
a burst of workers may then overshoot the budget by at most (workers - 1).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
from pathlib import Path

from optuna.trial import TrialState

log = logging.getLogger(__name__)

#: States that use up the budget. FAIL does not: a crashed trial is replaced (a cap on
#: consecutive failures stops a worker that fails every trial).
COUNTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


def lock_key(study_name: str) -> int:
    """A stable signed 64-bit advisory-lock key for a study name."""
    digest = hashlib.sha1(f"img2spec-tune:{study_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class TrialBudget:
    """Claim trials of one study under a storage-wide lock."""

    def __init__(self, storage_url: str, study_name: str, n_trials: int) -> None:
        self.url = storage_url
        self.study_name = study_name
        self.n_trials = n_trials
        self._engine = None
        self._conn = None
        self._file = None
        self._held = False

    # -- lock primitives -------------------------------------------------
    def _acquire(self) -> None:
        if self.url.startswith("postgresql"):
            import sqlalchemy as sa

            if self._conn is None:
                self._engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
                self._conn = self._engine.connect()
            self._conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": lock_key(self.study_name)})
            self._conn.commit()
        elif self.url.startswith("sqlite:///") and ":memory:" not in self.url:
            db = Path(self.url[len("sqlite:///"):])
            self._file = open(db.with_name(f".{db.name}.{lock_key(self.study_name) & 0xFFFFFFFF:08x}.lock"), "a")
            fcntl.flock(self._file, fcntl.LOCK_EX)
        else:
            log.warning("tune: no cross-worker lock for %s; parallel workers may overshoot n_trials", self.url)
        self._held = True

    def release(self) -> None:
        """Let the next worker claim (idempotent)."""
        if not self._held:
            return
        self._held = False
        if self._conn is not None:
            import sqlalchemy as sa

            self._conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key(self.study_name)})
            self._conn.commit()
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def close(self) -> None:
        self.release()
        if self._conn is not None:
            self._conn.close()
            self._engine.dispose()
            self._conn = self._engine = None

    # -- budget ----------------------------------------------------------
    def used(self, study) -> int:
        return len(study.get_trials(deepcopy=False, states=COUNTED_STATES))

    def acquire_if_left(self, study) -> bool:
        """Take the lock if the study still has budget; the caller must create the trial and
        then call `release()`. Returns False (lock not held) when the budget is used up."""
        self._acquire()
        try:
            left = self.used(study) < self.n_trials
        except BaseException:
            self.release()
            raise
        if not left:
            self.release()
        return left
