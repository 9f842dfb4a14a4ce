"""One thin wrapper over whichever TFLite interpreter is installed.

ai-edge-litert (tflite-runtime's successor, the same Interpreter API) where it has wheels
(x86_64, aarch64): its XNNPACK kernels run our int8 models several times faster and its
thread pool holds up under load. tflite-runtime 2.14 for the rest (32-bit Pi OS). The
device never imports TensorFlow.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class ModelError(RuntimeError):
    """A model file is missing, corrupt or does not match its card."""


def interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError as exc:
            raise ModelError(
                "no TFLite runtime installed: pip install ai-edge-litert (x86_64, aarch64) "
                "or tflite-runtime (armv7l)"
            ) from exc
    return Interpreter


def runtime_name() -> str:
    """Which runtime package is in use, for status and benchmarks."""
    return interpreter_class().__module__.split(".")[0]


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
