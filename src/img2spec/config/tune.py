"""`tune`: the Optuna study (owned by tuning/)."""

from pydantic import Field

from .base import Section


class TuneParams(Section):
    storage: str = "sqlite:///optuna.db"
    """Any RDB URL; the OPTUNA_STORAGE environment variable overrides it."""
    n_trials: int = Field(6, ge=1)
    timeout_s: float = Field(900, gt=0)
