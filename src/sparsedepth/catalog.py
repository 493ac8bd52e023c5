"""Named configs: how the library's commands find a project's experiment table without importing it.

``sparsedepth train --profile P --experiment E --variant V`` and ``sparsedepth bench`` time or train configs
that a project names (here the paper's, :mod:`sparsedepth.paper.spec.experiments`). The library never imports
a project: whoever composes the program (the ``sparsedepth`` command, a test, a script) names the module once
with :func:`use`, and the library asks :func:`get` for it when it first needs a config.

A catalog is any module or object with ``scale(profile)`` (model width ``d_model``, ``n_heads``,
``seq_for(paper_t)``), ``base(profile, **knobs)``, ``resolve(profile, experiment, variant)`` and
``probe_settings(profile)``, all returning or raising ``ConfigError`` for unknown names.
"""
from __future__ import annotations

import importlib
from typing import Any

from .config import ConfigError

_source: str | Any | None = None  # a module name (imported on first use) or the catalog itself


def use(catalog: str | Any | None) -> None:
    """Resolve names through ``catalog``: a module name (imported lazily), a module or object, or None."""
    global _source
    _source = catalog


def get() -> Any:
    """The catalog set by :func:`use`; ConfigError with the fix when none is."""
    global _source
    if _source is None:
        raise ConfigError("no experiment catalog is set: run through the `sparsedepth` command, or call "
                          "sparsedepth.catalog.use('sparsedepth.paper.spec.experiments') first")
    if isinstance(_source, str):
        _source = importlib.import_module(_source)
    return _source
