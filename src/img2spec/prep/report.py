"""Counting what was dropped and why: every skipped object is listed (objid, file, reason)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..io.atomic import write_csv, write_json

MAX_INLINE_DROPPED = 200
"""Up to this many dropped objects are listed inside the JSON report; all are in the CSV."""
DROPPED_COLUMNS = ("objid", "file", "reason", "detail")


@dataclass
class DropLog:
    rows: list[dict] = field(default_factory=list)

    def add(self, objid: int, file: str, reason: str, detail: str = "") -> None:
        self.rows.append({"objid": int(objid), "file": str(file), "reason": reason, "detail": detail})

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(r["reason"] for r in self.rows).items()))

    def __len__(self) -> int:
        return len(self.rows)

    def write(self, report_path: Path, csv_path: Path, report: dict) -> dict:
        """Write the CSV of all drops and the JSON report (with the list inline when short)."""
        frame = pd.DataFrame(self.rows, columns=list(DROPPED_COLUMNS))
        write_csv(csv_path, frame)
        report = {**report, "dropped_by_reason": self.counts(), "dropped_csv": str(csv_path)}
        if len(self.rows) <= MAX_INLINE_DROPPED:
            report["dropped"] = self.rows
        else:
            report["dropped"] = self.rows[:MAX_INLINE_DROPPED]
            report["dropped_truncated"] = True
        write_json(report_path, report)
        return report
