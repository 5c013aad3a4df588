"""The one error type of every file reader in io/: a file not in the layout its reader expects.

A stage that reads many per-object files turns `FileFormatError` into a counted skip:
`reason` is a stable code for reports (never a message prefix), and the message names
the file and what is wrong or missing. A bad *run* (a missing directory, bad params)
is a different error and stops the stage.
"""

from __future__ import annotations

import re
from pathlib import Path


class FileFormatError(ValueError):
    """A file is unreadable or not in the expected layout.

    `str(exc)` names the file and the problem; `reason` is a stable snake_case code
    (the subclass default unless given); `path` the file when known.
    """

    default_reason = "bad_file_format"

    def __init__(self, message: str, reason: str | None = None, path: str | Path | None = None) -> None:
        super().__init__(message)
        self.reason = reason or self.default_reason
        self.path = None if path is None else Path(path)

    def __reduce__(self):  # keep reason/path across process boundaries (pickled by worker pools)
        return (type(self), (str(self), self.reason, self.path))


class RunInputError(ValueError):
    """The inputs of a whole run cannot give a result (e.g. every object was dropped); the
    message says why and where the per-object reasons are. Stages stop on it without a traceback."""


def fits_truncated(hdul, path: str | Path) -> bool:
    """True when the FITS file at `path` does not end where its last readable HDU ends.

    astropy drops an incomplete trailing HDU with only a warning, so a truncated
    file would otherwise look like a complete file that lacks that extension.
    Truncated: shorter than its last HDU claims, or followed by the start of a cut-off
    extension (`XTENSION`). Other bytes after the last HDU (padding some tools add) are not,
    and a file whose layout cannot be measured is reported for what is wrong with it.
    """
    try:
        info = hdul.fileinfo(len(hdul) - 1)
        end = info["datLoc"] + info["datSpan"]
        size = Path(path).stat().st_size
        if size <= end:
            return size < end
        with open(path, "rb") as fh:
            fh.seek(end)
            return fh.read(len(EXTENSION_START)) == EXTENSION_START
    except (OSError, KeyError, TypeError, IndexError, ValueError):
        return False


EXTENSION_START = b"XTENSION"
"""The first keyword of every FITS extension header."""


ASTROPY_HINTS = re.compile(r"\s*(If this is really a FITS file[^.]*\.?|[^.]*ignore_missing_(simple|end)=True[^.]*\.?)")
"""Advice astropy appends for its own API users (keyword arguments of fits.open): noise to ours."""


def reader_message(exc: BaseException) -> str:
    """An astropy/OS error as a user-facing detail: its message without astropy's API hints."""
    text = ASTROPY_HINTS.sub("", str(exc)).strip().rstrip(",;")
    return text or type(exc).__name__
