"""Shared fixtures: tiny model configs of every family, seeded RNG, one thread per xdist worker."""
from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Callable

import pytest
import torch

try:
    import sparsedepth  # noqa: F401
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sparsedepth import catalog  # noqa: E402
from sparsedepth.config import ModelConfig  # noqa: E402

# Tests compose the program as the `sparsedepth` command does: the library's commands (train a named variant,
# bench) find the paper's experiment table through the catalog.
catalog.use("sparsedepth.paper.spec.experiments")


def load_script(name: str):
    """A module of ``scripts/`` (not a package), imported from its file."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # as an import would: its functions pickle by name (worker processes)
    spec.loader.exec_module(mod)
    return mod


def output_digest(obj, digits: int = 4) -> str:
    """A short digest of JSON-like outputs with floats rounded to ``digits`` significant digits (enough to see
    a changed definition, not the last-bit noise of another BLAS): golden values of a code version."""
    import hashlib
    import json
    import math

    def rounded(x):
        if isinstance(x, float):
            return float(f"{x:.{digits}g}") if math.isfinite(x) else str(x)
        if isinstance(x, dict):
            return {k: rounded(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [rounded(v) for v in x]
        return x

    return hashlib.sha256(json.dumps(rounded(obj), sort_keys=True).encode()).hexdigest()[:16]


# Tiny models gain nothing from intra-op threads, and two xdist workers on two cores with two threads each
# oversubscribe and crawl: every test runs on one thread.
torch.set_num_threads(1)

TINY = dict(vocab_size=64, d_model=32, n_layers=2, n_heads=4, max_seq_len=64)

# One tiny config per model family the paper compares; values override TINY.
FAMILIES: dict[str, dict] = {
    "dense": {},
    "gqa": {"n_kv_heads": 2},
    "moe": {"n_experts": 4, "top_k": 2, "expert_hidden": 32},
    "lns": {"layernorm_scaling": True},
}


def tiny_config(**overrides) -> ModelConfig:
    """A ModelConfig small enough for CPU unit tests (d=32, 2 layers, vocab 64) with ``overrides``."""
    return ModelConfig(**{**TINY, **overrides})


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny_cfg() -> Callable[..., ModelConfig]:
    """Factory: ``tiny_cfg(n_layers=3, n_experts=4)`` -> ModelConfig."""
    return tiny_config


@pytest.fixture(params=sorted(FAMILIES))
def family_cfg(request) -> ModelConfig:
    """A tiny config of each family (dense, gqa, moe, lns), parametrised."""
    return tiny_config(**FAMILIES[request.param])


WORDS = "the of and a to in is was for on that with as by at from his her it an were are which this be".split()


def word_corpus(root: Path, n_docs: int = 50, lengths: tuple[int, int] = (40, 200), extra_words: int = 150):
    """A synthetic corpus file of random word documents separated by <|endoftext|> lines, and a DataConfig
    on it with its own token cache under ``root``."""
    from sparsedepth.config import DataConfig

    rng = random.Random(0)
    vocab = WORDS + [f"w{i}" for i in range(extra_words)]
    (root / "corpus.txt").write_text("\n<|endoftext|>\n".join(
        " ".join(rng.choice(vocab) for _ in range(rng.randint(*lengths))) for _ in range(n_docs)))
    return DataConfig(corpus=str(root / "corpus.txt"), vocab_size=300, cache_dir=str(root / "cache"))


def tiny_trained_run(root: Path) -> Path:
    """A 2-layer model trained for 2 steps on a word corpus: a real run directory for the eval commands."""
    from sparsedepth.config import OptimConfig, TrainConfig
    from sparsedepth.train import train

    data = word_corpus(root, n_docs=40, lengths=(40, 120), extra_words=0)
    cfg = TrainConfig(model=ModelConfig(vocab_size=300, d_model=32, n_layers=2, n_heads=2, max_seq_len=64),
                      optim=OptimConfig(warmup_steps=1), data=data, seq_len=32, batch_size=4, steps=2,
                      device="cpu", log_interval=1)
    train(cfg, root / "run", progress=False)
    return root / "run"


def _rank_worker(rank: int, port: int, cfg, run_dir: Path, stop: int | None) -> None:
    # the environment torchrun would set; train() joins the gloo group from it
    import os

    from sparsedepth.train import train

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2")
    train(cfg, run_dir, stop_at_step=stop, progress=False)


def train_on_two_ranks(cfg, run_dir: Path, stop: int | None = None) -> None:
    """``train(cfg, run_dir)`` as `torchrun --nproc_per_node 2` would run it: two forked gloo processes."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_rank_worker, args=(port, cfg, run_dir, stop), nprocs=2, start_method="fork")
