"""Smoothing: time-based filters and the emotion smoother, on synthetic probability streams."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from appliance.affect.filters import ExponentialFilter, LabelHysteresis
from appliance.affect.smoothing import UNCERTAIN, AffectState, EmotionSmoother
from appliance.config.schema import SmoothingConfig

LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
HAPPY, SAD = LABELS.index("happy"), LABELS.index("sad")
SETTINGS = SmoothingConfig()  # the shipped defaults: tau 0.5, no-face tau 1.5, hold 0.6


def probs(**named: float) -> np.ndarray:
    """A distribution with the named labels set and the rest sharing what is left."""
    p = np.zeros(len(LABELS))
    for label, value in named.items():
        p[LABELS.index(label)] = value
    rest = [i for i, label in enumerate(LABELS) if label not in named]
    p[rest] = (1.0 - sum(named.values())) / len(rest)
    return p


def times(fps: float, start: float, end: float) -> list[float]:
    """Frame timestamps i / fps in [start, end): exact for multiples of 1 / fps."""
    return [i / fps for i in range(round(start * fps), round(end * fps))]


def label_changes(states: list[AffectState]) -> list[tuple[float, str | None]]:
    return [(b.t, b.emotion) for a, b in itertools.pairwise(states) if a.emotion != b.emotion]


def first_time(states: list[AffectState], emotion: str | None, after: float) -> float:
    return next(s.t for s in states if s.t >= after and s.emotion == emotion)


# --------------------------------------------------------------------- ExponentialFilter


def step_response(fps: float, tau: float, end: float) -> dict[float, float]:
    """Input 0 up to t = 0, 1 after; the sample at time t describes the interval ending at t."""
    filt = ExponentialFilter(np.zeros(1))
    out = {}
    for t in times(fps, 0.0, end):
        out[t] = float(filt.update(t, np.ones(1), tau)[0])
    return out


@pytest.mark.parametrize("fps", [5, 15, 30])
def test_step_response_reaches_63_percent_after_tau(fps):
    tau = 1.0
    response = step_response(fps, tau, end=3.0)
    assert response[1.0] == pytest.approx(1.0 - 1.0 / math.e, abs=1e-9)
    for t, value in response.items():
        assert value == pytest.approx(1.0 - math.exp(-t / tau), abs=1e-9)


def test_step_response_is_independent_of_frame_rate():
    tau = 0.5
    runs = {fps: step_response(fps, tau, end=4.0) for fps in (5, 15, 30)}
    common = sorted(runs[5])
    assert len(common) == 20
    for t in common:
        assert runs[15][t] == pytest.approx(runs[5][t], abs=1e-9)
        assert runs[30][t] == pytest.approx(runs[5][t], abs=1e-9)


def test_piecewise_constant_input_is_exact_at_any_rate():
    """Levels change only at common timestamps: every rate gives the same trajectory."""

    def level(t: float) -> np.ndarray:
        # left-continuous pieces: (0, 1] -> a, (1, 2.2] -> b, (2.2, ...) -> c
        if t <= 1.0 + 1e-12:
            return np.array([1.0, 0.0, 0.0])
        if t <= 2.2 + 1e-12:
            return np.array([0.2, 0.7, 0.1])
        return np.array([0.0, 0.1, 0.9])

    runs = {}
    for fps in (5, 15, 30):
        filt = ExponentialFilter(np.array([0.0, 0.0, 1.0]))
        runs[fps] = {t: filt.update(t, level(t), 0.4).copy() for t in times(fps, 0.0, 4.0)}
    for t in runs[5]:
        np.testing.assert_allclose(runs[15][t], runs[5][t], atol=1e-9, rtol=0)
        np.testing.assert_allclose(runs[30][t], runs[5][t], atol=1e-9, rtol=0)


def test_filter_ignores_time_going_backwards():
    filt = ExponentialFilter(np.zeros(2))
    filt.update(0.0, np.array([1.0, 0.0]), 0.5)
    filt.update(1.0, np.array([1.0, 0.0]), 0.5)
    before = filt.value.copy()
    after = filt.update(0.2, np.array([0.0, 1.0]), 0.5)
    assert np.all(np.isfinite(after))
    np.testing.assert_array_equal(after, before)  # dt clamps to 0: no jump, no NaN


# ---------------------------------------------------------------------- LabelHysteresis


def test_hysteresis_reports_after_hold_without_interruption():
    hold = LabelHysteresis(hold_s=0.5)
    assert hold.update(0.0, "happy") is None
    assert hold.update(0.4, "happy") is None
    assert hold.update(0.5, "happy") == "happy"
    assert hold.update(0.6, "sad") == "happy"
    assert hold.update(0.8, "angry") == "happy"  # interrupted: the timer restarts
    assert hold.update(1.2, "sad") == "happy"
    assert hold.update(1.69, "sad") == "happy"
    assert hold.update(1.7, "sad") == "sad"


def test_hysteresis_reports_labels_taking_turns_instead_of_no_face():
    hold = LabelHysteresis(hold_s=0.5)
    reported = [hold.update(i / 10, ("happy", "sad")[i % 2]) for i in range(10)]
    assert reported[:5] == [None] * 5
    assert reported[5] in ("happy", "sad")
    assert set(reported[5:]) == {reported[5]}  # and then it sticks
    assert hold.update(1.0, None) == reported[5]  # "no face" needs its own hold
    assert hold.update(1.6, None) is None


@pytest.mark.parametrize("then", ["sad", None])
def test_hysteresis_holds_a_drop_to_no_face_like_a_change_of_label(then):
    """None was also the "nothing pending" marker, so no face was reported at once."""
    hold = LabelHysteresis(hold_s=0.5)
    hold.update(0.0, "happy")
    assert hold.update(0.5, "happy") == "happy"
    assert hold.update(0.6, then) == "happy"
    assert hold.update(1.0, then) == "happy"
    assert hold.update(1.1, then) == then
    assert hold.update(1.2, "happy") == then  # and back needs its own hold
    assert hold.update(1.7, "happy") == "happy"


def test_hysteresis_brief_no_face_keeps_the_label():
    hold = LabelHysteresis(hold_s=0.5)
    hold.update(0.0, "happy")
    hold.update(0.5, "happy")
    assert [hold.update(t, c) for t, c in [(0.6, None), (0.7, "happy"), (1.3, None)]] == [
        "happy"
    ] * 3


def test_hysteresis_weak_candidate_does_not_count():
    hold = LabelHysteresis(hold_s=0.2)
    hold.update(0.0, "happy")
    hold.update(0.2, "happy")
    for t in np.arange(0.3, 3.0, 0.1):
        assert hold.update(float(t), "sad", change=False) == "happy"


# ------------------------------------------------------------------------ EmotionSmoother


def run(smoother: EmotionSmoother, stream) -> list[AffectState]:
    return [smoother.update(t, p) for t, p in stream]


def confident_switch_time(fps: float) -> float:
    """Seconds from the change to the first frame reporting sad, 10 s happy then sad."""
    change = 10.0
    smoother = EmotionSmoother(LABELS, SETTINGS)
    happy, sad = probs(happy=0.9), probs(sad=0.9)
    states = run(smoother, ((t, happy if t < change else sad) for t in times(fps, 0, 14.0)))
    before = [s for s in states if 2.0 <= s.t < change]
    assert before and all(s.emotion == "happy" for s in before)
    switch = first_time(states, "sad", change)
    after = [s for s in states if s.t >= switch]
    assert all(s.emotion == "sad" for s in after)  # no bounce back
    return switch - change


@pytest.mark.parametrize("fps", [5, 15, 30])
def test_real_change_is_reported_within_tau_plus_hold(fps):
    delay = confident_switch_time(fps)
    assert SETTINGS.hold_s <= delay <= SETTINGS.tau_s + SETTINGS.hold_s


def test_real_change_delay_agrees_across_frame_rates():
    slow, fast = confident_switch_time(5), confident_switch_time(30)
    assert abs(slow - fast) <= 0.2 + 1e-9  # one 5 fps frame period


def alternating_stream(seed: int, fps: float = 30, seconds: float = 20.0):
    """Happy and sad take turns leading (0.55 vs 0.40) on every frame, plus noise."""
    rng = np.random.default_rng(seed)
    a, b = probs(happy=0.55, sad=0.40), probs(sad=0.55, happy=0.40)
    for i, t in enumerate(times(fps, 0.0, seconds)):
        p = (a if i % 2 == 0 else b) + rng.uniform(0.0, 0.05, len(LABELS))
        yield t, p / p.sum()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_flicker_when_the_leader_alternates_every_frame(seed):
    """A tie is ambiguous: either label may be reported, but it must not flicker, and the
    face must not pass for "no face"."""
    states = run(EmotionSmoother(LABELS, SETTINGS), alternating_stream(seed))
    (t_first, first), *later = label_changes(states)
    assert first in ("happy", "sad")  # None -> a label during the initial settle
    assert t_first <= 2.0
    assert len(later) <= 1  # at most one change in 20 s
    after = [s for s in states if s.t >= t_first]
    assert all(s.emotion in ("happy", "sad") for s in after)
    assert all(s.face_presence > 0.98 for s in states if s.t >= 2.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_alternating_leader_keeps_an_established_label(seed):
    """2 s of a clear happy face, then 20 s of happy/sad taking turns: stays happy."""
    smoother = EmotionSmoother(LABELS, SETTINGS)
    clear = run(smoother, ((t, probs(happy=0.8)) for t in times(30, 0.0, 2.0)))
    assert clear[-1].emotion == "happy"
    noisy = run(smoother, ((t + 2.0, p) for t, p in alternating_stream(seed)))
    assert [s.emotion for s in noisy] == ["happy"] * len(noisy)


@pytest.mark.parametrize("fps", [5, 30])
def test_no_flicker_when_argmax_flips_on_40_percent_of_frames(fps):
    rng = np.random.default_rng(7)
    leading, trailing = probs(happy=0.6, sad=0.3), probs(sad=0.5, happy=0.4)
    stream, flips = [], 0
    for t in times(fps, 0.0, 20.0):
        p = (trailing if rng.random() < 0.4 else leading) + rng.uniform(0.0, 0.05, len(LABELS))
        p /= p.sum()
        flips += int(np.argmax(p)) != HAPPY
        stream.append((t, p))
    assert 0.3 <= flips / len(stream) <= 0.5
    states = run(EmotionSmoother(LABELS, SETTINGS), stream)
    settled = [s for s in states if s.t >= 2.0]
    assert [s.emotion for s in settled] == ["happy"] * len(settled)
    assert label_changes(states) == [(first_time(states, "happy", 0.0), "happy")]


@pytest.mark.parametrize("fps", [5, 30])
def test_face_leaving_fades_to_no_face(fps):
    smoother = EmotionSmoother(LABELS, SETTINGS)
    run(smoother, ((t, probs(happy=0.9)) for t in times(fps, 0.0, 5.0)))
    gone = run(smoother, ((t, None) for t in times(fps, 5.0, 15.0)))
    assert gone[0].emotion == "happy"
    cleared = first_time(gone, None, 5.0) - 5.0
    assert cleared <= SETTINGS.no_face_tau_s * math.log(2) + SETTINGS.hold_s + 0.2
    assert all(s.emotion is None for s in gone if s.t >= 5.0 + cleared)  # stays cleared
    presence = [s.face_presence for s in gone]
    assert all(b <= a for a, b in itertools.pairwise(presence))
    assert presence[-1] < 0.01
    # While the label is still shown, its joint probability (given-face confidence times
    # presence) decays; once cleared, confidence is that of "no face" and rises.
    shown = [s.confidence * s.face_presence for s in gone if s.emotion == "happy"]
    assert all(b < a for a, b in itertools.pairwise(shown))
    no_face_conf = [s.confidence for s in gone if s.emotion is None]
    assert all(b >= a for a, b in itertools.pairwise(no_face_conf))
    assert no_face_conf[-1] > 0.99


def test_face_returning_after_absence_is_reported_again():
    smoother = EmotionSmoother(LABELS, SETTINGS)
    run(smoother, ((t, probs(happy=0.9)) for t in times(15, 0.0, 3.0)))
    gone = run(smoother, ((t, None) for t in times(15, 3.0, 8.0)))
    assert gone[-1].emotion is None
    back = run(smoother, ((t, probs(surprise=0.9)) for t in times(15, 8.0, 10.0)))
    assert back[-1].emotion == "surprise"


def test_a_weak_leader_makes_the_state_uncertain_not_the_last_confident_label():
    """The last confident label was kept for as long as nothing confident replaced it
    ("angry 0.15" for a whole clip): read by status and the timeline as a confident
    reading. Once the top class stays below min_confidence for hold_s, the state is
    UNCERTAIN, with the top probability as its confidence."""
    smoother = EmotionSmoother(LABELS, SETTINGS)
    run(smoother, ((t, probs(happy=0.9)) for t in times(30, 0.0, 3.0)))
    weak = probs(sad=SETTINGS.min_confidence - 0.05)  # sad leads, but weakly
    assert int(np.argmax(weak)) == SAD
    states = run(smoother, ((t, weak) for t in times(30, 3.0, 13.0)))
    assert states[-1].emotion == UNCERTAIN
    assert states[-1].confidence == pytest.approx(states[-1].probs["sad"], abs=1e-4)
    assert states[-1].confidence < SETTINGS.min_confidence
    assert states[-1].valence is not None  # a face is there: VA goes on
    became = next(s.t for s in states if s.emotion == UNCERTAIN)
    weak_since = next(s.t for s in states if max(s.probs.values()) < SETTINGS.min_confidence)
    assert became - weak_since == pytest.approx(SETTINGS.hold_s, abs=1 / 30 + 1e-6)
    assert {s.emotion for s in states} <= {"happy", UNCERTAIN}  # never the weak "sad"
    back = run(smoother, ((t, probs(happy=0.9)) for t in times(30, 13.0, 16.0)))
    assert back[-1].emotion == "happy"


def test_a_weak_face_from_no_face_is_uncertain_never_its_weak_label():
    settings = SmoothingConfig(min_confidence=0.6)
    smoother = EmotionSmoother(LABELS, settings)
    states = run(smoother, ((t, probs(angry=0.55)) for t in times(15, 0.0, 10.0)))
    assert states[-1].face_presence > 0.99
    assert {s.emotion for s in states} == {None, UNCERTAIN}
    assert states[-1].emotion == UNCERTAIN


def test_timestamps_going_backwards_do_not_crash_or_give_nan():
    smoother = EmotionSmoother(LABELS, SETTINGS)
    states = run(smoother, ((t, probs(happy=0.9)) for t in times(30, 0.0, 10.0)))
    # a second pass over a recording restarts its clock at 0, this time sad and face-less
    for t in times(30, 0.0, 25.0):
        p = None if 3.0 <= t < 4.0 else probs(sad=0.9)
        states.append(smoother.update(t, p))
    for s in states:
        values = [s.confidence, s.face_presence, *s.probs.values()]
        assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values)
        assert s.emotion in (None, UNCERTAIN, *LABELS)
    assert states[-1].emotion == "sad"  # it recovers once time moves on


def test_rewound_clock_switches_within_the_usual_lag():
    """A restarted recording is handled like fresh time, not frozen until the old time."""
    smoother = EmotionSmoother(LABELS, SETTINGS)
    run(smoother, ((t, probs(happy=0.9)) for t in times(30, 0.0, 10.0)))
    after = run(smoother, ((t, probs(sad=0.9)) for t in times(30, 0.0, 3.0)))
    switched = next(s.t for s in after if s.emotion == "sad")
    assert switched <= SETTINGS.tau_s + SETTINGS.hold_s


def test_probs_sum_to_one_and_follow_label_order():
    rng = np.random.default_rng(3)
    smoother = EmotionSmoother(LABELS, SETTINGS)
    states = []
    for t in times(15, 0.0, 20.0):
        face = t < 0.5 or rng.random() > 0.3  # about 30% of frames without a face
        p = rng.dirichlet(np.ones(len(LABELS))) if face else None
        states.append(smoother.update(t, p))
    seen_face = [s for s in states if s.face_presence > 0]
    assert len(seen_face) > len(states) - 3
    for s in seen_face:
        assert tuple(s.probs) == LABELS
        assert sum(s.probs.values()) == pytest.approx(1.0, abs=1e-3)
        if s.emotion == UNCERTAIN:
            assert s.confidence == pytest.approx(max(s.probs.values()), abs=1e-4)
        elif s.emotion is not None:
            assert s.confidence == pytest.approx(s.probs[s.emotion], abs=1e-4)


def test_no_frames_with_a_face_means_no_emotion():
    smoother = EmotionSmoother(LABELS, SETTINGS)
    states = run(smoother, ((t, None) for t in times(15, 0.0, 5.0)))
    for s in states:
        assert s.emotion is None
        assert s.face_presence == 0.0
        assert s.confidence == 1.0  # certainly no face


def test_valence_arousal_follow_the_time_based_filter():
    smoother = EmotionSmoother(LABELS, SETTINGS)
    happy = probs(happy=1.0)
    for i in range(10 * 30):  # 10 s of a steady face at 30 fps
        state = smoother.update(i / 30, happy, (0.8, 0.5))
    assert (state.valence, state.arousal) == pytest.approx((0.8, 0.5), abs=1e-3)
    # a step to (-0.6, 0.2): after tau the filter has covered 63% of the way
    t0 = 299 / 30  # the last steady frame: later samples stand for the time since
    for i in range(1, int(SETTINGS.tau_s * 30) + 1):
        state = smoother.update(t0 + i / 30, happy, (-0.6, 0.2))
    expected = 0.8 + (1 - math.exp(-1)) * (-0.6 - 0.8)
    assert state.valence == pytest.approx(expected, abs=0.02)


def test_valence_arousal_hold_while_the_face_is_away_and_read_none():
    smoother = EmotionSmoother(LABELS, SETTINGS)
    for i in range(150):
        smoother.update(i / 30, probs(happy=1.0), (0.8, 0.5))
    held = smoother._va.value.copy()
    for i in range(150, 450):  # 10 s without a face
        state = smoother.update(i / 30, None)
    assert state.emotion is None and state.valence is None and state.arousal is None
    assert smoother._va.value == pytest.approx(held)  # not dragged towards neutral
    state = smoother.update(450 / 30, probs(happy=1.0), (0.8, 0.5))
    assert smoother._va.value == pytest.approx(held, abs=0.05)  # no jump on return


def test_without_va_samples_the_state_still_reports_numbers():
    smoother = EmotionSmoother(LABELS, SETTINGS)
    for i in range(60):
        state = smoother.update(i / 30, probs(sad=1.0))
    assert state.emotion == "sad" and state.valence == 0.0 and state.arousal == 0.0
