"""Old module paths that still import, for one release, with a ``DeprecationWarning``.

Modules move when the code is reorganised, but users' scripts, and models
pickled by MLflow (a pickle names each class by its module), still name the
old paths. A package lists its moves once in a table; importing an old path
then returns the new module itself (same objects, so ``isinstance`` and
pickles agree) and warns once.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

__all__ = ["lazy_exports", "lazy_exports_of", "redirect_moved_modules"]


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds only the old names in its table; loading one imports and returns the new module."""

    def __init__(self, moved: Mapping[str, str | tuple[str, ...]]) -> None:
        self.moved = dict(moved)

    def find_spec(
        self, fullname: str, path: object = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.moved:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = self.moved[spec.name]
        targets = (new,) if isinstance(new, str) else new
        warnings.warn(
            f"{spec.name} moved to {' and '.join(targets)}; the old path will be removed in "
            "the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        if len(targets) == 1:
            return importlib.import_module(targets[0])
        return _SplitModule(spec.name, targets)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the new module was executed when it was imported."""


class _SplitModule(ModuleType):
    """An old module that was split: each name is looked up in the new modules, in order."""

    def __init__(self, name: str, targets: tuple[str, ...]) -> None:
        super().__init__(name, f"moved to {', '.join(targets)}")
        self._targets = targets

    def __getattr__(self, attribute: str) -> Any:
        for target in self._targets:
            module = importlib.import_module(target)
            if hasattr(module, attribute):
                return getattr(module, attribute)
        raise AttributeError(f"module {self.__name__!r} has no attribute {attribute!r}")


def redirect_moved_modules(moved: Mapping[str, str | tuple[str, ...]]) -> None:
    """Make each old module name in ``moved`` import as its new module (old -> new).

    A module split in several maps to a tuple: the old name then looks each
    attribute up in the new modules in turn.
    """
    sys.meta_path.insert(0, _MovedModules(moved))


def lazy_exports(
    package: str,
    attributes: Mapping[str, str],
    *,
    renamed: Mapping[str, str] | None = None,
    removed: Mapping[str, str] | None = None,
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a package whose names load on first use.

    ``attributes`` maps each exported name to the module that defines it
    (a name that is itself a submodule maps to that submodule). Importing the
    package then costs nothing until a name is used: ``xai-gate --help``
    never pulls in torch. ``renamed`` maps an old public name to
    ``"module:new_name"``: it still resolves, with a ``DeprecationWarning``.
    ``removed`` maps a name that is gone to what replaces it, for the error.
    """
    renamed, removed = dict(renamed or {}), dict(removed or {})

    def __getattr__(name: str) -> Any:
        if name in renamed:
            module, _, new = renamed[name].partition(":")
            warnings.warn(
                f"{package}.{name} is now {module}.{new}; the old name will be removed in the "
                "next release",
                DeprecationWarning,
                stacklevel=2,
            )
            return getattr(importlib.import_module(module), new)
        if name in removed:
            raise AttributeError(f"{package}.{name} was removed: {removed[name]}")
        if name not in attributes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(attributes[name])
        return module if module.__name__ == f"{package}.{name}" else getattr(module, name)

    def __dir__() -> list[str]:
        return sorted(attributes)

    return __getattr__, __dir__


def lazy_exports_of(
    package: str, modules: Sequence[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` re-exporting each module's ``__all__``, on first use.

    A name is looked up in ``modules`` in order, importing each only as far as
    needed, so list the cheap modules first: a package that stands for one
    old module keeps every old name without listing them a second time.
    """

    def __getattr__(name: str) -> Any:
        for module_name in modules:
            module = importlib.import_module(module_name)
            if name in getattr(module, "__all__", ()):
                return getattr(module, name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(
            name
            for module_name in modules
            for name in getattr(importlib.import_module(module_name), "__all__", ())
        )

    return __getattr__, __dir__
