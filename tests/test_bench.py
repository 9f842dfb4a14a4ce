"""`bench`: its JSON, the config it reads, and what `--threads N` means (issue 27): N
cores for each pipeline, in every pool it has, stated in the report, and checked by the
CPU each thread used rather than by how fast anything ran."""

from __future__ import annotations

import json
from functools import partial

import pytest
from support import FIXTURE_FACES, cli_settings, load_tool, requires_models, run_cli

from appliance.capture.base import Frame
from appliance.config import load_config
from appliance.offline import bench as benchmark
from appliance.pipeline import models_dir

make_face_clip = load_tool("make_face_clip")


cli = partial(run_cli, timeout=300)  # a bench run decodes and times whole clips


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory):
    """Three frames, one face each: what bench's JSON and its config need, at a fraction
    of a full run's cost (ours, the cold-start probe and the peer each load the models)."""
    path = tmp_path_factory.mktemp("short") / "short.mp4"
    faces = make_face_clip.list_faces(FIXTURE_FACES)[::12]  # 3 of the 35 faces
    make_face_clip.compose(faces, path, frames_per_face=1, fps=10, seed=3)
    return path


@requires_models
def test_bench_json_contract_with_peer(tmp_path, short_clip):
    """The real `bench --peer`, end to end: the JSON's shape, which a few frames show as
    well as a long clip (BENCHMARKS.md has the speeds, measured on the demo clip)."""
    args = cli_settings(tmp_path, "music.enabled=false")
    result = cli("bench", "--source", str(short_clip), "--peer", "--json", "--threads", "1", *args)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    ours, peer = report["ours"], report["peer"]
    assert {"fps", "detection_rate", "median_ms", "p95_ms", "rss_mb", "stages", "cpu"} <= set(ours)
    assert {"decode", "detect", "classify", "va", "smooth", "total"} <= set(ours["stages"])
    assert {"fps", "detection_rate", "median_ms", "pools", "cpu"} <= set(peer)
    assert report["ratio_fps"] == pytest.approx(ours["fps"] / peer["fps"], rel=0.02)
    assert 0 < ours["cold_start_s"] < 30 and 20 < ours["rss_mb"] < 1000
    assert report["frames"] == 3
    assert report["threads"] == 1 and report["threads_setting"] == "1"
    assert {"process_pct", "threads"} <= set(ours["cpu"])


