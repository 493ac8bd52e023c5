"""The catalog through which the library's commands find named experiments without importing them."""
from __future__ import annotations

import pytest

from sparsedepth import catalog
from sparsedepth.config import ConfigError, TrainConfig


@pytest.fixture
def restore():
    saved = catalog._source
    yield
    catalog.use(saved)


def test_without_a_catalog_the_error_names_the_fix(restore) -> None:
    catalog.use(None)
    with pytest.raises(ConfigError, match="sparsedepth.catalog.use"):
        catalog.get()


def test_a_module_name_is_imported_on_first_use(restore) -> None:
    catalog.use("sparsedepth.paper.spec.experiments")
    cat = catalog.get()
    assert isinstance(cat.resolve("smoke", "depth", "L3"), TrainConfig)
    assert catalog.get() is cat


def test_train_resolves_a_named_variant_through_the_catalog(restore) -> None:
    from types import SimpleNamespace

    from sparsedepth.train.cli import resolve_args

    want = TrainConfig()
    catalog.use(SimpleNamespace(resolve=lambda p, e, v: want if (p, e, v) == ("x", "y", "z") else None))
    args = SimpleNamespace(profile="x", experiment="y", variant="z", config=None, overrides=[], run_dir=None)
    cfg, run_dir = resolve_args(args)
    assert cfg is want and str(run_dir).endswith("x/y/z")
