"""The one activation collector every probe uses, and replay from a cached residual stream.

``ActivationCollector(adapter, windows)`` walks held-out windows ([n, T+1] token ids: inputs ``[:, :-1]``,
targets ``[:, 1:]``) in micro-batches of about ``batch_tokens`` tokens. For each micro-batch it runs one
forward with hooks on every block (a pre-hook reading the input h_l and the call's other arguments, a
forward hook reading the output h_{l+1}) and yields a ``WindowBatch`` holding the raw residual stream
h_0 ... h_L in float32. Hidden states never come from ``output_hidden_states`` (paper-spec 1.0 shows that
tuple is post-final-norm at the end and shifts when a layer is skipped). Hooks exist only during that
forward, so nothing stays registered and replays are not observed by them.

Memory is bounded by one micro-batch: probes fold each batch into running sums (float64) and drop it, so
the number of windows changes time, not memory.

``replay(adapter, batch, start, h)`` runs layers ``start ... L-1`` on a stream ``h`` with the exact call
arguments each layer received in the base forward (RoPE tables, masks, position ids), which lets
interventions (skip, swap, linear replacement) reuse the cached prefix instead of recomputing it.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from .adapters import ModelAdapter, ProbeError, hidden

__all__ = ["BlockCall", "WindowBatch", "ActivationCollector", "StreamProbe", "replay", "loss_sum",
           "run_stream_probes", "check_windows", "sync"]


def sync(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock timings mean something."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class BlockCall:
    """How a block was called besides its hidden-state input (positional first argument or a keyword)."""

    args: tuple
    kwargs: dict
    key: str | None = None  # None: hidden state was args[0]; else the keyword that carried it

    def __call__(self, block: torch.nn.Module, h: torch.Tensor):
        if self.key is None:
            return block(h, *self.args, **self.kwargs)
        return block(*self.args, **{self.key: h}, **self.kwargs)


@dataclass
class WindowBatch:
    """One micro-batch of windows and its raw residual stream."""

    inputs: torch.Tensor  # [B, T] token ids on the model's device
    targets: torch.Tensor  # [B, T] next tokens
    streams: list[torch.Tensor] = field(default_factory=list)  # h_0 .. h_L, float32 [B, T, d]
    calls: list[BlockCall] = field(default_factory=list)
    index: int = 0  # micro-batch number

    @property
    def n_tokens(self) -> int:
        return self.targets.numel()


def check_windows(windows: torch.Tensor, adapter: ModelAdapter | None = None) -> torch.Tensor:
    """Validate [n, T+1] integer windows; errors say what shape or range is expected."""
    if not isinstance(windows, torch.Tensor) or windows.dim() != 2 or windows.shape[1] < 2 or windows.shape[0] < 1:
        shape = tuple(windows.shape) if isinstance(windows, torch.Tensor) else type(windows).__name__
        raise ProbeError(f"windows must be an integer tensor [n_windows, seq_len + 1] (inputs = [:, :-1], "
                         f"targets = [:, 1:]), e.g. from sparsedepth.data.val_windows; got {shape}")
    if windows.dtype.is_floating_point or windows.dtype == torch.bool:
        raise ProbeError(f"windows must hold integer token ids, got dtype {windows.dtype}")
    vocab = adapter.info().get("vocab_size") if adapter is not None else None
    if vocab and (int(windows.max()) >= vocab or int(windows.min()) < 0):
        raise ProbeError(f"windows hold token ids in [{int(windows.min())}, {int(windows.max())}] but the model's "
                         f"vocabulary has {vocab} entries; tokenize with the model's own tokenizer")
    return windows


def loss_sum(adapter: ModelAdapter, h: torch.Tensor, targets: torch.Tensor, chunk_elems: int | None = None) -> float:
    """Sum over tokens of next-token cross-entropy of head(final_norm(h)), float32 logits, float64 total.

    Chunked over tokens so the [tokens, vocab] logits never exceed ``chunk_elems`` floats (default 2^26 on
    CPU, 2^28 = 1 GiB on CUDA); the total stays on the device until one host transfer at the end."""
    hf, tf = h.reshape(-1, h.shape[-1]), targets.reshape(-1)
    vocab = adapter.head.weight.shape[0]
    chunk_elems = chunk_elems or (1 << 28 if hf.is_cuda else 1 << 26)
    step = max(1, chunk_elems // max(vocab, 1))
    total = torch.zeros((), dtype=torch.float64, device=hf.device)
    for i in range(0, hf.shape[0], step):
        logits = adapter.logits(hf[i:i + step]).float()
        total += F.cross_entropy(logits, tf[i:i + step], reduction="sum").double()
    return total.item()


def replay(adapter: ModelAdapter, batch: WindowBatch, start: int, h: torch.Tensor, *,
           stop: int | None = None, on_layer: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None
           ) -> torch.Tensor:
    """Run layers ``start .. stop-1`` (default: to the end) on stream ``h`` with each layer's recorded call
    arguments; ``on_layer(l, h_in, h_out)`` sees float32 streams. Returns the float32 output stream."""
    stop = adapter.n_layers if stop is None else stop
    x = h.to(adapter.dtype)
    for l in range(start, stop):
        y = hidden(batch.calls[l](adapter.blocks[l], x))
        if on_layer is not None:
            on_layer(l, x.float(), y.float())
        x = y
    return x.float()


def _split(windows: torch.Tensor, batch_tokens: int) -> list[torch.Tensor]:
    per = max(1, batch_tokens // (windows.shape[1] - 1))
    return [windows[i:i + per] for i in range(0, windows.shape[0], per)]


class ActivationCollector:
    """Iterate micro-batches of ``windows`` with their residual stream (see module docstring).

    ``extra_hooks`` are (module, forward_hook) pairs registered only during each base forward (e.g. MoE
    routing). ``keep_streams=False`` records only the call arguments (cheaper when a probe needs none).
    The first micro-batch is checked: each block's input must be the previous block's output, and
    head(final_norm(h_L)) must reproduce the model's logits, else the adapter does not describe the model.
    """

    def __init__(self, adapter: ModelAdapter, windows: torch.Tensor, *, batch_tokens: int = 4096,
                 extra_hooks: Sequence[tuple[torch.nn.Module, Callable]] = (), keep_streams: bool = True,
                 check: bool = True):
        self.adapter, self.windows = adapter, check_windows(windows, adapter)
        self.batch_tokens, self.extra_hooks, self.keep_streams, self.check = (
            batch_tokens, list(extra_hooks), keep_streams, check)
        self.forward_seconds = 0.0

    def __len__(self) -> int:
        return len(_split(self.windows, self.batch_tokens))

    def __iter__(self) -> Iterator[WindowBatch]:
        for i, w in enumerate(_split(self.windows, self.batch_tokens)):
            w = w.to(self.adapter.device)
            yield self.collect(w[:, :-1], w[:, 1:], index=i, check=self.check and i == 0)

    def collect(self, inputs: torch.Tensor, targets: torch.Tensor, *, index: int = 0,
                check: bool = False) -> WindowBatch:
        """One hooked forward of ``inputs``; returns the batch with streams and per-layer calls."""
        ad, L = self.adapter, self.adapter.n_layers
        batch = WindowBatch(inputs, targets, streams=[None] * (L + 1), calls=[None] * L, index=index)
        ins: list = [None] * L

        def pre(l):
            def hook(module, args, kwargs):
                if args:
                    x, call = args[0], BlockCall(tuple(args[1:]), dict(kwargs))
                else:
                    kw = dict(kwargs)
                    x = kw.pop("hidden_states")
                    call = BlockCall((), kw, key="hidden_states")
                batch.calls[l] = call
                if self.keep_streams and (l == 0 or check):
                    ins[l] = x.detach().to(torch.float32, copy=True)
            return hook

        def post(l):
            def hook(module, args, kwargs, out):
                if self.keep_streams:
                    batch.streams[l + 1] = hidden(out).detach().to(torch.float32, copy=True)
            return hook

        handles = []
        sync(ad.device)
        t0 = time.perf_counter()
        try:
            for l, blk in enumerate(ad.blocks):
                handles.append(blk.register_forward_pre_hook(pre(l), with_kwargs=True))
                handles.append(blk.register_forward_hook(post(l), with_kwargs=True))
            for module, hook in self.extra_hooks:
                handles.append(module.register_forward_hook(hook))
            with torch.no_grad():
                logits = ad.forward(inputs)
        finally:
            for h in handles:
                h.remove()
        sync(ad.device)
        self.forward_seconds += time.perf_counter() - t0
        if any(c is None for c in batch.calls):
            missing = [l for l, c in enumerate(batch.calls) if c is None]
            raise ProbeError(f"layers {missing} were not called in the forward pass; the probes need every "
                             f"block in adapter.blocks to run once per forward")
        if self.keep_streams:
            batch.streams[0] = ins[0]
        if check:
            self._check(batch, ins, logits)
        return batch

    def _check(self, batch: WindowBatch, ins: list, logits: torch.Tensor) -> None:
        if not self.keep_streams:
            return
        for l in range(1, self.adapter.n_layers):
            a, b = ins[l], batch.streams[l]
            if not torch.allclose(a, b, rtol=1e-5, atol=1e-6):
                raise ProbeError(f"the input of layer {l} differs from the output of layer {l - 1} "
                                 f"(max |diff| {float((a - b).abs().max()):.3g}); the model transforms the "
                                 f"residual stream between blocks, which these probes do not support")
        with torch.no_grad():
            mine = self.adapter.logits(batch.streams[-1]).float()
        ref = logits.float()
        err = float((mine - ref).abs().max())
        if not math.isfinite(err) or err > 1e-3 * max(1.0, float(ref.abs().max())):
            raise ProbeError(f"head(final_norm(h_L)) differs from the model's logits (max |diff| {err:.3g}); the "
                             f"model applies something after its last block that the adapter does not know "
                             f"(e.g. logit soft-capping or scaling)")


class StreamProbe(ABC):
    """A probe fed by the collector: ``update(batch, pass_index)`` for each micro-batch of each of its
    ``passes`` passes, ``end_pass(pass_index)`` after each pass, ``result()`` at the end (plain data).
    ``hooks()`` lists extra (module, forward_hook) pairs active during the base forwards."""

    name = "probe"
    passes = 1

    def __init__(self, adapter: ModelAdapter):
        self.adapter = adapter
        self.seconds = 0.0

    def hooks(self) -> list[tuple[torch.nn.Module, Callable]]:
        return []

    @abstractmethod
    def update(self, batch: WindowBatch, pass_index: int) -> None: ...

    def end_pass(self, pass_index: int) -> None:
        pass

    @abstractmethod
    def result(self) -> dict: ...


def run_stream_probes(adapter: ModelAdapter, windows: torch.Tensor, probes: Sequence[StreamProbe], *,
                      batch_tokens: int = 4096, progress: bool = False) -> float:
    """Feed every probe all micro-batches, pass after pass, sharing one base forward per micro-batch.

    Each probe's ``seconds`` accumulates its own update time; returns the seconds spent in base forwards."""
    n_passes = max((p.passes for p in probes), default=0)
    collect_s = 0.0
    for pass_index in range(n_passes):
        active = [p for p in probes if p.passes > pass_index]
        hooks = [h for p in active for h in p.hooks()] if pass_index == 0 else []
        col = ActivationCollector(adapter, windows, batch_tokens=batch_tokens, extra_hooks=hooks,
                                  check=pass_index == 0)
        it = col
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(col, total=len(col), desc=f"probes pass {pass_index + 1}/{n_passes}")
        for batch in it:
            for p in active:
                t0 = time.perf_counter()
                with torch.no_grad():
                    p.update(batch, pass_index)
                sync(adapter.device)
                p.seconds += time.perf_counter() - t0
            del batch
        for p in active:
            t0 = time.perf_counter()
            p.end_pass(pass_index)
            p.seconds += time.perf_counter() - t0
        collect_s += col.forward_seconds
    return collect_s