@requires_models
def test_bench_reads_the_config_file_and_gives_both_pipelines_the_threads_in_every_pool(
    tmp_path, short_clip
):
    """bench ignored --config (built-in defaults, not what the daemon runs), ran the peer
    on 1 thread whatever --threads said, and reported --threads over --set. Now N is N
    cores for each pipeline in every pool: the peer's OpenCV and TFLite threads, and ours
    spent as the daemon spends them (two cores: stages overlapped, one TFLite thread per
    model). The file says 3; --set says 2, which wins."""
    config = tmp_path / "bench.toml"
    config.write_text('[models]\nva = ""\nthreads = 3\n')
    result = cli(
        "bench",
        "--source",
        str(short_clip),
        "--peer",
        "--json",
        "--config",
        str(config),
        "--set",
        "models.threads=2",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ours"]["models"]["va_model"] is None  # the file's models.va = ""
    assert report["config"] == str(config)
    assert report["threads"] == 2 and report["peer"]["threads"] == 2
    assert report["peer"]["pools"] == {"opencv_threads": 2, "tflite_threads": 2}
    plan = report["ours"]["threads"]
    assert plan["given"] == 2 and plan["frame_loop"] == 2 and plan["overlap"] is True
    assert plan["tflite_threads"] == {"detector": 1, "emotion": 1, "va": 0}
    assert plan["opencv_threads"] == 1


def test_bench_of_a_source_without_frames_is_a_capture_error(monkeypatch):
    from appliance.capture import CaptureError, FrameSource

    class Empty(FrameSource):
        def open(self) -> None:
            pass

        def read(self, timeout=None):
            return None

        def close(self) -> None:
            pass

    monkeypatch.setattr(benchmark, "open_source", lambda spec: Empty(spec))
    with pytest.raises(CaptureError, match="no frames"):
        benchmark.run_bench("empty/")


# ------------------------------------------------------------------------ one thread busy


@pytest.fixture
def frames(short_clip):
    """The short clip's three faces over and over, time moving on: a CPU-bound stretch
    long enough for the kernel's per-thread CPU clock (10 ms ticks) to tell threads
    apart."""
    decoded, _ = benchmark.decode(str(short_clip))
    return [
        Frame(decoded[i % len(decoded)].image, i / 10, i) for i in range(120)
    ]  # fmt: skip


@pytest.fixture
def opencv_threads():
    import cv2

    before = cv2.getNumThreads()
    yield
    cv2.setNumThreads(before)


def busy_threads(cpu: dict, share: float) -> list[str]:
    """Threads that used more than `share` of the CPU the whole process used."""
    return [t["thread"] for t in cpu["threads"] if t["cpu_pct"] > share * cpu["process_pct"]]


@requires_models
def test_one_thread_means_one_busy_thread_in_both_pipelines(frames, opencv_threads):
    """With --threads 1 every pool is one thread: the thread that runs the frame loop
    does all the work, ours and the peer's (OpenCV's Haar, TFLite); no pool thread, no
    overlap worker does any. Checked by the CPU time each thread used (the busiest has
    nearly all of the process's), which holds however loaded the machine is."""
    config = load_config(None, ["models.threads=1", "music.enabled=false"],
                         default_path=benchmark.NO_CONFIG)  # fmt: skip
    ours = benchmark.bench_ours(config, frames)
    assert ours["threads"]["overlap"] is False
    assert ours["threads"]["tflite_threads"] == {"detector": 1, "emotion": 1, "va": 1}
    assert ours["threads"]["opencv_threads"] == 1
    peer = benchmark.bench_peer(frames[:40], models_dir(config), threads=1)
    assert peer["pools"] == {"opencv_threads": 1, "tflite_threads": 1}
    for cpu in (ours["cpu"], peer["cpu"]):
        assert cpu["process_pct"] > 0
        assert cpu["threads"][0]["thread"] == "MainThread"
        assert cpu["threads"][0]["cpu_pct"] >= 0.9 * cpu["process_pct"], cpu
        assert busy_threads(cpu, 0.1) == ["MainThread"], cpu


@requires_models
def test_two_threads_put_a_second_thread_to_work(frames, opencv_threads):
    """The same measurement sees a second thread when there is one: with two cores the
    finishing worker classifies every frame beside the frame loop."""
    config = load_config(None, ["models.threads=2", "music.enabled=false"],
                         default_path=benchmark.NO_CONFIG)  # fmt: skip
    ours = benchmark.bench_ours(config, frames)
    assert ours["threads"]["overlap"] is True
    assert busy_threads(ours["cpu"], 0.1)[:2] in (
        ["MainThread", "frames:finish"],
        ["frames:finish", "MainThread"],
    ), ours["cpu"]
    assert ours["stages"]["handoff"]["median"] >= 0


def test_the_profile_names_each_kernel_by_the_op_it_runs_and_where():
    """tools/profile_model.py's reading of perf's symbols: the op, and whether XNNPACK or
    TFLite's own kernels run it (how the VA model's HARD_SWISH was found outside)."""
    profile = load_tool("profile_model")
    litert = "libpywrap_litert_common.so"
    assert profile.kind_of(litert, "tflite::reference_ops::HardSwish<signed char>").startswith(
        "HARD_SWISH"
    )
    conv = profile.kind_of(litert, "xnn_qs8_qc8w_igemm_minmax_fp32_ukernel_16x64c4__avx512amx")
    assert conv.startswith("CONV_2D (XNNPACK")
    assert "DEPTHWISE" in profile.kind_of(litert, "xnn_qs8_qc8w_dwconv_minmax_fp32_ukernel_25p32c")
    spin = profile.kind_of("[vdso]", "__vdso_clock_gettime")  # ruy's and gemmlowp's spin
    assert spin.startswith("thread pool")
    ruy = profile.kind_of("_pywrap_tensorflow_interpreter_wrapper.so", "ruy::Kernel8bitAvx512")
    assert "ruy" in ruy
    assert profile.kind_of("cv2.abi3.so", "0x0000000000d5b82e").startswith("OpenCV")
