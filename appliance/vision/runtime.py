"""One thin wrapper over whichever TFLite interpreter is installed.

ai-edge-litert (tflite-runtime's successor, the same Interpreter API) where it has wheels
(x86_64, aarch64): its XNNPACK kernels run our int8 models several times faster and its
thread pool holds up under load. tflite-runtime 2.14 for the rest (32-bit Pi OS). The
device never imports TensorFlow.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class ModelError(RuntimeError):
    """A model file is missing, corrupt or does not match its card."""


RUNTIMES = ("ai_edge_litert", "tflite_runtime")  # preferred first
# Names one of RUNTIMES when both are installed (a comparison, a benchmark); unset: the
# first one that imports.
RUNTIME_ENV = "APPLIANCE_TFLITE_RUNTIME"


def interpreter_class() -> Any:
    wanted = os.environ.get(RUNTIME_ENV, "").strip()
    if wanted and wanted not in RUNTIMES:
        raise ModelError(f"{RUNTIME_ENV}={wanted!r}: expected one of {', '.join(RUNTIMES)}")
    for name in (wanted,) if wanted else RUNTIMES:
        try:
            return importlib.import_module(f"{name}.interpreter").Interpreter
        except ImportError:
            continue
    raise ModelError(
        f"no TFLite runtime ({wanted or ' or '.join(RUNTIMES)}) installed: pip install "
        "ai-edge-litert (x86_64, aarch64) or tflite-runtime (armv7l)"
    )


def runtime_name() -> str:
    """Which runtime package is in use, for status and benchmarks."""
    return interpreter_class().__module__.split(".")[0]


@dataclass(frozen=True)
class Delegation:
    """How much of a model XNNPACK runs: its partitions (one per delegated stretch of the
    graph) and the ops left to TFLite's own kernels between them, by name."""

    partitions: int
    outside: dict[str, int]
    nodes: int

    @property
    def whole(self) -> bool:
        """The whole graph is one XNNPACK partition."""
        return self.partitions == 1 and not self.outside


def delegation_of(interp: Any) -> Delegation:
    """Read the delegated graph of an allocated interpreter: the DELEGATE nodes are the
    XNNPACK partitions; an original node is outside XNNPACK when the tensors the plan
    needs (the partitions' inputs, the model's outputs) lead back to it without passing
    through a partition."""
    ops = interp._get_ops_details()  # the one (private, stable) view of the graph
    partitions = [op for op in ops if op["op_name"] == "DELEGATE"]
    originals = [op for op in ops if op["op_name"] != "DELEGATE"]
    producer = {int(t): op for op in originals for t in op["outputs"]}
    delegated = {int(t) for op in partitions for t in op["outputs"]}
    needed = [int(t) for op in partitions for t in op["inputs"]]
    needed += [int(d["index"]) for d in interp.get_output_details()]
    outside: dict[int, str] = {}
    while needed:
        tensor = needed.pop()
        op = producer.get(tensor)
        if op is None or tensor in delegated or op["index"] in outside:
            continue
        outside[op["index"]] = op["op_name"]
        needed += [int(t) for t in op["inputs"]]
    return Delegation(len(partitions), dict(Counter(outside.values())), len(originals))


@functools.lru_cache(maxsize=16)
def delegation(path: str) -> Delegation:
    """`delegation_of` a model file, loaded once on one thread for the purpose."""
    interp = interpreter_class()(model_path=path, num_threads=1)
    interp.allocate_tensors()
    return delegation_of(interp)


def threads_that_pay(path: str | Path, wanted: int, best: int | None = None) -> tuple[int, str]:
    """TFLite threads for one model, and why: `wanted` (the frame loop's share for its
    stage) capped by `best` (the model card's measured choice, which overrides the rule);
    without a card choice, one thread for a model XNNPACK does not run whole: every op
    left outside runs on one thread between partitions, and each partition wakes the
    thread pool again, so the extra threads mostly wait (the VA model's 18 int8
    HARD_SWISH ops cut it into 19 partitions; BENCHMARKS.md, Cores)."""
    if wanted <= 1:
        return 1, "one thread given"
    if best is not None:
        return max(1, min(wanted, best)), f"card: best {best}"
    try:
        graph = delegation(str(path))
    except (ValueError, RuntimeError, ModelError) as exc:
        return 1, f"graph not readable ({exc})"
    if not graph.whole:
        outside = ", ".join(f"{n} {op}" for op, n in sorted(graph.outside.items()))
        return 1, f"{graph.partitions} XNNPACK partitions, outside: {outside or 'none'}"
    return wanted, "whole graph in XNNPACK"


class TFLiteModel:
    """A loaded .tflite model with one input; quantises inputs and dequantises outputs.

    Callers always pass float32 in the model's *real* input scale and get float32 back,
    so float and int8 models are interchangeable behind a model card.
    """

    def __init__(self, path: str | Path, threads: int = 1, batch: int = 1) -> None:
        """`batch` > 1 resizes the input's first dimension once, here, so several crops
        (a face and its mirror image) run in one invoke; `input_shape` stays the shape
        the model declares."""
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"model file not found: {self.path}")
        try:
            self._interp = interpreter_class()(model_path=str(self.path), num_threads=threads)
            inputs = self._interp.get_input_details()
            if len(inputs) != 1:
                raise ModelError(f"{self.path}: expected 1 input tensor, found {len(inputs)}")
            self.input_shape: tuple[int, ...] = tuple(int(d) for d in inputs[0]["shape"])
            if batch != 1:
                self._interp.resize_tensor_input(inputs[0]["index"], [batch, *self.input_shape[1:]])
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{self.path}: not a valid TFLite model ({exc})") from exc
        self.batch = batch
        self.threads = threads
        self._input = self._interp.get_input_details()[0]
        self._outputs = self._interp.get_output_details()
        self.input_dtype = np.dtype(self._input["dtype"])
        self.output_names = [d["name"] for d in self._outputs]
        self.output_shapes = [tuple(int(v) for v in d["shape"]) for d in self._outputs]

    @property
    def input_quantization(self) -> tuple[float, int]:
        scale, zero = self._input["quantization"]
        return float(scale), int(zero)

    def output_quantization(self) -> list[tuple[float, int]]:
        return [(float(d["quantization"][0]), int(d["quantization"][1])) for d in self._outputs]

    def _quantize(self, x: np.ndarray) -> np.ndarray:
        if self.input_dtype == np.float32:
            return x.astype(np.float32, copy=False)
        scale, zero = self.input_quantization
        info = np.iinfo(self.input_dtype)
        q = np.round(x / scale + zero)
        return np.clip(q, info.min, info.max).astype(self.input_dtype)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Invoke on one batch shaped like the input; returns every output as float32."""
        self._interp.set_tensor(self._input["index"], self._quantize(x))
        self._interp.invoke()
        results = []
        for detail in self._outputs:
            out = self._interp.get_tensor(detail["index"])
            if out.dtype != np.float32:
                scale, zero = detail["quantization"]
                out = (out.astype(np.float32) - zero) * scale
            results.append(out)
        return results
