"""A decoder as a non-linear body and a linear tail: flux and linearised sigma of any pixel subset.

Our decoders end in linear layers (the wide Dense output layer, `layers.FillPixels`), so the
spectrum is `body(x) @ kernel + bias` with the tail folded into one (H, P) matrix. Splitting
there lets the tail run in numpy on exactly the pixels asked for: the survey's catalogue
measures a few hundred rest-frame pixels (its line and index windows) of 2,241, and the
per-pixel sigma, `sqrt(sum_l (J_l std_l)^2)` over the latent directions l, costs one tail row
per direction per object. The body's Jacobian-vector products (`body_jvp`) come from whatever
runs the body: TensorFlow's forward-mode autodiff (`inference.split_decoder`) or the bundle's
exported graph of it (`onnx_runtime`), so both runtimes share this tail.

This module imports only numpy.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator

import numpy as np

Body = Callable[[np.ndarray], np.ndarray]
"""(B, W) decoder inputs -> (B, H) the body's output (float32)."""
BodyJvp = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(B, W) inputs x, (B, D) std, D <= W -> (B, D, H): the body's Jacobian-vector products at x along
std_d e_d, one per direction d (the first D inputs)."""
BodyVjp = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""(B, W) inputs x, (B, D) std, (B, Q, H) covectors c -> (B, Q, D): `sum_h c_qh d body_h / d x_d std_d`,
the body's vector-Jacobian products (reverse mode) on the same directions."""


