"""Moods: k-means clusters of the catalog's (valence, energy), named by where they sit.

Songs and listeners meet on Spotify's plane: track valence and energy in [0, 1]. The
listener's valence and arousal in [-1, 1] map onto it linearly, valence -> valence and
arousal -> energy: x01 = (x + 1) / 2. So a neutral face sits at (0.5, 0.5), a happy one
(0.81, 0.51) at (0.91, 0.76) and a sad one (-0.63, -0.27) at (0.19, 0.37).

Names follow the quadrants of the plane (Thayer's music-mood model, as in the seed
ReSCNN-VA): happy = high valence + high energy, energetic = low valence + high energy,
calm = high valence + low energy, sad = low valence + low energy. With k = 4 the clusters
get the names whose corners they are jointly closest to; with other k each cluster takes
its nearest corner's name, numbered when names repeat.

k-means is small enough to write here (k-means++ init, fixed seed), so the device needs
no scikit-learn.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CORNERS: dict[str, tuple[float, float]] = {
    "happy": (1.0, 1.0),
    "energetic": (0.0, 1.0),
    "calm": (1.0, 0.0),
    "sad": (0.0, 0.0),
}


def va_to_plane(valence: float, arousal: float) -> tuple[float, float]:
    """Listener (valence, arousal) in [-1, 1] -> Spotify (valence, energy) in [0, 1]."""
    return (
        float(np.clip((valence + 1) / 2, 0, 1)),
        float(np.clip((arousal + 1) / 2, 0, 1)),
    )


def kmeans(
    points: np.ndarray, k: int, *, seed: int = 0, iterations: int = 100, restarts: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ seeding; the best of `restarts` runs by inertia.

    Returns (centroids k x d, labels n). Deterministic for a given seed.
    """
    points = np.asarray(points, dtype=np.float64)
    if len(points) < k:
        raise ValueError(f"k-means needs at least k={k} points, got {len(points)}")
    rng = np.random.default_rng(seed)
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for _ in range(restarts):
        centroids = _kmeans_pp(points, k, rng)
        for _ in range(iterations):
            labels = _nearest(points, centroids)
            moved = np.array(
                [
                    points[labels == j].mean(axis=0) if (labels == j).any() else centroids[j]
                    for j in range(k)
                ]
            )
            if np.allclose(moved, centroids):
                break
            centroids = moved
        labels = _nearest(points, centroids)
        inertia = float(((points - centroids[labels]) ** 2).sum())
        if best is None or inertia < best[0]:
            best = (inertia, centroids, labels)
    assert best is not None
    return best[1], best[2]


def _kmeans_pp(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centroids = [points[rng.integers(len(points))]]
    for _ in range(1, k):
        d2 = ((points[:, None, :] - np.array(centroids)[None]) ** 2).sum(-1).min(axis=1)
        total = d2.sum()
        pick = rng.integers(len(points)) if total <= 0 else rng.choice(len(points), p=d2 / total)
        centroids.append(points[pick])
    return np.array(centroids)


def _nearest(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return ((points[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(axis=1)


def name_clusters(centroids: np.ndarray) -> list[str]:
    """A mood name per centroid, by position on the valence/energy plane."""
    corners = np.array(list(CORNERS.values()))
    names = list(CORNERS)
    if len(centroids) == len(corners):
        best = min(
            itertools.permutations(range(len(corners))),
            key=lambda perm: sum(
                ((centroids[i] - corners[c]) ** 2).sum() for i, c in enumerate(perm)
            ),
        )
        return [names[c] for c in best]
    nearest = [names[int(((corners - c) ** 2).sum(1).argmin())] for c in centroids]
    counts: dict[str, int] = {}
    out = []
    for name in nearest:
        counts[name] = counts.get(name, 0) + 1
        out.append(name if nearest.count(name) == 1 else f"{name}-{counts[name]}")
    return out


@dataclass(frozen=True)
class Mood:
    name: str
    valence: float  # centroid, Spotify scale [0, 1]
    energy: float


@dataclass(frozen=True)
class MoodMap:
    """The fitted moods: which mood a point on the plane belongs to."""

    moods: tuple[Mood, ...]

    @classmethod
    def fit(cls, points: np.ndarray, k: int = 4, seed: int = 0) -> MoodMap:
        centroids, _ = kmeans(points, k, seed=seed)
        names = name_clusters(centroids)
        order = sorted(range(k), key=lambda i: names[i])  # stable, readable order
        return cls(tuple(Mood(names[i], *map(float, centroids[i])) for i in order))

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.moods]

    def centroids(self) -> np.ndarray:
        return np.array([(m.valence, m.energy) for m in self.moods])

    def distances(self, valence: float, energy: float) -> np.ndarray:
        return np.sqrt(((self.centroids() - (valence, energy)) ** 2).sum(axis=1))

    def nearest(self, valence: float, energy: float) -> str:
        return self.moods[int(self.distances(valence, energy).argmin())].name

    def assign(self, points: Sequence[tuple[float, float]] | np.ndarray) -> list[str]:
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return [self.moods[i].name for i in _nearest(points, self.centroids())]


class MoodTracker:
    """The listener's current mood, with hysteresis so it does not flap.

    A different mood takes over only after it has been the nearest - and nearer than the
    current mood by `margin` - for `hold_s` seconds without interruption. The first
    sample sets the mood at once.
    """

    def __init__(self, moods: MoodMap, hold_s: float, margin: float) -> None:
        self.moods = moods
        self.hold_s = hold_s
        self.margin = margin
        self.mood: str | None = None
        self._candidate: str | None = None
        self._since = 0.0

    def update(self, t: float, valence: float, arousal: float) -> str:
        point = va_to_plane(valence, arousal)
        distances = self.moods.distances(*point)
        leader = self.moods.moods[int(distances.argmin())].name
        if self.mood is None:
            self.mood = leader
            return leader
        current = distances[self.moods.names.index(self.mood)]
        if leader == self.mood or current - distances.min() < self.margin:
            self._candidate = None
            return self.mood
        if leader != self._candidate or t < self._since:
            self._candidate, self._since = leader, t
        if t - self._since >= self.hold_s:
            self.mood, self._candidate = leader, None
        return self.mood
