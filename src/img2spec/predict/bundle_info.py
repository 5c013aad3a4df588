"""A verified bundle known by its manifest alone: no TensorFlow, no Keras.

`img2spec survey`'s client only hands the bundle to its Dask workers (path, hash, inference
options) and describes it in survey.json; loading the networks there cost ~8 s of TensorFlow
import and Keras load before the cluster even started. `BundleInfo` is that client-side view;
`Predictor` adds the loaded networks to the same `ManifestView` properties.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .bundle import BundleError, read_manifest, verify_bundle

MLFLOW_URI_PREFIXES = ("models:/", "runs:/", "mlflow-artifacts:/")


class ManifestView:
    """Properties read from a bundle's manifest (`self.manifest`, as `read_manifest` returns it)."""

    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def bundle_hash(self) -> str:
        return str(self.manifest["bundle_hash"])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.manifest["input"]["shape"])  # type: ignore[return-value]

    @property
    def frame(self) -> str:
        return str(self.manifest["output"].get("frame", "observed"))

    @property
    def sigma_method(self) -> str:
        """'linearised' or 'sampled' (bundles made before the choice existed sampled)."""
        return str(self.manifest["inference"].get("sigma_method", "sampled"))

    @property
    def sigma_scale(self) -> float:
        """Calibration factor on sigma fitted by the evaluate stage for `sigma_method` (1.0 for older bundles)."""
        return float(self.manifest["inference"].get("sigma_scale", 1.0))

    @property
    def sigma_scale_given_z(self) -> float:
        """The factor for spectra decoded at a user's z (their sigma holds no redshift term); older
        bundles: `sigma_scale`."""
        return float(self.manifest["inference"].get("sigma_scale_given_z", self.sigma_scale))

    @property
    def class_priors(self) -> dict[str, list[float]] | None:
        """Class priors of the posterior class decision, fitted on val (`models.class_draws.decide`);
        None for older bundles (the plain most probable class)."""
        return self.manifest["inference"].get("class_priors")

    @property
    def z_err_scale(self) -> float:
        """Photo-z error factor fitted on val (with the catalogue photometry of a hybrid CNN); 1.0 if none."""
        return float(self.manifest["inference"].get("z_err_scale", 1.0))

    @property
    def z_err_scale_images_only(self) -> float:
        """The hybrid CNN's photo-z error factor on images alone (`z_err_scale` for an images-only CNN)."""
        return float(self.manifest["inference"].get("z_err_scale_images_only", self.z_err_scale))

    @property
    def photometry_bands(self) -> tuple[str, ...] | None:
        """Bands of the catalogue magnitudes a hybrid CNN takes (in this order); None: images only."""
        phot = self.manifest["input"].get("photometry")
        return tuple(phot["bands"]) if phot else None

    @property
    def default_runtime(self) -> str:
        """What runs the networks by default: 'onnx' for a bundle that ships exported graphs
        (`publish.runtime`), 'tensorflow' (its Keras models) otherwise and for older bundles."""
        return str(self.manifest["inference"].get("runtime", "tensorflow"))

    @property
    def n_samples(self) -> int:
        return int(self.manifest["inference"]["n_samples"])

    @property
    def batch_size(self) -> int:
        return int(self.manifest["inference"]["batch_size"])

    @property
    def seed(self) -> int:
        return int(self.manifest["inference"]["seed"])


def _check_bundle_dir(path: str | Path, *, verify: bool = True) -> dict[str, Any]:
    """The manifest of the local bundle directory `path`, every file checked against it unless verify=False."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(
            f"{path}: bundle directory not found (get one with `dvc pull {path}`, `dvc repro publish`, "
            "`--rev <tag>` or an MLflow URI such as models:/img2spec@champion)"
        )
    manifest = read_manifest(path)
    if verify:
        verify_bundle(path, manifest)
    return manifest


def locate_bundle(model: str | Path, *, rev: str | None = None,
                  repo: str | None = None) -> tuple[Path, dict[str, str] | None]:
    """(local directory, provenance) of `model`: `models:/...`/`runs:/...` from MLflow, a DVC path at
    `rev`/`repo`, else a local path (provenance None: the path itself)."""
    text = str(model)
    if text.startswith(MLFLOW_URI_PREFIXES):
        from .loaders import fetch_mlflow_bundle

        return fetch_mlflow_bundle(text)
    if rev is not None or repo is not None:
        from .loaders import fetch_dvc_bundle

        return fetch_dvc_bundle(rev=rev, repo=repo, path=text)
    return Path(text), None


@dataclass(frozen=True)
class BundleInfo(ManifestView):
    """A local, verified bundle: its directory, manifest and where it came from."""

    bundle_dir: Path
    manifest: dict[str, Any]
    provenance: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_path(cls, path: str | Path, *, verify: bool = True,
                  provenance: dict[str, str] | None = None) -> "BundleInfo":
        """The bundle in the local directory `path` (checks every file's sha256 unless verify=False)."""
        path = Path(path)
        manifest = _check_bundle_dir(path, verify=verify)
        return cls(path, manifest, {"source": "path", "uri": str(path.resolve()), **(provenance or {})})

    @classmethod
    def load(cls, model: str | Path, *, rev: str | None = None, repo: str | None = None) -> "BundleInfo":
        """As `Predictor.load` (MLflow URI, DVC path at `rev`, local path), without loading the networks."""
        path, provenance = locate_bundle(model, rev=rev, repo=repo)
        return cls.from_path(path, provenance=provenance)
