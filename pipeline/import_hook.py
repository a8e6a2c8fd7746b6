"""Runs code around the first import of a named module, without importing it any earlier.

The quiet start wraps `import tensorflow` (its C++ start-up lines), and the stack fixes one
TF-Agents function right after its module loads; both must not import heavy packages in
commands (report, sweep) that never use them.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from collections.abc import Callable
from types import ModuleType

# around(run, module): must call run() once, which executes the module's code.
Around = Callable[[Callable[[], None], ModuleType], None]


def around_import(name: str, around: Around) -> None:
    """Registers `around` for the first import of `name`; a no-op once it is imported."""
    if name in sys.modules or any(isinstance(f, _Finder) and f.name == name for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder(name, around))


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, name: str, around: Around) -> None:
        self.name, self.around = name, around

    def find_spec(self, name, path, target=None):  # noqa: ANN001, ANN201 (importlib's API)
        if name != self.name:
            return None
        sys.meta_path.remove(self)  # one-shot: the real finders locate the module
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader, self.around)
        return spec


class _Loader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader, around: Around) -> None:
        self._loader, self._around = loader, around

    def create_module(self, spec):  # noqa: ANN001, ANN201
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._around(lambda: self._loader.exec_module(module), module)

    def __getattr__(self, name: str):  # noqa: ANN204 (get_filename, resources, ...)
        return getattr(self._loader, name)
