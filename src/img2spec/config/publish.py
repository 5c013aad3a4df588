"""`publish`: the inference bundle and the MLflow registry (owned by predict/)."""

from .base import Section


class PublishParams(Section):
    model_name: str = "img2spec"
    alias: str = "champion"
