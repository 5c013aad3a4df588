"""Lazy row access to the memmapped prepared arrays (evaluate reads only the rows it scores)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LOAD_CHUNK = 2048
"""Rows per read when a split is loaded into memory."""


@dataclass
class RowView:
    """Lazy rows of a memmapped array: slicing reads only the requested rows."""

    array: np.ndarray
    rows: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.array.shape[1:])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item):
        return np.asarray(self.array[self.rows[item]])


def load_rows(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Catalogue `rows` of a (memmapped) array as float32 in memory, read in chunks."""
    return np.concatenate([np.asarray(array[rows[s:s + LOAD_CHUNK]], np.float32)
                           for s in range(0, len(rows), LOAD_CHUNK)]) if len(rows) else np.zeros((0, *array.shape[1:]), np.float32)
