"""The examples' old module paths (release 0.1) still import, warn, and load old pickles."""

from __future__ import annotations

import importlib
import pickle
import subprocess
import sys

import pytest

import xai_checks
from xai_checks.examples import synthetic, synthetic_text, toy_models, toy_text_models

MOVED = {
    "xai_checks.synthetic": synthetic,
    "xai_checks.synthetic_text": synthetic_text,
    "xai_checks.toy_models": toy_models,
    "xai_checks.toy_text_models": toy_text_models,
}


def _forget(monkeypatch: pytest.MonkeyPatch, old: str) -> None:
    """As in a fresh process: the old path was never imported, so the redirect must run."""
    monkeypatch.delitem(sys.modules, old, raising=False)
    name = old.rpartition(".")[2]
    if name in vars(xai_checks):  # not hasattr(): that would import it through the redirect
        monkeypatch.delattr(xai_checks, name)


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_path_imports_the_new_module_itself_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, old: str
) -> None:
    _forget(monkeypatch, old)
    with pytest.warns(DeprecationWarning, match=rf"{old} moved to {MOVED[old].__name__}"):
        module = importlib.import_module(old)
    assert module is MOVED[old]
    _forget(monkeypatch, old)
    with pytest.warns(DeprecationWarning, match=old):
        attribute = getattr(xai_checks, old.rpartition(".")[2])
    assert attribute is MOVED[old]


def test_classes_from_an_old_path_are_the_same_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    _forget(monkeypatch, "xai_checks.toy_models")
    with pytest.warns(DeprecationWarning):
        from xai_checks.toy_models import SmallCNN, TrainReport
    assert SmallCNN is toy_models.SmallCNN and TrainReport is toy_models.TrainReport
    assert isinstance(toy_models.SmallCNN(), SmallCNN)


def test_a_pickle_naming_the_old_module_loads_in_a_fresh_process() -> None:
    """MLflow's pickle flavour names each class by its module at save time: 0.1's paths."""
    model = toy_models.SmallCNN(width=8)
    data = pickle.dumps(model, protocol=2)  # protocol 2 names classes as text: "module\nname"
    new, old = b"cxai_checks.examples.toy_models\nSmallCNN\n", b"cxai_checks.toy_models\nSmallCNN\n"
    assert new in data
    data = data.replace(new, old)
    code = (
        "import pickle, sys, warnings\n"
        "data = sys.stdin.buffer.read()\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    model = pickle.loads(data)\n"
        "print([str(w.message) for w in caught if w.category is DeprecationWarning])\n"
        "print(type(model).__module__, type(model).__name__)\n"
        "print(float(sum(p.detach().double().sum() for p in model.parameters())))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], input=data, capture_output=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr.decode()
    warned, loaded, total = run.stdout.decode().splitlines()
    assert "xai_checks.toy_models moved to xai_checks.examples.toy_models" in warned
    assert loaded == "xai_checks.examples.toy_models SmallCNN"
    assert float(total) == float(sum(p.detach().double().sum() for p in model.parameters()))