@dataclass(frozen=True)
class SplitDecoder:
    """`flux = body(x) @ kernel + bias`; `kernel` None: the body's output is the spectrum itself."""

    body: Body
    body_jvp: BodyJvp
    kernel: np.ndarray | None
    """(H, P) float32: the decoder's linear tail applied to the identity (its bias dropped)."""
    bias: np.ndarray | None
    """(P,) float32: the tail applied to a zero body output."""
    width: int
    """P, the number of output pixels."""
    blas_threads: int = 0
    """Threads of the numpy (BLAS) tail; 0: the BLAS default. A matrix product's last bits depend on
    its thread count, so a reader that decodes stored latents again sets the writer's."""
    body_vjp: BodyVjp | None = None
    """The body's vector-Jacobian products (None: `jacobian_dot` contracts the JVPs instead)."""

    def blas_limit(self) -> ContextManager:
        """`blas_threads` BLAS threads in this process while the context is open (0: BLAS's own);
        shared by threads decoding at once (`shared_blas_limit`)."""
        if self.blas_threads <= 0:
            return contextlib.nullcontext()
        return shared_blas_limit(self.blas_threads)

    def _tail(self, columns: np.ndarray | None) -> tuple[np.ndarray | None, np.ndarray | None]:
        if self.kernel is None or columns is None:
            return self.kernel, self.bias
        return np.ascontiguousarray(self.kernel[:, columns]), self.bias[columns]

    def flux(self, x: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
        """(B, W) inputs -> (B, P) flux, or (B, len(columns)) of those pixels only."""
        hidden = np.asarray(self.body(np.ascontiguousarray(x, np.float32)), np.float32)
        kernel, bias = self._tail(columns)
        if kernel is None:
            return hidden if columns is None else hidden[:, columns]
        with self.blas_limit():
            return hidden @ kernel + bias

    def linear_map(self, columns: np.ndarray, matrix: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """x (B, W) -> (B, M) float64 `flux(x, columns) @ matrix` for a (C, M) `matrix` on the pixels
        `columns` (C,): the matrix folded into the tail once, so each call costs M tail columns, not C."""
        matrix = np.asarray(matrix, np.float64)
        if self.kernel is None:  # the body's output is the spectrum
            return lambda x: np.asarray(self.body(np.ascontiguousarray(x, np.float32)), np.float64)[:, columns] @ matrix
        kernel = self.kernel[:, columns].astype(np.float64) @ matrix
        bias = self.bias[columns].astype(np.float64) @ matrix

        def apply(x: np.ndarray) -> np.ndarray:
            hidden = np.asarray(self.body(np.ascontiguousarray(x, np.float32)), np.float64)
            with self.blas_limit():
                return hidden @ kernel + bias
        return apply

    def jacobian(self, x: np.ndarray, std: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
        """(B, D, P) derivatives `dF/dx_d std_d` at `x` (B, W) along the first D = std.shape[1] inputs
        (or on the `columns` only): the body's Jacobian-vector products through the tail."""
        x = np.asarray(x, np.float32)
        std = np.asarray(std, np.float32)
        b, d = std.shape
        n_out = self.width if columns is None else len(columns)
        if b == 0:
            return np.zeros((0, d, n_out), np.float32)
        jvp = np.asarray(self.body_jvp(x, std), np.float32).reshape(b * d, -1)
        kernel, _ = self._tail(columns)
        with self.blas_limit():
            jvp = jvp @ kernel if kernel is not None else (jvp if columns is None else jvp[:, columns])
        return jvp.reshape(b, d, n_out)

    def jacobian_dot(self, x: np.ndarray, std: np.ndarray, columns: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """(B, Q, D) `sum_c weights[b, q, c] dF_c/dx_d std_d` over the pixels `columns` (C,), for
        (B, Q, C) `weights` (e.g. the gradients of Q measurements): `jacobian` contracted, with the
        weights taken through the tail first. With fewer covectors than directions (Q < D) and a
        `body_vjp`, the Q pulled-back weights go through the body in reverse mode: Q rows per
        object instead of the D Jacobian-vector products."""
        b, d = np.asarray(std).shape
        w = np.asarray(weights, np.float32)
        if b == 0:
            return np.zeros((0, w.shape[1], d), np.float32)
        x, std = np.asarray(x, np.float32), np.asarray(std, np.float32)
        kernel, _ = self._tail(columns)
        reverse = self.body_vjp is not None and w.shape[1] < d
        if kernel is None and not reverse:  # the body's output is the spectrum: its columns only
            return np.einsum("bqc,bdc->bqd", w, np.asarray(self.body_jvp(x, std), np.float32)[:, :, columns])
        if kernel is None:  # the weights on the spectrum's columns, as the body's covectors
            pulled = np.zeros((b, w.shape[1], self.width), np.float32)
            pulled[:, :, columns] = w
        else:
            with self.blas_limit():
                pulled = (w.reshape(-1, w.shape[2]) @ kernel.T).reshape(b, w.shape[1], -1)  # (B, Q, H)
        if reverse:
            return np.asarray(self.body_vjp(x, std, pulled), np.float32)
        return np.einsum("bdh,bqh->bqd", np.asarray(self.body_jvp(x, std), np.float32), pulled)

    def sigma(self, x: np.ndarray, std: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
        """Delta-method 1-sigma `sqrt(sum_l (dF/dx_l std_l)^2)` at `x` (B, W) -> (B, P) (or the `columns`).

        `std` (B, D), D <= W: the 1-sigma of the first D inputs, the directions propagated (a
        rest-frame decoder's last input, z, is not one: its spread enters by marginalisation).
        """
        jac = self.jacobian(x, std, columns)
        return np.sqrt(np.einsum("bdp,bdp->bp", jac, jac))


_BLAS_LOCK = threading.Lock()
_BLAS_HOLD: dict[str, Any] = {"holders": 0, "limiter": None, "threads": None}
"""The process's BLAS limit while any `shared_blas_limit` is open: how many hold it, its threadpoolctl limiter."""


@contextlib.contextmanager
def shared_blas_limit(threads: int) -> Iterator[None]:
    """BLAS limited to `threads` threads while any thread is inside: the first to enter sets it,
    the last to leave restores the count from before. A plain threadpoolctl limit restores on exit
    whatever it found, so with decodes on several threads one could lift the limit under another's
    matrix product (and change its last bits). Threads asking for another count while one is held
    run under the held one (a warning: their last bits may differ). Enter it first in the thread
    that starts the others (`inference.hold_blas_threads`): this OpenBLAS ignores a count set from
    another thread once the first has set one, so the threads should join a held count, not set it."""
    with _BLAS_LOCK:
        if _BLAS_HOLD["holders"] == 0:
            _BLAS_HOLD["limiter"] = _blas_controller().limit(limits=threads, user_api="blas")
            _BLAS_HOLD["threads"] = threads
        elif _BLAS_HOLD["threads"] != threads:
            warnings.warn(f"BLAS held at {_BLAS_HOLD['threads']} threads by a concurrent decode; "
                          f"this one asked for {threads}", RuntimeWarning, stacklevel=3)
        _BLAS_HOLD["holders"] += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_HOLD["holders"] -= 1
            if _BLAS_HOLD["holders"] == 0:
                _BLAS_HOLD["limiter"].restore_original_limits()
                _BLAS_HOLD["limiter"] = _BLAS_HOLD["threads"] = None


@functools.lru_cache(maxsize=1)
def _blas_controller():
    """One threadpoolctl controller per process: finding the loaded BLAS libraries costs ~0.4-4 ms
    (`threadpool_limits` does it on every call), a limit through the controller ~30 us."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()
