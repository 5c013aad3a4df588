"""Chunked `.npy` writing through `np.lib.format.open_memmap`.

Rows are written a chunk at a time through a short-lived memory map, so the
writer's resident memory never holds more than one chunk of an array that may be
several GiB. Because dropped objects are only known after processing, files are
created for the maximum row count and shrunk in place at the end (the header's
shape is rewritten at the same length and the file truncated).
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
from numpy.lib import format as npformat


def create_npy(path: Path, shape: tuple[int, ...], dtype: str = "float32") -> None:
    """Create a zero-filled (sparse) .npy file of `shape`."""
    if shape[0] == 0:  # a zero-length file cannot be memory-mapped
        np.save(path, np.zeros(shape, dtype))
        return
    arr = npformat.open_memmap(path, mode="w+", dtype=np.dtype(dtype), shape=shape)
    del arr


def write_rows(path: Path, start: int, rows: np.ndarray) -> None:
    """Write `rows` at row `start` of an existing .npy file."""
    if len(rows) == 0:
        return
    arr = npformat.open_memmap(path, mode="r+")
    arr[start:start + len(rows)] = rows
    arr.flush()
    del arr


def _header_span(fh) -> tuple[int, int, dict]:
    """(start of the header dict, data offset, header dict) of an open .npy file."""
    version = npformat.read_magic(fh)
    start = fh.tell() + (2 if version == (1, 0) else 4)
    fh.seek(start)
    data_at = None
    text = b""
    while not text.endswith(b"\n"):
        chunk = fh.read(64)
        if not chunk:
            raise ValueError("unterminated .npy header")
        text += chunk
        if b"\n" in text:
            text = text[: text.index(b"\n") + 1]
    data_at = start + len(text)
    header = ast.literal_eval(text.decode("latin1").strip())
    return start, data_at, header


def shrink_npy(path: Path, n_rows: int) -> None:
    """Keep the first `n_rows` rows of a C-ordered .npy file, in place."""
    with open(path, "r+b") as fh:
        start, data_at, header = _header_span(fh)
        shape = tuple(header["shape"])
        if header["fortran_order"] or not shape or n_rows > shape[0]:
            raise ValueError(f"{path}: cannot shrink {shape} to {n_rows} rows")
        new_shape = (n_rows,) + shape[1:]
        text = repr({"descr": header["descr"], "fortran_order": False, "shape": new_shape})
        width = data_at - start
        if len(text) + 1 > width:
            raise ValueError(f"{path}: new header longer than the old one")
        fh.seek(start)
        fh.write((text + " " * (width - len(text) - 1) + "\n").encode("latin1"))
        row_bytes = np.dtype(header["descr"]).itemsize * int(np.prod(shape[1:], dtype=np.int64))
        fh.truncate(data_at + n_rows * row_bytes)
