"""The one error type of every file reader in io/: a file not in the layout its reader expects.

A stage that reads many per-object files turns `FileFormatError` into a counted skip:
`reason` is a stable code for reports (never a message prefix), and the message names
the file and what is wrong or missing. A bad *run* (a missing directory, bad params)
is a different error and stops the stage.
"""

from __future__ import annotations

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
    """
    try:
        info = hdul.fileinfo(len(hdul) - 1)
        return Path(path).stat().st_size != info["datLoc"] + info["datSpan"]
    except (OSError, KeyError, TypeError, IndexError, ValueError):
        return True
