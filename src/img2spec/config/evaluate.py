"""`evaluate`: metric, baselines and figures (owned by evaluate/)."""

from pydantic import Field

from .base import Section


class EvaluateParams(Section):
    knn_neighbours: int = Field(10, ge=1)
    n_example_plots: int = Field(3, ge=0)
