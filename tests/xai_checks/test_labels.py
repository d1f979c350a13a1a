"""Class names for indices: bounds-checked, never an IndexError or a wrapped negative index."""

from __future__ import annotations

import numpy as np
import torch

from xai_checks.labels import class_label, class_labels

NAMES = ("benign", "malignant")


def test_a_named_index_gives_its_name_and_any_other_its_number() -> None:
    assert class_label(1, NAMES) == "malignant"
    assert class_label(2, NAMES) == "2"
    assert class_label(-1, NAMES) == "-1"  # not the last name
    assert class_label(0, None) == "0" and class_label(0, []) == "0"


def test_many_indices_from_lists_tensors_and_arrays() -> None:
    assert class_labels([0, 1, 5], NAMES) == ["benign", "malignant", "5"]
    assert class_labels(torch.tensor([1, 0]), NAMES) == ["malignant", "benign"]
    assert class_labels(np.array([1, 3]), None) == ["1", "3"]
    assert class_labels([], NAMES) == []
