"""Which runtime runs a bundle's networks fastest on this CPU: TensorFlow (Keras), ONNX (onnxruntime)
or LiteRT (the TFLite interpreter of `ai-edge-litert`, measured only when it is installed).

Setup (not timed): the bundle's networks exported to ONNX (`models.export.export_onnx`, as the
publish stage does) and, when ai-edge-litert is installed, converted with TensorFlow's TFLite
converter (the CNN and the decoder; the linearised sigma graph has TensorFlow-only ops that
LiteRT cannot run, which is recorded). Then one fresh process per runtime at `--threads`
threads: seconds to import the runtime, seconds to load the networks, and milliseconds per
batch of `--batch` objects (median of `--repeats` after one warm-up) for the CNN, the decoder
and the linearised sigma, with the largest |difference| to Keras.

    python bench/bench_runtime.py --bundle models/img2spec --threads 1
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bench_env, machine_facts  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BATCH = 256
REPEATS = 5
SEED = 0


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up: graph build, first allocation
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return round(1e3 * statistics.median(times), 2)


def _inputs(work: Path) -> dict[str, np.ndarray]:
    return {k: v for k, v in np.load(work / "inputs.npz").items()}


def _child(runtime: str, work: Path, threads: int, repeats: int) -> dict[str, Any]:
    """In a fresh process: import, load and per-batch times of one runtime."""
    x = _inputs(work)
    t0 = time.perf_counter()
    if runtime == "onnx":
        from img2spec.models.onnx_runtime import load_exported
        from img2spec.models import inference  # the per-batch code both runtimes share (no TensorFlow here)
        t1 = time.perf_counter()
        cnn, dec = load_exported(work / "bundle", intra_op_threads=threads, inter_op_threads=1)
        net = dec if dec.rest is None else dec.rest
    elif runtime == "tensorflow":
        from img2spec.predict.runtime import size_tensorflow
        size_tensorflow(threads, 1)
        from img2spec.models import inference
        t1 = time.perf_counter()
        cnn, full = inference.load_models(work / "bundle", work / "bundle")[:2]
        rest = inference.rest_decoder(full)
        net = full if rest is None else rest.model
    else:
        from ai_edge_litert.interpreter import Interpreter
        t1 = time.perf_counter()
        cnn_i, dec_i = (Interpreter(str(work / f"{n}.tflite"), num_threads=threads) for n in ("cnn", "decoder"))
        for interp, feeds in ((cnn_i, [x[k] for k in sorted(x) if k.startswith("cnn_")]), (dec_i, [x["latents"]])):
            for d, v in zip(interp.get_input_details(), feeds):
                interp.resize_tensor_input(d["index"], list(v.shape))
            interp.allocate_tensors()
    t2 = time.perf_counter()
    ref = np.load(work / "keras.npz")
    out: dict[str, Any] = {"runtime": runtime, "import_seconds": round(t1 - t0, 3), "load_seconds": round(t2 - t1, 3),
                           "tensorflow_imported": "tensorflow" in sys.modules}
    if runtime == "litert":
        def run(interp, feeds):
            details = interp.get_input_details()
            by_name = sorted(details, key=lambda d: d["name"])  # inputs named after the model's inputs
            for d, v in zip(by_name, feeds):
                interp.set_tensor(d["index"], v)
            interp.invoke()
            return interp.get_tensor(interp.get_output_details()[0]["index"])
        cnn_feeds = [x[k] for k in sorted(x) if k.startswith("cnn_")]
        fns = {"cnn": lambda: run(cnn_i, cnn_feeds), "decoder": lambda: run(dec_i, [x["latents"]])}
    else:
        names = [t.name for t in cnn.inputs]
        feed = {n: x[f"cnn_{n}"] for n in names}
        feed = feed if len(feed) > 1 else feed[names[0]]
        fns = {"cnn": lambda: inference._to_numpy(inference._forward(cnn)(feed)),
               "decoder": lambda: inference.decode(net, x["latents"], batch_size=len(x["latents"])),
               "sigma": lambda: inference.linearised_sigma(net, x["latents"], x["std"])}
    for name, fn in fns.items():
        out[f"{name}_ms_per_batch"] = _median_ms(fn, repeats)
        out[f"{name}_max_abs_diff"] = float(np.max(np.abs(np.asarray(fn()) - ref[name])))
    if runtime == "litert":
        out["sigma_ms_per_batch"] = None  # not convertible: see the module doc
    return out


def setup(bundle: Path, work: Path, batch: int) -> bool:
    """Export (and convert, if LiteRT is installed) the bundle's networks; inputs and Keras outputs.
    Returns whether LiteRT is measured."""
    from img2spec.models import inference
    from img2spec.models.export import EXPORT_FILES, export_onnx

    shutil.copytree(bundle, work / "bundle", ignore=shutil.ignore_patterns(*EXPORT_FILES))
    export_onnx(work / "bundle")
    cnn, full = inference.load_models(work / "bundle", work / "bundle")[:2]
    rest = inference.rest_decoder(full)
    net = full if rest is None else rest.model
    rng = np.random.default_rng(SEED)
    x = {f"cnn_{t.name}": rng.standard_normal((batch, *t.shape[1:])).astype(np.float32) for t in cnn.inputs}
    x["latents"] = rng.standard_normal((batch, int(net.input_shape[-1]))).astype(np.float32)
    x["std"] = (0.3 * np.abs(rng.standard_normal(x["latents"].shape))).astype(np.float32)
    np.savez(work / "inputs.npz", **x)
    feed = {t.name: x[f"cnn_{t.name}"] for t in cnn.inputs}
    feed = feed if len(feed) > 1 else next(iter(feed.values()))
    np.savez(work / "keras.npz", cnn=inference._to_numpy(cnn(feed, training=False)),
             decoder=inference.decode(net, x["latents"]), sigma=inference.linearised_sigma(net, x["latents"], x["std"]))
    if importlib.util.find_spec("ai_edge_litert") is None:
        return False
    import tensorflow as tf

    from img2spec.models.export import _cnn_function, _decoder_function

    for name, fn in (("cnn", _cnn_function(cnn)), ("decoder", _decoder_function(net))):
        conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
        (work / f"{name}.tflite").write_bytes(conv.convert())
    return True


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=REPO / "models" / "img2spec")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=BATCH)
    ap.add_argument("--repeats", type=int, default=REPEATS)
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    ap.add_argument("--child", nargs=2, metavar=("RUNTIME", "WORKDIR"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child[0], Path(args.child[1]), args.threads, args.repeats)))
        return
    work = Path(tempfile.mkdtemp(prefix="bench_runtime_"))
    try:
        litert = setup(args.bundle, work, args.batch)
        rows = []
        for runtime in ("tensorflow", "onnx", *(("litert",) if litert else ())):
            done = subprocess.run([sys.executable, __file__, "--child", runtime, str(work), "--threads",
                                   str(args.threads), "--repeats", str(args.repeats)],
                                  env=bench_env(), capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {"command": f"python bench/bench_runtime.py --threads {args.threads} --batch {args.batch}",
               "machine": machine_facts(), "batch": args.batch, "threads": args.threads, "runtimes": rows}
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
