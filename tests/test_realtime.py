"""`run --realtime`: a file or folder played at its own frame rate, as a live camera
delivers it, so moods, songs, status and the timeline move as they would live. Time is
an injected clock: the tests never wait."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from test_lifecycle import FakePipeline

from appliance.capture import open_source
from appliance.capture.files import ImageFolderSource, Pacer, VideoFileSource
from appliance.cli import build_parser
from appliance.config import load_config
from appliance.service.daemon import Daemon
from appliance.service.status import read_status

FPS = 10.0


class FakeTime:
    """A clock that moves only when slept on, or when the test says the pipeline took
    time."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds

    def pacer(self) -> Pacer:
        return Pacer(self.clock, self.sleep)


@pytest.fixture
def video(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (64, 48))
    for i in range(10):
        writer.write(np.full((48, 64, 3), i * 20, dtype=np.uint8))
    writer.release()
    return path


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "frames"
    path.mkdir()
    for i in range(6):
        cv2.imwrite(str(path / f"{i:03d}.png"), np.full((48, 64, 3), i * 30, dtype=np.uint8))
    return path


def test_a_video_is_played_at_its_frame_rate(video):
    fake = FakeTime()
    source = VideoFileSource(video, realtime=True, pacer=fake.pacer())
    source.open()
    frames = [source.read() for _ in range(5)]
    assert [f.t for f in frames] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert fake.sleeps == pytest.approx([0.1] * 4)  # each frame waits for its time
    assert fake.now == pytest.approx(100.4)
    assert "real time" in source.describe()


def test_a_slow_pipeline_drops_overtaken_frames_as_a_live_camera_does(video):
    fake = FakeTime()
    source = VideoFileSource(video, realtime=True, pacer=fake.pacer())
    source.open()
    assert source.read().t == 0.0
    fake.now += 0.35  # the pipeline took 3.5 frame times
    frame = source.read()
    assert frame.t == pytest.approx(0.3) and frame.index == 1  # 0.1 and 0.2 dropped
    assert fake.sleeps == []  # it was due already
    assert source.read().t == pytest.approx(0.4)  # back in step: it waits for 0.4
    assert fake.sleeps == pytest.approx([0.05])


def test_looping_in_real_time_keeps_the_pace_across_the_restart(video):
    fake = FakeTime()
    source = VideoFileSource(video, loop=True, realtime=True, pacer=fake.pacer())
    source.open()
    frames = [source.read() for _ in range(13)]
    assert frames[-1].t == pytest.approx(1.2)  # media time goes on
    assert fake.now == pytest.approx(101.2)
    assert len(fake.sleeps) == 12


def test_without_realtime_a_file_is_read_as_fast_as_it_decodes(video):
    source = VideoFileSource(video)
    source.open()
    assert [source.read().t for _ in range(3)] == pytest.approx([0.0, 0.1, 0.2])
    assert source.pacer is None and "real time" not in source.describe()


def test_an_image_folder_is_paced_at_camera_fps_and_skips_unread_when_late(folder):
    fake = FakeTime()
    source = ImageFolderSource(folder, fps=FPS, realtime=True, pacer=fake.pacer())
    source.open()
    assert [source.read().t for _ in range(2)] == pytest.approx([0.0, 0.1])
    fake.now += 0.25
    assert source.read().t == pytest.approx(0.3)
    assert fake.sleeps == pytest.approx([0.1])


def test_a_frame_far_ahead_is_waited_for_a_bounded_time():
    fake = FakeTime()
    pacer = fake.pacer()
    pacer.wait(0.0)
    pacer.wait(30.0)  # a file that claims one frame every 30 s
    assert fake.sleeps == [1.0]  # the frame loop still notices a stop
    pacer.wait(31.0)
    assert fake.sleeps == [1.0, 1.0]  # and the pace goes on from there


def test_realtime_reaches_the_source_from_the_command_line(video, folder, tmp_path):
    assert build_parser().parse_args(["run", "--realtime", "--loop"]).realtime
    assert not build_parser().parse_args(["run"]).realtime
    assert open_source(str(video), realtime=True).pacer is not None
    assert open_source(str(folder), fps=5, realtime=True).pacer is not None
    assert open_source(str(video)).pacer is None
    config = load_config(
        None,
        [
            f"storage.state_dir={tmp_path / 'state'}",
            f"service.runtime_dir={tmp_path / 'run'}",
            "service.status_interval_s=0.1",
            "camera.fps=100",
            "music.enabled=false",
        ],
        default_path=tmp_path / "none.toml",
    )
    daemon = Daemon(config, source=str(folder), realtime=True, pipeline=FakePipeline())
    assert daemon.run() == 0 and daemon.frames >= 1
    assert "real time" in read_status(tmp_path / "run")["source"]
