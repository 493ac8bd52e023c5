"""Where an MoE layer's time goes, stage by stage, and its combine against one with atomic adds.

    PYTHONPATH=src python scripts/moe_trials.py --out moe_trials.json     # CUDA: check, then time
    PYTHONPATH=src python scripts/moe_trials.py --device cpu --tokens 2048 --train-tokens 2048 --no-compile

The recipe's +MoE layer (d=512, 64 experts, top-8, expert width 256) in two settings:
- ``probe``: 32,768 tokens (the gpu probes' batch of 64 windows of 512) in float32 with TF32 matmuls,
  forward only, as the probes run it;
- ``train``: 65,536 tokens under bf16 autocast, forward + backward, eagerly and compiled (the trainer
  compiles each block).

Timed: each stage of ``MoEFeedForward.forward`` on its own (route, dispatch, experts, combine; forward only) and
the whole layer, with two combines: ``unpermute`` (the layer's: the expert-sorted rows copied back to assignment
order, a permutation without atomics, then each token's gate-weighted sum over its k rows) and ``index_add`` (the
layer's earlier combine: each weighted row added into its token, k atomic adds per token row on CUDA). A dense
SwiGLU of the same active width (k x expert width) on the same tokens gives the scale.
"""
from __future__ import annotations

import argparse
import sys
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from sparsedepth.atomic import atomic_write_json  # noqa: E402
from sparsedepth.config import ModelConfig  # noqa: E402
from sparsedepth.model.moe import MoEFeedForward, Routing, SwiGLU  # noqa: E402


def combine_index_add(moe: MoEFeedForward, x: torch.Tensor, ys: torch.Tensor, r: Routing) -> torch.Tensor:
    """The earlier ``MoEFeedForward.combine``: each weighted row added into its token with ``index_add_``."""
    ys = ys * r.weights.reshape(-1)[r.order, None].to(ys.dtype)
    return moe.mix_shared(x, torch.zeros_like(x).index_add_(0, r.token_of, ys.to(x.dtype)))


VARIANTS = ("unpermute", "index_add")


def layer(d: int, experts: int, top_k: int, hidden: int, dev: torch.device, variant: str) -> MoEFeedForward:
    cfg = ModelConfig(vocab_size=64, d_model=d, n_layers=1, n_heads=1, n_experts=experts, top_k=top_k,
                      expert_hidden=hidden)
    torch.manual_seed(0)
    moe = MoEFeedForward(cfg)
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=d ** -0.5)
    if variant == "index_add":
        moe.combine = types.MethodType(combine_index_add, moe)
    return moe.to(dev)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def best_ms(fn, dev: torch.device, reps: int) -> float:
    """Best of ``reps`` timings after three untimed calls (allocator and cuBLAS warm-up)."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        _sync(dev)
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        times.append(1e3 * (time.perf_counter() - t0))
    return min(times)


def check(d: int, experts: int, top_k: int, hidden: int, n: int, dev: torch.device) -> dict:
    """Relative difference of the layer's combine from index_add, output and input gradient, float32."""
    x = torch.randn(n, d, device=dev)
    out = {}
    for variant in VARIANTS:
        xi = x.clone().requires_grad_()
        y = layer(d, experts, top_k, hidden, dev, variant)(xi)[0]
        y.square().sum().backward()
        out[variant] = (y.detach(), xi.grad)
    rel = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
    (y0, g0), (y1, g1) = out["index_add"], out["unpermute"]
    return {"out": rel(y1, y0), "grad_x": rel(g1, g0)}


