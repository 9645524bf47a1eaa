"""TS-CAM's error categories on hand-built boxes (224 frame, inclusive coordinates)."""

import numpy as np
import pytest

from wsolbench.per_image import error_category

GT = np.array([[50, 50, 149, 149]])  # 100 x 100


@pytest.mark.parametrize("class_ok,box,gt,expected", [
    (False, [50, 50, 149, 149], GT, "wrong class"),  # class first, whatever the box
    (True, [50, 50, 149, 149], GT, "correct"),
    (True, [60, 60, 149, 149], GT, "correct"),  # IoU 0.81
    (True, [50, 50, 149, 99], GT, "part"),  # IoU 0.5 exactly: not correct (> 0.5); inside GT
    (True, [0, 0, 223, 223], GT, "more"),  # covers the whole object, IoU 0.2
    (True, [160, 160, 200, 200], GT, "wrong"),  # disjoint
    # IoU 6561/15760 = 0.42; IoB 6561/12321 = 0.53 > 0.5: "part" is checked before "more".
    (True, [20, 20, 130, 130], GT, "part"),
    (True, [10, 10, 140, 140], GT, "more"),  # IoB 8281/17161 = 0.48, IoG 0.83 >= 0.7
    (True, [0, 0, 223, 100],
     np.array([[10, 10, 60, 60], [120, 10, 170, 60]]), "multi-instance"),
])
def test_error_categories(class_ok, box, gt, expected):
    assert error_category(class_ok, np.asarray(box), gt) == expected
