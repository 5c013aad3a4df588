"""`survey`: packing cutouts into HEALPix shards and predicting them on Dask (owned by survey/)."""

from typing import Literal, get_args

from pydantic import Field

from .base import Section


SurveyStore = Literal["compact", "spectra"]
SURVEY_STORES: tuple[str, ...] = get_args(SurveyStore)


class SurveyParams(Section):
    healpix_order: int = Field(4, ge=0, le=29)
    """HEALPix order of the shard partition (nside = 2**order, nested). Order 4 (nside 16,
    3,072 pixels of ~13.4 deg^2) is the Multimodal Universe's partition: ~1,000 SDSS Main
    Galaxy Sample galaxies per pixel, so tasks are large enough that Dask's per-task cost
    vanishes, while a deep survey's pixel splits into parts of `objects_per_part`."""
    objects_per_part: int = Field(1024, ge=1)
    """Cap on the objects of one shard file (`healpix=<N>/<part>.hdf5`) = one Dask task:
    ~84 MB of 5x64x64 float32 images read at once by a worker (about a second of work)."""
    group_radius_arcsec: float = Field(1.0, gt=0)
    """Single-band files whose image centres lie within this distance (and that share a
    name stem) are bands of one object."""
    n_workers: int = Field(2, ge=1)
    """Dask worker processes of the default LocalCluster."""
    threads_per_worker: int = Field(1, ge=1)
    """Dask threads per worker, and TensorFlow's intra-op threads in each worker
    (n_workers * threads_per_worker should not exceed the cores)."""
    tf_inter_op_threads: int = Field(1, ge=1)
    """TensorFlow inter-op threads per worker: inference is one op chain, so 1 keeps
    workers from oversubscribing the cores."""
    memory_limit: str = "auto"
    """Dask memory limit per worker ('auto' = machine memory / n_workers, or e.g. '2GB')."""
    dashboard_port: int = Field(0, ge=0, le=65535)
    """Port of the Dask dashboard, always bound to 127.0.0.1 (0: any free port)."""
    retries: int = Field(2, ge=0)
    """Dask retries of a failed shard task before it is reported as failed."""
    batch_size: int | None = Field(None, ge=1)
    """Objects per forward pass (None: the bundle's inference batch size)."""
    prefetch: bool = True
    """Each shard task asks the kernel to read ahead the shard that starts as many tasks later as
    the cluster has worker threads (`io.shards.prefetch`): the next shards' reads overlap this
    one's compute instead of stalling a worker on a cold disk."""
    worker_profiling: bool = False
    """Dask's own defaults in the LocalCluster: each worker samples its task's stack every 10 ms for
    the dashboard's Profile page and checks its event loop every 20 ms. False (the default) runs
    the cluster with `survey.task.WORKER_DASK_CONFIG` (no profiler, slower periodic checks), which
    leaves more of each core to the shard tasks; a cluster given by `--scheduler` keeps its own
    config."""
    store: SurveyStore = "compact"
    """What `img2spec survey` writes per shard beside the catalogue: 'compact' (the latent mean and
    1-sigma, the decode redshift and its error, decoded on read by `img2spec.survey.open_survey` /
    `img2spec decode`: ~0.8 KB per galaxy with the catalogue) or 'spectra' (flux and sigma, and a
    rest-frame bundle's rest-frame arrays: ~33 KB per galaxy)."""