def time_probe(d: int, experts: int, top_k: int, hidden: int, n: int, dev: torch.device, reps: int) -> dict:
    """Forward only, float32 (TF32 matmuls on CUDA), no autograd: the probes' setting."""
    x = torch.randn(n, d, device=dev)
    res = {"tokens": n, "stages_ms": {}, "layer_ms": {}}
    with torch.no_grad():
        moe = layer(d, experts, top_k, hidden, dev, "unpermute")
        r = moe.route(x)
        xs = moe.dispatch(x, r)
        ys = moe._experts(xs, r.counts)
        st = res["stages_ms"]
        st["route"] = best_ms(lambda: moe.route(x), dev, reps)
        st["dispatch"] = best_ms(lambda: moe.dispatch(x, r), dev, reps)
        st["experts"] = best_ms(lambda: moe._experts(xs, r.counts), dev, reps)
        st["combine unpermute"] = best_ms(lambda: moe.combine(x, ys, r), dev, reps)
        st["combine index_add"] = best_ms(lambda: combine_index_add(moe, x, ys, r), dev, reps)
        for variant in VARIANTS:
            m = layer(d, experts, top_k, hidden, dev, variant)
            res["layer_ms"][variant] = best_ms(lambda: m(x), dev, reps)
        dense = SwiGLU(d, top_k * hidden).to(dev)
        res["dense_swiglu_ms"] = best_ms(lambda: dense(x), dev, reps)
    return res


def time_train(d: int, experts: int, top_k: int, hidden: int, n: int, dev: torch.device, reps: int,
               compiled: bool) -> dict:
    """Forward + backward under bf16 autocast on CUDA (float32 elsewhere): the training setting, eager and (with
    ``compiled``) through torch.compile as the trainer runs each block."""
    x = torch.randn(n, d, device=dev, requires_grad=True)
    res = {"tokens": n, "layer_ms": {}, "compiled_layer_ms": {}}

    def fwd_bwd(module):
        def step():
            with torch.autocast(dev.type, torch.bfloat16, enabled=dev.type == "cuda"):
                out = module(x)
            (out[0] if isinstance(out, tuple) else out).float().square().mean().backward()
        return step

    for variant in VARIANTS:
        moe = layer(d, experts, top_k, hidden, dev, variant)
        res["layer_ms"][variant] = best_ms(fwd_bwd(moe), dev, reps)
        if compiled:
            torch._dynamo.reset()  # both variants are one code object to dynamo
            res["compiled_layer_ms"][variant] = best_ms(fwd_bwd(torch.compile(moe)), dev, reps)
    res["dense_swiglu_ms"] = best_ms(fwd_bwd(SwiGLU(d, top_k * hidden).to(dev)), dev, reps)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--experts", type=int, default=64)
    ap.add_argument("--top-k", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=256, help="expert width")
    ap.add_argument("--tokens", type=int, default=32768, help="tokens per probe forward")
    ap.add_argument("--train-tokens", type=int, default=65536, help="tokens per training micro-batch")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--no-compile", action="store_true", help="time the training setting eagerly only")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # as the probes run (probes.run_probes tf32=True)
    shape = (args.d, args.experts, args.top_k, args.hidden)
    res = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "torch": torch.__version__,
           "d_model": args.d, "n_experts": args.experts, "top_k": args.top_k, "expert_hidden": args.hidden,
           "check": check(*shape, min(args.tokens, 4096), dev)}
    print(f"unpermute against index_add (float32): output {res['check']['out']:.1e}, "
          f"input gradient {res['check']['grad_x']:.1e}", flush=True)
    res["probe"] = time_probe(*shape, args.tokens, dev, args.reps)
    res["train"] = time_train(*shape, args.train_tokens, dev, args.reps, compiled=not args.no_compile)
    for setting in ("probe", "train"):
        r = res[setting]
        parts = [f"{k} {v:.3f}" for k, v in r.get("stages_ms", {}).items()]
        parts += [f"layer {k} {v:.3f}" for k, v in r["layer_ms"].items()]
        parts += [f"compiled layer {k} {v:.3f}" for k, v in r.get("compiled_layer_ms", {}).items()]
        parts += [f"dense {r['dense_swiglu_ms']:.3f}"]
        print(f"{setting} ({r['tokens']} tokens), ms: " + ", ".join(parts), flush=True)
    if args.out:
        atomic_write_json(Path(args.out), res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
