"""The evaluation table as Markdown, rendered from `metrics/evaluate.json` (for the README).

The renderer lives in `img2spec.docs` (one definition of each label and table); these names
stay importable from here for the evaluate stage and its figures.
"""

from __future__ import annotations

from ..docs import METHOD_LABELS, REDSHIFT_LABELS, SIGNIFICANT_SEM, TAIL_KEY, calibration_verdict
from ..docs import evaluation_table as markdown_table

__all__ = ["METHOD_LABELS", "REDSHIFT_LABELS", "SIGNIFICANT_SEM", "TAIL_KEY", "calibration_verdict", "markdown_table"]
