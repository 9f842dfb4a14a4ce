#!/usr/bin/env python3
"""Where one model's time goes, per op kind: Linux `perf` samples of a process that runs
only that model (`tools/bench.py --model`), each kernel function counted under the op it
implements. The TFLite wheels carry no benchmark_model binary and their Python API has no
op profiler; the kernel names tell both the op and whether XNNPACK runs it (`xnn_*`) or
TFLite's own kernels do (`tflite::...`, `ruy::...`).

    python tools/profile_model.py models/va_mobilenetv3_int8.json --threads 1
    python tools/profile_model.py models/va_mobilenetv3_int8.json --threads 2 \
        --runtime tflite_runtime

Needs `perf` (Debian: linux-perf) and permission to sample this process (root, or
kernel.perf_event_paranoid <= 2). Samples are CPU time on every thread of the process at
4 kHz (`perf record -e cpu-clock -F 4000`); "ms/invoke" is that CPU time over the number
of invokes, so with several threads it can exceed the wall time per invoke, which is the
`inference_ms` that tools/bench.py measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FREQUENCY = 4000
WARMUP = 50  # tools/bench.py's warm-up invokes before the timed ones

# (pattern on the symbol, op kind) in order: the first match names the sample
# fmt: off
KINDS = [
    (r"HardSwish", "HARD_SWISH (TFLite kernel, outside XNNPACK)"),
    (r"xnn_.*igemm|xnn_compute_igemm", "CONV_2D (XNNPACK indirect GEMM: 3x3 and strided)"),
    (r"xnn_.*_gemm|xnn_compute_gemm", "CONV_2D 1x1 / FULLY_CONNECTED (XNNPACK GEMM)"),
    (r"xnn_.*dwconv", "DEPTHWISE_CONV_2D (XNNPACK)"),
    (r"xnn_.*ibilinear|xnn_compute_resize", "RESIZE_BILINEAR (XNNPACK)"),
    (r"xnn_.*(vmul|vadd|vsub|elementwise)", "ADD / MUL (XNNPACK)"),
    (r"xnn_.*(rdsum|rsum|gavgpool|mean)", "MEAN (XNNPACK)"),
    (r"xnn_.*maxpool|xnn_.*argmax", "MAX_POOL_2D (XNNPACK)"),
    (r"xnn_.*(vcvt|convert|vlrelu|vclamp|unary|vhswish|vtanh|vsigmoid|pad|copy)",
     "other XNNPACK ops (PAD, RELU, DEQUANTIZE, ...)"),
    (r"pthreadpool|thread_main|wait_worker|futex|sched_yield|__schedule|"
     r"ruy::ThreadPool|ruy::Thread|BlockingCounter|cpu_backend_threadpool|gemmlowp::Worker|"
     r"WaitForVariableChange|do_sched_yield|finish_task_switch|syscall|clock_gettime",
     "thread pool: waking, spinning (polling the clock), waiting"),
    (r"xnn_|xnnpack", "XNNPACK runtime (partition invoke, setup)"),
    (r"ruy::|Kernel8bit|optimized_integer_ops::|optimized_ops::(Conv|DepthwiseConv|Fully)|"
     r"depthwise_conv|DepthwiseConv|cpu_backend_gemm|gemmlowp|im2col|Im2col",
     "CONV_2D / DEPTHWISE / FC (TFLite kernels: ruy, gemmlowp, optimized_ops)"),
    (r"pooling::", "MAX_POOL_2D / MEAN (TFLite kernels)"),
    (r"tflite::", "other TFLite kernels and interpreter"),
    (r"^_?Py|^PyObject|^PyArray|ufunc|npy|numpy|FLOAT_|DOUBLE_|gc_|visit_|dict|unicode|_cast_"
     r"|^_?Py_|frame|tuple|list_|long_|float_",
     "Python and numpy (the harness: set/get tensor, quantise)"),
]
# fmt: on


def kind_of(dso: str, symbol: str) -> str:
    for pattern, kind in KINDS:
        if re.search(pattern, symbol):
            return kind
    if re.search(r"cv2|opencv", dso):  # stripped: addresses only
        return "OpenCV (the harness: BlazeFace's letterbox resize)"
    if re.search(r"python|numpy|openblas|_multiarray", dso):
        return "Python and numpy (the harness: set/get tensor, quantise)"
    if re.search(r"tflite|litert|_pywrap", dso):
        return "other TFLite kernels and interpreter"
    return "other (libc, kernel)"


def profile(card: str, threads: int, runs: int, runtime: str | None) -> dict:
    perf = shutil.which("perf")
    if perf is None:
        raise SystemExit("perf not found: apt-get install linux-perf")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "perf.data"
        bench = [sys.executable, str(ROOT / "tools" / "bench.py"), "--model", card,
                 "--threads", str(threads), "--runs", str(runs), "--json"]  # fmt: skip
        if runtime:
            bench += ["--runtime", runtime]
        out = subprocess.run(
            [perf, "record", "-q", "-e", "cpu-clock", "-F", str(FREQUENCY), "-o", str(data),
             "--", *bench],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        measured = json.loads(out.stdout.strip().splitlines()[-1])
        report = subprocess.run(
            [perf, "report", "-i", str(data), "--stdio", "--no-children", "--sort", "dso,sym",
             "-F", "sample,dso,sym"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    samples: dict[str, int] = {}
    top: dict[str, tuple[int, str]] = {}
    for line in report.splitlines():
        match = re.match(r"\s*(\d+)\s+(\S+)\s+\[.\]\s+(.*\S)", line)
        if not match:
            continue
        count, dso, symbol = int(match.group(1)), match.group(2), match.group(3)
        kind = kind_of(dso, symbol)
        samples[kind] = samples.get(kind, 0) + count
        if count > top.get(kind, (0, ""))[0]:
            top[kind] = (count, symbol)
    total = sum(samples.values()) or 1
    invokes = runs + WARMUP
    rows = [
        {
            "op": kind,
            "share_pct": round(100 * count / total, 1),
            "cpu_ms_per_invoke": round(count / FREQUENCY / invokes * 1e3, 3),
            "top_symbol": top[kind][1][:90],
        }
        for kind, count in sorted(samples.items(), key=lambda item: -item[1])
    ]
    return {"measured": measured, "samples": total, "ops": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("card", help="model card .json")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--runtime", choices=("ai_edge_litert", "tflite_runtime"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = profile(args.card, args.threads, args.runs, args.runtime)
    if args.json:
        print(json.dumps(result))
        return 0
    m = result["measured"]
    xnn = m["xnnpack"]
    print(f"{m['model']} on {m['runtime']}, {m['threads']} thread(s): inference median "
          f"{m['inference_ms']['median']} ms, p95 {m['inference_ms']['p95']} ms; XNNPACK "
          f"partitions {xnn['partitions']}, ops outside {xnn['ops_outside']}")  # fmt: skip
    print(f"{'op kind':<62} {'share':>6} {'CPU ms/invoke':>14}  top symbol")
    for row in result["ops"]:
        print(f"{row['op']:<62} {row['share_pct']:>5}% {row['cpu_ms_per_invoke']:>14}  "
              f"{row['top_symbol']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
