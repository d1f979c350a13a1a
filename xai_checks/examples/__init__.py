"""Demo data and toy models: synthetic shortcut tasks with exact ground truth.

Not checks themselves: the demo, the benchmarks and the tests need a task
whose shortcut is known to the pixel or the word, and a model small enough to
train on it in seconds. Kept apart so the library's modules are only checks.
Submodules load lazily, as in :mod:`xai_checks`, so importing this package
pulls in no torch.
"""

from __future__ import annotations

from xai_checks.compat import lazy_exports

_EXPORTS = {
    name: f"{__name__}.{name}"
    for name in ("synthetic", "synthetic_text", "toy_models", "toy_text_models")
}
"""The submodules, each by itself."""

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
