"""Deterministic train/val/test split by a hash of the object id.

Each object gets u = blake2b(decimal objid) mapped to [0, 1); u < train -> train,
u < train + val -> val, else test. The assignment depends on nothing but the id
and the fractions, so adding objects never moves an old one between splits.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

import numpy as np

HASH_BYTES = 8
"""blake2b digest size: 64 bits gives a uniform value on [0, 1) with ample resolution."""


def split_value(objid: int) -> float:
    """Uniform [0, 1) value of one object id (blake2b of its decimal string)."""
    digest = hashlib.blake2b(str(int(objid)).encode("ascii"), digest_size=HASH_BYTES).digest()
    return int.from_bytes(digest, "big") / float(1 << (8 * HASH_BYTES))


def assign_splits(objids: Iterable[int], train_fraction: float, val_fraction: float) -> np.ndarray:
    """Split name ('train' | 'val' | 'test') for each object id."""
    u = np.array([split_value(o) for o in objids], dtype=np.float64)
    out = np.full(u.shape, "test", dtype=object)
    out[u < train_fraction + val_fraction] = "val"
    out[u < train_fraction] = "train"
    return out
