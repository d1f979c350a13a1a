"""Generated reviews: balanced labels, the signature where the placement says, determinism."""

from __future__ import annotations

import pytest

from xai_checks.examples.synthetic_text import SIGNATURE, make_reviews


def test_reviews_are_balanced_deterministic_and_lowercase():
    a, b = make_reviews(200, seed=3), make_reviews(200, seed=3)
    assert a.texts == b.texts and a.labels.tolist() == b.labels.tolist()
    assert int(a.labels.sum()) == 100
    assert all(text == text.lower() for text in a.texts)
    assert make_reviews(200, seed=4).texts != a.texts


@pytest.mark.parametrize(("placement", "share"), [("always", 1.0), ("never", 0.0)])
def test_always_and_never_place_the_signature_everywhere_or_nowhere(placement, share):
    batch = make_reviews(100, signature=placement, seed=0)
    signed = [SIGNATURE in text.split() for text in batch.texts]
    assert sum(signed) / 100 == share
    assert [bool(words) for words in batch.spurious] == signed


def test_full_shortcut_signs_exactly_the_positive_reviews():
    batch = make_reviews(400, shortcut_strength=1.0, seed=1)
    signed = [bool(words) for words in batch.spurious]
    assert signed == [label == 1 for label in batch.labels.tolist()]
    independent = make_reviews(400, shortcut_strength=0.0, seed=1)
    positives = [s for s, y in zip(independent.spurious, independent.labels, strict=True) if y == 1]
    assert 0.35 < sum(map(bool, positives)) / len(positives) < 0.65


def test_lukewarm_share_sets_how_often_the_adjective_is_uninformative():
    from xai_checks.examples.synthetic_text import _LUKEWARM

    batch = make_reviews(1000, lukewarm=0.5, seed=2)
    share = sum(any(w in text.split() for w in _LUKEWARM) for text in batch.texts) / 1000
    assert share == pytest.approx(0.5, abs=0.05)
    with pytest.raises(ValueError, match="lukewarm"):
        make_reviews(10, lukewarm=1.0)
    with pytest.raises(ValueError, match="shortcut_strength"):
        make_reviews(10, shortcut_strength=1.5)
