#!/usr/bin/env python
"""Equivalence checks of the model's fast paths on the accelerator, against float32 references.

    PYTHONPATH=src python scripts/gpu_check.py [--device cuda|cpu] [--compile]

Checks, each forward and backward, under bf16 autocast (how the trainer runs on CUDA):
- attention: every backend (sdpa, cudnn, xformers, math) for GQA group sizes G in {1, 2, 4, n_heads} against the
  float32 ``math`` backend;
- model: whole dense, GQA and MoE decoders (loss and every parameter gradient) against float32 ``math``;
- moe: the grouped-GEMM path (``torch._grouped_mm``), the per-expert loop path and a naive per-token
  float32 loop, with and without renormalisation and a shared expert;
- compile: a compiled training step (forward, backward, AdamW), per block (the trainer's default) and as one
  whole-forward graph, matches the eager one.

Error measure: ``max |y - y_ref| / max |y_ref|`` (max abs error of a unit-scale output); it must stay
below ``--tol`` (2e-2: bf16 keeps 8 mantissa bits, about 4e-3 per rounding, and a few roundings stack).
On CPU the CUDA-only parts (xformers, grouped GEMM, compile unless ``--compile``) are skipped with a reason.
Prints a PASS/FAIL/SKIP table; exits 1 if any check fails.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

try:
    import sparsedepth  # noqa: F401
except ImportError:  # run from a checkout: PYTHONPATH=src is the documented way, this is the fallback
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sparsedepth.config import ModelConfig  # noqa: E402
from sparsedepth.model import build_model  # noqa: E402
from sparsedepth.model import moe as moe_mod  # noqa: E402
from sparsedepth.model.attention import Attention, resolve_backend, rope_cache  # noqa: E402

BACKENDS = ("sdpa", "cudnn", "xformers", "math")


class Skip(Exception):
    """A check that cannot run here; the message says why."""


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    """max |a - ref| / max |ref|, in float64."""
    a, ref = a.detach().double(), ref.detach().double()
    return ((a - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


def worst(outs: dict[str, torch.Tensor], refs: dict[str, torch.Tensor]) -> tuple[float, str]:
    errs = {k: rel_err(outs[k], refs[k]) for k in refs}
    key = max(errs, key=errs.get)
    return errs[key], key


def autocast(device: torch.device, enabled: bool = True):
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


# --- attention -----------------------------------------------------------------------------------------

def attention_case(device: torch.device, backend: str, g: int, n_heads: int = 8, d: int = 512,
                   bsz: int = 2, seqlen: int = 256) -> Callable[[], tuple[float, str]]:
    def check() -> tuple[float, str]:
        try:
            resolved = resolve_backend(backend, device)
        except RuntimeError as e:
            raise Skip(str(e).split(";")[0])
        torch.manual_seed(0)
        cfg = ModelConfig(vocab_size=256, d_model=d, n_heads=n_heads, n_kv_heads=n_heads // g, max_seq_len=seqlen)
        attn = Attention(cfg).to(device)
        with torch.no_grad():  # unit-scale q, k, v and output
            attn.qkv.weight.normal_(0, d ** -0.5)
            attn.out.weight.normal_(0, d ** -0.5)
        cos, sin = (t.to(device) for t in rope_cache(seqlen, cfg.head_dim, cfg.rope_theta))
        x = torch.randn(bsz, seqlen, d, device=device)
        probe = torch.randn(bsz, seqlen, d, device=device)

        def run(name: str, bf16: bool) -> dict[str, torch.Tensor]:
            attn.backend = name
            attn.zero_grad(set_to_none=True)
            xr = x.clone().requires_grad_(True)
            with autocast(device, bf16):
                y = attn(xr, cos, sin)
            (y.float() * probe).sum().backward()
            return {"out": y.float(), "grad_x": xr.grad, "grad_qkv": attn.qkv.weight.grad.clone(),
                    "grad_out": attn.out.weight.grad.clone()}

        ref = run("math", bf16=False)
        return worst(run(resolved, bf16=True), ref)
    return check


# --- whole model -----------------------------------------------------------------------------------------

FAMILIES = {
    "dense": {},
    "gqa4": {"n_kv_heads": 1},  # 4 heads: G = 4 = MQA
    # top_k = E: bf16 router logits cannot flip a near-tie in the top-k choice against the float32 run (the
    # k < E routing is checked by the moe cases, with the choice shared between run and reference)
    "moe": {"n_experts": 4, "top_k": 4, "expert_hidden": 128},
}


def model_case(device: torch.device, family: str, backend: str) -> Callable[[], tuple[float, str]]:
    def check() -> tuple[float, str]:
        try:
            resolve_backend(backend, device)
        except RuntimeError as e:
            raise Skip(str(e).split(";")[0])
        torch.manual_seed(0)
        cfg = ModelConfig(vocab_size=512, d_model=256, n_layers=4, n_heads=4, max_seq_len=128, **FAMILIES[family])
        model = build_model(cfg, device)
        idx = torch.randint(0, cfg.vocab_size, (4, 129), device=device)

        def run(name: str, bf16: bool) -> dict[str, torch.Tensor]:
            model.set_attn_backend(name)
            model.zero_grad(set_to_none=True)
            with autocast(device, bf16):
                out = model(idx[:, :-1], idx[:, 1:])
            out.loss.backward()
            res = {"loss": out.loss.float()}
            if cfg.is_moe:  # the routed expert weights: their gradients flow through the MoE fast path
                res["grad_w_down"] = model.blocks[-1].ffn.w_down.grad.clone()
            res.update({n: p.grad.clone() for n, p in model.named_parameters() if n.endswith("qkv.weight")})
            res["grad_embed"] = model.embed.weight.grad.clone()
            return res

        ref = run("math", bf16=False)
        return worst(run(backend, bf16=True), ref)
    return check


# --- MoE paths -------------------------------------------------------------------------------------------

def naive_moe(moe: moe_mod.MoEFeedForward, x: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """Float32 loop over tokens and their experts; the top-k choice is borrowed from the run under test, so
    near-ties that bf16 router logits break differently do not count as errors."""
    probs = (x.float() @ moe.router.weight.float().T).softmax(-1)
    rows = []
    for i, tok in enumerate(x.float()):
        w = probs[i, experts[i]]
        if moe.renormalize:
            w = w / w.sum()
        out = torch.zeros_like(tok)
        for p, e in zip(w, experts[i].tolist()):
            out = out + p * ((F.silu(tok @ moe.w_gate[e].float()) * (tok @ moe.w_up[e].float())) @ moe.w_down[e].float())
        if moe.shared is not None:
            k = moe.top_k
            out = moe.shared(tok) / (k + 1) + out * k / (k + 1)
        rows.append(out)
    return torch.stack(rows)


def moe_case(device: torch.device, path: str, renormalize: bool, shared: int) -> Callable[[], tuple[float, str]]:
    def check() -> tuple[float, str]:
        grouped_ok = device.type == "cuda" and hasattr(torch, "_grouped_mm")
        if path == "grouped" and not grouped_ok:
            raise Skip("torch._grouped_mm runs on CUDA only" if device.type != "cuda" else
                       f"torch {torch.__version__} has no torch._grouped_mm")
        torch.manual_seed(0)
        d, n = 256, (384 if device.type == "cuda" else 96)  # the naive reference loops over tokens
        cfg = ModelConfig(vocab_size=256, d_model=d, n_heads=4, n_experts=8, top_k=2, expert_hidden=256,
                          shared_expert_hidden=shared, moe_renormalize=renormalize)
        moe = moe_mod.MoEFeedForward(cfg).to(device)
        with torch.no_grad():  # unit-scale expert outputs; a router sharp enough to prefer some experts
            for name, p in moe.named_parameters():
                p.normal_(0, (p.shape[-2] if p.dim() == 3 else p.shape[-1]) ** -0.5)
        x = torch.randn(n, d, device=device)
        probe = torch.randn(n, d, device=device)
        params = dict(moe.named_parameters())
        chosen = []
        hook = moe.routing.register_forward_hook(lambda m, a, o: chosen.append(a[0][1]))

        def grads(out: torch.Tensor, xr: torch.Tensor) -> dict[str, torch.Tensor]:
            gs = torch.autograd.grad((out.float() * probe).sum(), [xr, *params.values()], allow_unused=True)
            res = {"out": out.float(), "grad_x": gs[0]}
            res.update({f"grad_{k}": g for k, g in zip(params, gs[1:]) if g is not None})
            return res

        original = moe_mod._grouped_mm_ok
        used = []
        moe_mod._grouped_mm_ok = lambda t: used.append(original(t)) or (path == "grouped" and original(t))
        try:
            xr = x.clone().requires_grad_(True)
            with autocast(device):
                out = moe(xr)[0]
            test = grads(out, xr)
        finally:
            moe_mod._grouped_mm_ok = original
            hook.remove()
        if path == "grouped" and not any(used):
            return float("inf"), "grouped path did not run"
        xr = x.clone().requires_grad_(True)
        ref = grads(naive_moe(moe, xr, chosen[0]), xr)
        return worst(test, ref)
    return check


# --- compile ---------------------------------------------------------------------------------------------

def compile_case(device: torch.device, family: str, mode: str, enabled: bool) -> Callable[[], tuple[float, str]]:
    def check() -> tuple[float, str]:
        if not enabled:
            raise Skip("compile is checked on CUDA (on CPU it takes minutes; pass --compile to force)")
        torch.manual_seed(0)
        cfg = ModelConfig(vocab_size=512, d_model=256, n_layers=4, n_heads=4, max_seq_len=128, **FAMILIES[family])
        eager = build_model(cfg, device)
        compiled = build_model(cfg, device)
        compiled.load_state_dict(eager.state_dict())
        torch._dynamo.reset()
        if mode == "blocks":
            compiled.compile_regions()
            step_fn = compiled
        else:
            step_fn = torch.compile(compiled)
        opts = [torch.optim.AdamW(m.parameters(), lr=1e-3) for m in (eager, compiled)]
        losses: dict[str, list[float]] = {"eager": [], "compiled": []}
        t0 = time.perf_counter()
        for step in range(3):
            idx = torch.randint(0, cfg.vocab_size, (4, 129), device=device, generator=None)
            for name, fn, opt in (("eager", eager, opts[0]), ("compiled", step_fn, opts[1])):
                with autocast(device):
                    out = fn(idx[:, :-1], idx[:, 1:], telemetry=step == 2)
                out.loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                losses[name].append(out.loss.item())
        secs = time.perf_counter() - t0
        if not all(map(torch.isfinite, map(torch.tensor, losses["compiled"]))):
            return float("inf"), f"non-finite compiled loss {losses['compiled']}"
        err = max(abs(a - b) / abs(b) for a, b in zip(losses["compiled"], losses["eager"]))
        return err, f"loss over 3 steps ({secs:.0f} s incl. compile)"
    return check


# --- runner ----------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cuda or cpu")
    parser.add_argument("--tol", type=float, default=2e-2, help="max |y - y_ref| / max |y_ref| allowed")
    parser.add_argument("--compile", action="store_true", help="also check torch.compile on CPU (slow)")
    parser.add_argument("--only", default="", help="comma-separated check-name prefixes (attention,model,moe,compile)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("FAIL: --device cuda but torch.cuda.is_available() is False")
        return 1
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 references must really be float32
    torch.backends.cudnn.allow_tf32 = False

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__} on {name}; bf16 autocast vs float32 references; tol {args.tol:g}")
    try:
        import xformers

        print(f"xformers {xformers.__version__}")
    except Exception as e:  # noqa: BLE001 - any import failure means: skip the xformers checks
        print(f"xformers unavailable ({type(e).__name__}: {e}); its checks are skipped")
    if device.type != "cuda":
        print("no CUDA device: xformers, grouped-GEMM and compile checks are skipped")

    checks: dict[str, Callable[[], tuple[float, str]]] = {}
    for g in (1, 2, 4, 8):
        for backend in BACKENDS:
            checks[f"attention G={g} {backend}"] = attention_case(device, backend, g)
    for family in FAMILIES:
        for backend in BACKENDS:
            checks[f"model {family} {backend}"] = model_case(device, family, backend)
    for renorm, shared in ((False, 0), (True, 0), (False, 256)):
        for path in ("grouped", "loop"):
            variant = ("renorm" if renorm else "raw") + ("+shared" if shared else "")
            checks[f"moe {path} {variant}"] = moe_case(device, path, renorm, shared)
    for family in ("dense", "moe"):
        for mode in ("blocks", "model"):
            checks[f"compile {mode} {family}"] = compile_case(device, family, mode,
                                                              device.type == "cuda" or args.compile)
    only = [p.strip() for p in args.only.split(",") if p.strip()]
    if only:
        checks = {k: v for k, v in checks.items() if any(k.startswith(p) for p in only)}

    rows, failed = [], 0
    for label, fn in checks.items():
        t0 = time.perf_counter()
        try:
            err, where = fn()
            status = "PASS" if err < args.tol else "FAIL"
            detail = f"{err:.2e}  worst: {where}"
        except Skip as e:
            status, detail = "SKIP", str(e)
        except Exception as e:  # noqa: BLE001 - a crash is a failure, reported with its cause
            status, detail = "FAIL", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            traceback.print_exc()
        failed += status == "FAIL"
        rows.append((label, status, f"{time.perf_counter() - t0:6.1f}s", detail))
        print(f"{label:<32} {status:<5} {rows[-1][2]}  {detail}", flush=True)

    print("\n" + "-" * 100)
    counts = {s: sum(r[1] == s for r in rows) for s in ("PASS", "FAIL", "SKIP")}
    print(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped "
          f"(error = max|y - y_ref| / max|y_ref| over outputs and gradients, tol {args.tol:g})")
    print("RESULT:", "FAIL" if failed else "PASS")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
