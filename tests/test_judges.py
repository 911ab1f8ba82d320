"""The judges the other tests lean on, on cases worked out by hand, and face detectors judged
against where a generator put the face (not against a box any detector produced).

- `vad.iou` (speech regions on a 10 ms grid), `faces.box_iou` (box overlap matrix);
- Fleiss' kappa and Krippendorff's alpha (metrics) on tables small enough to do on paper;
- Haar and UltraFace on pictures where the astronaut's face (hand-labelled box) is pasted at
  known places and sizes, with a face-less picture that must give nothing.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from mikupal import metrics
from mikupal.audio.vad import iou
from mikupal.vision import faces as F

# Hand label of the face in skimage.data.astronaut(): hairline to chin, cheek to cheek.
ASTRONAUT_FACE = (181, 76, 277, 180)


# ---- vad.iou ----------------------------------------------------------------------------------
@pytest.mark.parametrize("a,b,want", [
    ([], [], 1.0),                                    # nothing vs nothing: perfect
    ([(1.0, 2.0)], [], 0.0),
    ([(1.0, 2.0)], [(1.0, 2.0)], 1.0),
    ([(0.0, 1.0)], [(2.0, 3.0)], 0.0),                # disjoint
    ([(0.0, 1.0)], [(0.5, 1.5)], 0.5 / 1.5),          # half a second shared of one and a half
    ([(0.0, 1.0), (2.0, 3.0)], [(0.0, 3.0)], 2 / 3),  # two regions inside one: the gap counts against
    ([(0.0, 4.0)], [(1.0, 2.0)], 1 / 4),              # containment
])
def test_vad_iou_hand_cases(a, b, want):
    assert iou(a, b) == pytest.approx(want, abs=0.011)  # a 10 ms grid: within one cell of the exact value
    assert iou(b, a) == pytest.approx(iou(a, b))


def test_vad_iou_resolution_is_a_grid_not_a_rounding_of_the_answer():
    # 0.0-1.0 vs 0.0-1.004: on a 10 ms grid the second one covers one more cell (ceil of the end)
    assert iou([(0.0, 1.0)], [(0.0, 1.004)]) == pytest.approx(100 / 101)
    assert iou([(0.0, 1.0)], [(0.0, 1.004)], resolution_s=0.001) == pytest.approx(1000 / 1004, abs=1.5e-3)


# ---- faces.box_iou ------------------------------------------------------------------------------
def test_box_iou_hand_cases():
    a = np.array([[0, 0, 10, 10], [100, 100, 110, 120]], float)
    b = np.array([[0, 0, 10, 10, 0.9], [5, 0, 15, 10, 0.8], [0, 0, 5, 5, 0.7], [10, 0, 20, 10, 0.6]])
    m = F.box_iou(a, b)  # a score column in b is ignored
    assert m.shape == (2, 4)
    assert m[0] == pytest.approx([1.0, 50 / 150, 25 / 100, 0.0])  # same, half over, inside, touching
    assert m[1] == pytest.approx([0.0, 0.0, 0.0, 0.0])
    assert F.box_iou(b, a) == pytest.approx(m.T)
    assert F.box_iou(np.zeros((0, 4)), b).shape == (0, 4) and F.box_iou(a, np.zeros((0, 5))).shape == (2, 0)


# ---- agreement on tables done by hand -----------------------------------------------------------
def test_fleiss_kappa_hand_tables():
    assert metrics.fleiss_kappa([[3, 0], [0, 3], [3, 0]]) == pytest.approx(1.0)
    # each subject split 2:1 and 1:2 -> agreement 1/3 each, chance 1/2: (1/3 - 1/2) / (1 - 1/2)
    assert metrics.fleiss_kappa([[2, 1], [1, 2]]) == pytest.approx(-1 / 3)
    # subjects with 2 and 3 raters; the one-rater subject drops out:
    # P_i = 1, 1/3, 0 -> 4/9; p = (5/7, 2/7) -> P_e = 29/49; kappa = (4/9 - 29/49) / (20/49) = -13/36
    assert metrics.fleiss_kappa([[2, 0], [2, 1], [1, 1], [0, 1]]) == pytest.approx(-13 / 36)
    assert math.isnan(metrics.fleiss_kappa([[3, 0], [2, 0]]))  # all in one category: undefined, not 1


def test_krippendorff_alpha_hand_tables():
    assert metrics.krippendorff_alpha([[1, 1, 2, 2], [1, 1, 2, 2]], "nominal") == pytest.approx(1.0)
    # two units, each (1, 2): D_o = 4/4, D_e = 8/12 -> alpha = 1 - 3/2
    assert metrics.krippendorff_alpha([[1, 2], [2, 1]], "nominal") == pytest.approx(-0.5)
    # interval, units (1,1) (2,2) (3,4): D_o = 2/6; ordered-pair squared differences of
    # 1,1,2,2,3,4 sum to 82 -> D_e = 82/30; alpha = 1 - (1/3) / (41/15) = 36/41
    assert metrics.krippendorff_alpha([[1, 2, 3], [1, 2, 4]], "interval") == pytest.approx(36 / 41)
    # a unit rated once is not pairable and changes nothing
    assert metrics.krippendorff_alpha([[1, 2, 3, 9], [1, 2, 4, None]], "interval") == pytest.approx(36 / 41)


# ---- face detectors against a generator's ground truth ------------------------------------------
def _scene(placements: list[tuple[int, int, float]], size=(720, 1280), seed=0):
    """A noisy grey picture with the astronaut's head pasted at (x, y) scaled by s, and the true
    face boxes there: the hand label moved and scaled with the paste."""
    from skimage import data

    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal(128, 12, (*size, 3)), 0, 255).astype(np.uint8)
    x1, y1, x2, y2 = ASTRONAUT_FACE
    m = 40  # margin of hair and background around the labelled face
    head = data.astronaut()[y1 - m:y2 + m, x1 - m:x2 + m]
    truth = []
    for x, y, s in placements:
        h = cv2.resize(head, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        img[y:y + h.shape[0], x:x + h.shape[1]] = h
        truth.append((x + m * s, y + m * s, x + (m + x2 - x1) * s, y + (m + y2 - y1) * s))
    return img, np.array(truth, float)


PLACES = [(60, 80, 1.0), (700, 300, 0.6), (400, 330, 1.7)]


def _judge(det, min_iou):
    img, truth = _scene(PLACES)
    (found,) = det.detect([img])
    m = F.box_iou(truth, found)
    assert len(found) == len(truth), (found, truth)             # every face once, nothing else
    assert (m.max(axis=1) > min_iou).all(), (m, found, truth)   # each true face has its box
    (none,) = det.detect([_scene([])[0]])
    assert none.shape == (0, 5)                                 # the same noise without faces: nothing


def test_haar_finds_each_pasted_face_where_it_was_put():
    _judge(F.HaarDetector(), 0.55)  # Haar boxes stop above the chin: ~0.69 against the hand label


@pytest.mark.parametrize("variant", [320, 640])
def test_ultraface_finds_each_pasted_face_where_it_was_put(shared_models, variant):
    _judge(F.UltraFaceDetector(shared_models / "ultraface" / f"version-RFB-{variant}.onnx", min_score=0.7), 0.55)


def test_the_scene_generator_puts_the_face_where_it_says():
    """The judge of the judges: the pasted pixels inside each true box are the labelled face."""
    from skimage import data

    img, truth = _scene([(60, 80, 1.0)])
    x1, y1, x2, y2 = ASTRONAUT_FACE
    bx1, by1, bx2, by2 = truth[0].astype(int)
    assert np.array_equal(img[by1:by2, bx1:bx2], data.astronaut()[y1:y2, x1:x2])
