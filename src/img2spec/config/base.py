"""Base class for every params.yaml section: strict, typed, no unknown keys."""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A params.yaml section. Unknown keys are errors, never silent defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
