"""FaceFinder's tracking, with a scripted region detector: a track stays on its face when
a neighbour's face, scoring higher, comes into the region around it."""

from __future__ import annotations

import numpy as np

from appliance.vision.detector import FaceFinder, FinderSettings
from appliance.vision.faces import Face

FRAME = np.zeros((480, 640, 3), np.uint8)


class Scene:
    """A region detector that 'sees' the faces of a scene whose boxes lie fully inside the
    region asked about (the whole frame when none is given)."""

    name = "scene"

    def __init__(self, faces: list[Face]):
        self.faces = faces

    def detect(self, frame, roi=None):
        if roi is None:
            return list(self.faces)
        x, y, w, h = roi
        return [
            f
            for f in self.faces
            if f.box[0] >= x
            and f.box[1] >= y
            and f.box[0] + f.box[2] <= x + w
            and f.box[1] + f.box[3] <= y + h
        ]


def test_a_track_stays_on_its_face_when_a_more_confident_neighbour_comes_close():
    child = Face((200, 200, 80, 80), 0.7, "scene")
    scene = Scene([child])
    finder = FaceFinder(scene, FinderSettings(max_faces=1, redetect_s=10.0, min_face_px=30))
    assert finder.find(FRAME, 0.0) == [child]
    # a face further back comes in beside the child: inside the region around the
    # child's box (x 160-320), not touching it, and more confident
    adult = Face((282, 205, 36, 36), 0.95, "scene")
    scene.faces = [child, adult]
    assert [f.box for f in finder.find(FRAME, 0.1)] == [child.box]


def test_a_track_whose_face_left_searches_again_instead_of_jumping_to_a_neighbour():
    first = Face((200, 200, 80, 80), 0.9, "scene")
    scene = Scene([first])
    finder = FaceFinder(scene, FinderSettings(max_faces=1, redetect_s=10.0))
    finder.find(FRAME, 0.0)
    # the tracked face is gone; another, not overlapping it, is nearby
    other = Face((290, 210, 60, 60), 0.8, "scene")
    scene.faces = [other]
    assert [f.box for f in finder.find(FRAME, 0.1)] == [other.box]  # found by a full search


def test_a_search_candidate_verifies_as_the_face_it_marked():
    left = Face((100, 100, 90, 90), 0.6, "scene")
    right = Face((200, 110, 90, 90), 0.99, "scene")
    scene = Scene([left, right])
    finder = FaceFinder(scene, FinderSettings(max_faces=2, redetect_s=10.0))
    assert sorted(f.box for f in finder.find(FRAME, 0.0)) == sorted([left.box, right.box])
