"""What runs a bundle's networks in this process: its exported ONNX graphs or its Keras models.

`load_networks` is the one place that chooses: `Predictor.from_path` calls it, so `img2spec
predict`, the survey workers and the MLflow pyfunc load a bundle the same way. The ONNX
runtime never imports TensorFlow (a survey worker starts in a fraction of a second instead of
~6 s of TensorFlow import); the Keras path sizes TensorFlow's thread pools before its first op.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ..models.onnx_runtime import RUNTIMES, load_exported, read_export_meta
from .bundle import DIRECT_INFO, BundleError

log = logging.getLogger(__name__)


def check_runtime(runtime: str) -> str:
    """`runtime` if it is one of `RUNTIMES`, else a ValueError naming them."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    return runtime


def size_tensorflow(intra: int, inter: int) -> tuple[int, int]:
    """Size TensorFlow's thread pools of this process (only possible before it runs an op);
    returns the (intra-op, inter-op) threads it runs with (0: TensorFlow's default, all cores)."""
    from ..logs import import_tensorflow

    tf = import_tensorflow()  # quiet: no CUDA probe noise on a CPU-only machine

    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(intra))
        tf.config.threading.set_inter_op_parallelism_threads(int(inter))
    except RuntimeError:  # already initialised in this process (e.g. the client ran a model)
        log.debug("TensorFlow thread pools already fixed in process %d", os.getpid())
    return (tf.config.threading.get_intra_op_parallelism_threads(),
            tf.config.threading.get_inter_op_parallelism_threads())


def load_networks(bundle: str | Path, runtime: str,
                  threads: tuple[int, int] | None = None) -> tuple[Any, Any, tuple[int, int]]:
    """(cnn, decoder, (intra-op, inter-op) threads) of the bundle on `runtime`.

    `threads` None leaves the runtime's default (all cores). BundleError when `runtime` is
    'onnx' and the bundle ships no exported graphs.
    """
    bundle = Path(bundle)
    check_runtime(runtime)
    if runtime == "onnx":
        try:
            if read_export_meta(bundle) is None:
                raise FileNotFoundError("no exported graphs")
            intra, inter = threads or (0, 0)
            cnn, decoder = load_exported(bundle, intra_op_threads=intra, inter_op_threads=inter)
        except (FileNotFoundError, ValueError, KeyError) as exc:
            raise BundleError(f"{bundle}: cannot run on onnx ({exc}); rebuild the bundle with "
                              "publish.runtime: onnx, or choose runtime 'tensorflow'") from None
        return cnn, decoder, (int(intra), int(inter))
    from ..logs import import_tensorflow

    import_tensorflow()  # before Keras: no CUDA probe noise on a CPU-only machine
    used = size_tensorflow(*threads) if threads is not None else (0, 0)
    from ..models.inference import load_models

    cnn, decoder = load_models(bundle, bundle)[:2]
    return cnn, decoder, used


def load_fusion(bundle: str | Path, manifest: dict[str, Any], runtime: str, threads: tuple[int, int],
                measure_params: Any) -> Any:
    """The bundle's `models.fusion.Fusion` on `runtime` (its exported direct heads or its Keras
    direct model), None for a bundle that does not fuse (`inference.fusion` null or absent)."""
    settings = manifest["inference"].get("fusion")
    if not settings:
        return None
    import json

    from ..models.fusion import DirectHeads, Fusion

    bundle = Path(bundle)
    info = json.loads((bundle / DIRECT_INFO).read_text())
    joint = None
    if runtime == "onnx":
        from ..models.onnx_runtime import load_exported_direct, load_exported_joint

        net = load_exported_direct(bundle, intra_op_threads=threads[0], inter_op_threads=threads[1])
        if net is None:
            raise BundleError(f"{bundle}: bundle.json fuses with the direct model but onnx.json exports none; "
                              "rebuild the bundle, or choose runtime 'tensorflow'")
        heads = DirectHeads.of(net, info)
        joint = load_exported_joint(bundle, intra_op_threads=threads[0], inter_op_threads=threads[1])
    else:
        from ..models.direct import load_direct_heads

        heads = load_direct_heads(bundle)
    return Fusion(heads, tuple(settings["quantities"]), float(settings["weight"]), int(settings["iterations"]),
                  measure_params, classes=bool(settings.get("classes", False)), joint=joint)
