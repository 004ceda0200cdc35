"""Heavy libraries imported on first use, so a CLI command that never touches them starts fast."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class _LazyModule(ModuleType):
    """Stands in for a module until an attribute is read, then delegates to the real one."""

    def __getattr__(self, attr: str) -> Any:
        # Not put in sys.modules: `import x` elsewhere still imports the real module, once.
        module = importlib.import_module(self.__name__)
        # Copied once so later reads are plain attribute lookups (hot loops read `np.` a lot);
        # a name the module gains later (a submodule imported afterwards) still comes here.
        self.__dict__.update(module.__dict__)
        return getattr(module, attr)


def lazy_module(name: str) -> Any:
    """A stand-in for module `name` that imports it on first use (callers type it as the module)."""
    return _LazyModule(name)
