"""The guard that keeps the shuffled suite honest: a test that changes a shared fixture fails."""

from __future__ import annotations

import pytest

SHARED_FIXTURE_TESTS = """
import dataclasses
import pytest
import torch


@dataclasses.dataclass(frozen=True)
class Pair:
    model: torch.nn.Module
    images: torch.Tensor


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    return Pair(torch.nn.Linear(2, 2).eval(), torch.zeros(2, 2))


@pytest.fixture
def own_model():
    return torch.nn.Linear(2, 2)


def test_weights_changed(pair):
    with torch.no_grad():
        pair.model.weight.add_(1)


def test_switched_to_train_mode(pair):
    pair.model.train()


def test_froze_a_parameter(pair):
    pair.model.bias.requires_grad_(False)


def test_wrote_into_the_images(pair):
    pair.images[0, 0] = 1


def test_only_reads(pair):
    assert pair.model(pair.images).shape == (2, 2)


def test_changes_its_own_function_scoped_model(own_model):
    own_model.train()
    with torch.no_grad():
        own_model.weight.add_(1)


def test_fails_on_its_own(pair):
    pair.model.train()
    assert False, "its own failure"
"""


def test_a_test_that_changes_a_shared_fixture_in_place_fails_naming_it(
    pytester: pytest.Pytester, request: pytest.FixtureRequest
):
    guard = request.config.pluginmanager.get_plugin("shared-fixture-guard")
    pytester.makepyfile(test_shared=SHARED_FIXTURE_TESTS)
    # File order, and each changing test on a fresh module fixture (a module per test is
    # not needed: the guard compares each test's own before and after).
    result = pytester.runpytest_inprocess("-p", "no:randomly", "-q", plugins=[type(guard)()])
    result.assert_outcomes(passed=2, failed=5)
    for name in (
        "test_weights_changed",
        "test_switched_to_train_mode",
        "test_froze_a_parameter",
        "test_wrote_into_the_images",
    ):
        result.stdout.fnmatch_lines(
            [f"*{name} changed the shared (module/session-scoped) fixture pair in place*"]
        )
    result.stdout.fnmatch_lines(["*its own failure*"])
    assert "test_fails_on_its_own changed" not in result.stdout.str()
