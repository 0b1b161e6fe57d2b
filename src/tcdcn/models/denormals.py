"""Denormal (subnormal) float32 weights: count them, flush them to zero, and keep them from coming back.

Why this matters: x86 cores that do not flush denormals in hardware take a micro-code assist on every
multiply with a denormal operand. A network whose weights are mostly denormal runs many times slower
on such a CPU, while its outputs do not depend on them (values below 1.18e-38 contribute nothing at
float32 precision).

Where they come from in training: the filter decay ``filter_decay * ||K||^2`` is an L2 term added to
the loss, and Adam divides every gradient by its own running RMS. A weight whose data gradient is zero
(an input channel that ReLU keeps at zero, a unit that never fires) gets only the decay gradient
``c * w``; Adam normalises it to a step of roughly ``lr * sign(w)`` scaled by the lagging RMS, so the
weight shrinks geometrically, without ever reaching zero, through the whole denormal range. Trainers
therefore run with flush-to-zero on (``enable_flush_to_zero``) and every checkpoint and export is
flushed (``flush_state_dict``, ``flush_array``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..cpu import this_cpu_int8_exact

FLOAT32_TINY = float(np.finfo(np.float32).tiny)  # the smallest normal float32, 1.18e-38
# Read from the bits, not by comparing values: with denormals-are-zero on (enable_flush_to_zero sets
# it for the whole thread, numpy included) a denormal compares equal to zero.
_EXPONENT_BITS = 0x7F800000
_MANTISSA_BITS = 0x007FFFFF


def denormal_mask(array: np.ndarray) -> np.ndarray:
    """True where a float32 array holds a non-zero value below the smallest normal float32."""
    a = np.asarray(array)
    if a.dtype != np.float32:
        return np.zeros(a.shape, dtype=bool)
    bits = np.ascontiguousarray(a).view(np.uint32)
    return ((bits & _EXPONENT_BITS) == 0) & ((bits & _MANTISSA_BITS) != 0)


def count_denormals(arrays: Iterable[np.ndarray]) -> int:
    """Denormal float32 values over ``arrays``."""
    return int(sum(int(denormal_mask(a).sum()) for a in arrays))


def flush_array(array: np.ndarray) -> tuple[np.ndarray, int]:
    """``array`` with its denormal float32 values set to zero (a copy when any), and their count."""
    mask = denormal_mask(array)
    count = int(mask.sum())
    if not count:
        return array, 0
    flushed = np.array(array, copy=True)
    flushed[mask] = 0
    return flushed, count


def flush_state_dict(state_dict: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """A torch state dict with every denormal float32 value set to zero, and how many there were.

    Tensors without denormals are passed through unchanged (no copy)."""
    import torch

    out: dict[str, Any] = {}
    total = 0
    for name, value in state_dict.items():
        if isinstance(value, torch.Tensor) and value.dtype == torch.float32:
            mask = torch.from_numpy(denormal_mask(value.detach().cpu().numpy()))  # same shape as value
            count = int(mask.sum())
            if count:
                value = value.masked_fill(mask.to(value.device), 0.0)
                total += count
        out[name] = value
    return out, total


def zero_fraction(state_dict: Mapping[str, Any]) -> tuple[int, int]:
    """(exactly-zero float values, all float values) over a state dict's float32 tensors."""
    import torch

    zeros = total = 0
    for value in state_dict.values():
        if isinstance(value, torch.Tensor) and value.dtype == torch.float32:
            zeros += int((value == 0).sum())
            total += value.numel()
    return zeros, total


def enable_flush_to_zero() -> bool:
    """Switch torch's flush-to-zero / denormals-are-zero on for this process (SSE3 x86 and ARM); False
    where the CPU does not support it. Process-wide: denormal results anywhere in torch become zero,
    which changes no result at float32 precision that a landmark network could show."""
    import torch

    return bool(torch.set_flush_denormal(True))


def flush_onnx_initializers(onnx_model: Any) -> int:
    """Set every denormal float32 value in an ONNX graph's initializers to zero; returns their count."""
    from onnx import numpy_helper

    total = 0
    for index, tensor in enumerate(onnx_model.graph.initializer):
        array = numpy_helper.to_array(tensor)
        flushed, count = flush_array(array)
        if count:
            onnx_model.graph.initializer[index].CopyFrom(numpy_helper.from_array(flushed, tensor.name))
            total += count
    return total


def onnx_denormal_count(onnx_model: Any) -> int:
    """Denormal float32 values in an ONNX graph's initializers."""
    from onnx import numpy_helper

    return count_denormals(numpy_helper.to_array(t) for t in onnx_model.graph.initializer)


def cpu_session_options(threads: int = 1) -> Any:
    """onnxruntime session options for the package's CPU sessions, with denormals treated as zero and int8
    products computed exactly.

    onnxruntime sets the flush-to-zero / denormals-are-zero state of the thread that builds a session from
    this option, on or off, so one session built without it switches off the flush-to-zero that
    ``enable_flush_to_zero`` turned on for torch in that thread; every session the package builds sets it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1  # the graphs are chains: no parallel branches to run
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    if this_cpu_int8_exact() is False:
        # x86 without VNNI: onnxruntime's uint8 x int8 products saturate in 16 bits; this option runs them as
        # exact uint8 x uint8, so an int8 graph answers as on the CPUs its figures were measured on.
        options.add_session_config_entry("session.x64quantprecision", "1")
    return options
