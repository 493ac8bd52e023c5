"""One small interface over decoder-only language models, so every probe runs on this package's
``Transformer`` and on Hugging Face causal LMs (Llama, OLMo-2, GPT-2 style) alike.

What a probe needs from a model:
- ``blocks``: the decoder layers in order (an ``nn.ModuleList``); a layer maps the residual stream h_l to
  h_{l+1} and may return a tensor or a tuple whose first item is h_{l+1} (``hidden`` / ``with_hidden``);
- ``final_norm`` and ``head``: logits = head(final_norm(h_L)) (``logits``); ``embed``;
- ``forward(idx)``: the model's own logits (used once per probe run to check the two agree);
- ``substitute(l, fn)``: replace layer l's output by ``fn(input, output)`` through a forward hook;
- ``swapped(i, j)``: exchange all parameters of two layers (restored on exit);
- ``attention_mode``/``attention_probs``: a path that exposes attention probabilities;
- ``routing_modules``, ``weight_matrices``, ``info``, ``nominal_density`` for the sparsity measures.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import contextlib
import re
from typing import Callable, Iterator

import torch
from torch import nn

from ..errors import UserError

__all__ = ["ProbeError", "ModelAdapter", "SparsedepthAdapter", "HFAdapter", "as_adapter", "hidden", "with_hidden"]


class ProbeError(UserError, ValueError):
    """A probe cannot run on this model or input; the message says what is wrong and how to fix it."""


def hidden(out):
    """The residual stream from a layer's return value (a tensor, or a tuple/list with it first)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def with_hidden(out, h: torch.Tensor):
    """``out`` with its residual-stream entry replaced by ``h`` (same structure as the layer returned)."""
    if isinstance(out, tuple):
        return (h,) + tuple(out[1:])
    if isinstance(out, list):
        return [h] + list(out[1:])
    return h


# Name fragments that classify a block's weight matrix (HF naming zoo and ours).
_KIND_RULES = [
    ("router", re.compile(r"(router|\.gate\.weight$|mlp\.gate$|block_sparse_moe\.gate)")),
    ("attn_qkv", re.compile(r"(q_proj|k_proj|v_proj|qkv|c_attn|query|key|value|wqkv|att_proj)")),
    ("attn_out", re.compile(r"(attn|attention).*(o_proj|out|c_proj|dense|wo)")),
    ("ffn_out", re.compile(r"(down|c_proj|w2|fc2|ff_out|wo)")),
    ("ffn_in", re.compile(r"(up|gate|c_fc|w1|w3|fc1|ff_proj|w_in)")),
]


def classify_weight(name: str) -> str:
    """attn_qkv | attn_out | ffn_in | ffn_out | router | other, from a parameter name inside a block."""
    for kind, pat in _KIND_RULES:
        if pat.search(name):
            return kind
    return "other"


class ModelAdapter(ABC):
    """Base adapter; subclasses set the modules and override the model-specific calls."""

    kind = "generic"

    def __init__(self, model: nn.Module, blocks: nn.ModuleList, final_norm: nn.Module, head: nn.Module,
                 embed: nn.Module):
        self.model, self.blocks, self.final_norm, self.head, self.embed = model, blocks, final_norm, head, embed
        if len(blocks) == 0:
            raise ProbeError("the model has no decoder layers; probes need at least one block")

    # -- shapes and placement ---------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def d_model(self) -> int:
        return int(self.embed.weight.shape[1])

    @property
    def device(self) -> torch.device:
        return next(self.blocks[0].parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.blocks[0].parameters()).dtype

    # -- calling ------------------------------------------------------------------------------------------
    @abstractmethod
    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """The model's own logits [B, T, V]."""

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """head(final_norm(h)): the final norm recomputes its statistics on ``h`` itself."""
        return self.head(self.final_norm(h.to(self.dtype)))

    @contextlib.contextmanager
    def substitute(self, layer: int, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Iterator[None]:
        """Within the block, layer ``layer`` returns ``fn(h_in, h_out)`` instead of h_out (forward hook)."""

        def hook(module, args, kwargs, out):
            x = args[0] if args else kwargs["hidden_states"]
            return with_hidden(out, fn(x, hidden(out)).to(hidden(out).dtype))

        handle = self.blocks[layer].register_forward_hook(hook, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()

    @contextlib.contextmanager
    def swapped(self, i: int, j: int) -> Iterator[None]:
        """Exchange every parameter of layers i and j (as the official permutation score does: non-parameter
        attributes such as a LayerNorm-Scaling factor stay with the position). Storage pointers are swapped,
        nothing is copied, and the swap is undone on exit even after an error."""
        if i == j:
            yield
            return
        pi, pj = dict(self.blocks[i].named_parameters()), dict(self.blocks[j].named_parameters())
        if pi.keys() != pj.keys() or any(pi[k].shape != pj[k].shape for k in pi):
            raise ProbeError(f"layers {i} and {j} have different parameter names or shapes; the permutation "
                             f"probe needs identical blocks (skip it with probes excluding 'permutation')")

        def swap():
            for k in pi:
                pi[k].data, pj[k].data = pj[k].data, pi[k].data

        swap()
        try:
            yield
        finally:
            swap()

    # -- attention and routing ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def attention_mode(self, name: str) -> Iterator[None]:
        """Run with an attention implementation whose ops torch.func can batch ("math"/"eager")."""
        yield

    def attention_probs(self, idx: torch.Tensor, on_layer: Callable[[int, torch.Tensor], None]) -> str | None:
        """Call ``on_layer(l, probs [B, H, T, T])`` for every layer on one forward of ``idx``; returns None on
        success, or the reason why attention probabilities are not available for this model."""
        return "attention probabilities are not exposed by this model adapter"

    def routing_modules(self) -> list[nn.Module] | None:
        return None

    # -- weights and config -------------------------------------------------------------------------------
    def weight_matrices(self, layer: int) -> list[tuple[str, str, torch.Tensor]]:
        """(name, kind, weights as [M, rows, cols]) for every weight matrix of a block (stacked experts keep
        their leading expert axis; a plain matrix gets M = 1). Vectors (norm gains, biases) are skipped."""
        out = []
        for name, p in self.blocks[layer].named_parameters():
            if p.dim() < 2:
                continue
            w = p.detach()
            w = w.reshape(-1, *w.shape[-2:]) if w.dim() > 2 else w[None]
            out.append((name, classify_weight(name), w))
        return out

    def info(self) -> dict:
        return {"adapter": self.kind, "n_layers": self.n_layers, "d_model": self.d_model,
                "dtype": str(self.dtype).replace("torch.", ""), "device": str(self.device)}

    def nominal_density(self) -> dict:
        """Structural densities: KV heads per query head (1/G) and active experts (k/E)."""
        i = self.info()
        nh, nkv = i.get("n_heads"), i.get("n_kv_heads")
        e, k = i.get("n_experts") or 0, i.get("top_k") or 0
        return {"kv": (nkv / nh) if nh and nkv else None, "group_size": (nh // nkv) if nh and nkv else None,
                "experts": (k / e) if e else 1.0, "n_experts": e, "top_k": k if e else None}


class SparsedepthAdapter(ModelAdapter):
    """This package's ``Transformer``."""

    kind = "sparsedepth"

    def __init__(self, model: nn.Module):
        super().__init__(model, model.blocks, model.norm, model.head, model.embed)
        self.cfg = model.cfg

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx).logits

    def _attns(self) -> list:
        """Each block's attention module (None for a block without one, e.g. a test's custom block)."""
        return [getattr(blk, "attn", None) for blk in self.blocks]

    @contextlib.contextmanager
    def attention_mode(self, name: str) -> Iterator[None]:
        from ..model import resolve_backend

        want = resolve_backend("math" if name in ("math", "eager") else name, self.device)
        prev = [(a, a.backend) for a in self._attns() if a is not None]
        for a, _ in prev:
            a.backend = want
        try:
            yield
        finally:
            for a, b in prev:  # restore exactly what each layer had
                a.backend = b

    def attention_probs(self, idx, on_layer):
        handles = []
        for l, a in enumerate(self._attns()):
            if a is not None:
                handles.append(a.probs.register_forward_hook(lambda m, args, out, l=l: on_layer(l, out.detach())))
        try:
            with self.attention_mode("math"), torch.no_grad():
                self.model(idx)
        finally:
            for h in handles:
                h.remove()
        return None

    def routing_modules(self):
        if not self.cfg.is_moe:
            return None
        return [getattr(getattr(blk, "ffn", None), "routing", None) for blk in self.blocks]

    def info(self) -> dict:
        c = self.cfg
        return {**super().info(), "n_heads": c.n_heads, "n_kv_heads": c.n_kv_heads, "n_experts": c.n_experts,
                "top_k": c.top_k if c.is_moe else None, "vocab_size": c.vocab_size,
                "layernorm_scaling": c.layernorm_scaling}


# Where Hugging Face families keep their parts: (layers, final norm) attribute paths.
_HF_LAYOUTS = [
    ("model.layers", "model.norm"),  # Llama, Mistral, OLMo-2, Qwen, Gemma, OLMoE, Mixtral
    ("transformer.h", "transformer.ln_f"),  # GPT-2, GPT-J, Bloom-like
    ("gpt_neox.layers", "gpt_neox.final_layer_norm"),  # GPT-NeoX / Pythia
    ("model.decoder.layers", "model.decoder.final_layer_norm"),  # OPT
]


def _getpath(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


class HFAdapter(ModelAdapter):
    """A Hugging Face ``*ForCausalLM`` (called with ``use_cache=False``)."""

    kind = "hf"

    def __init__(self, model: nn.Module):
        for layers_path, norm_path in _HF_LAYOUTS:
            layers, norm = _getpath(model, layers_path), _getpath(model, norm_path)
            if isinstance(layers, nn.ModuleList) and norm is not None:
                break
        else:
            raise ProbeError(f"{type(model).__name__}: decoder layers / final norm not found; looked for "
                             f"{[p for p, _ in _HF_LAYOUTS]} and {[n for _, n in _HF_LAYOUTS]}. Pass a causal LM "
                             f"of a supported family or extend probes.adapters._HF_LAYOUTS")
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        if head is None or embed is None:
            raise ProbeError(f"{type(model).__name__} has no output (lm_head) or input embedding; probes need a "
                             f"causal LM with a language-modelling head")
        super().__init__(model, layers, norm, head, embed)
        self.config = model.config

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=idx, use_cache=False).logits

    @contextlib.contextmanager
    def attention_mode(self, name: str) -> Iterator[None]:
        prev = getattr(self.config, "_attn_implementation", None)
        want = "eager" if name in ("math", "eager") else name
        if prev is not None and prev != want and hasattr(self.model, "set_attn_implementation"):
            self.model.set_attn_implementation(want)
            try:
                yield
            finally:
                self.model.set_attn_implementation(prev)
        else:
            yield

    def attention_probs(self, idx, on_layer):
        with self.attention_mode("eager"), torch.no_grad():
            try:
                out = self.model(input_ids=idx, use_cache=False, output_attentions=True)
            except Exception as e:  # some families cannot return attention weights
                return f"output_attentions failed on {type(self.model).__name__}: {e}"
        att = getattr(out, "attentions", None)
        if not att or len(att) != self.n_layers or any(a is None for a in att):
            return f"{type(self.model).__name__} returned no per-layer attention weights with output_attentions=True"
        for l, a in enumerate(att):
            on_layer(l, a.detach())
        return None

    def info(self) -> dict:
        c = self.config
        nh = getattr(c, "num_attention_heads", None) or getattr(c, "n_head", None)
        nkv = getattr(c, "num_key_value_heads", None) or nh
        e = getattr(c, "num_local_experts", None) or getattr(c, "num_experts", None) or 0
        k = getattr(c, "num_experts_per_tok", None) if e else None
        return {**super().info(), "model_type": getattr(c, "model_type", None), "n_heads": nh, "n_kv_heads": nkv,
                "n_experts": e, "top_k": k, "vocab_size": getattr(c, "vocab_size", None)}


def as_adapter(model) -> ModelAdapter:
    """Wrap ``model`` (this package's Transformer, a Hugging Face causal LM, or an adapter already)."""
    if isinstance(model, ModelAdapter):
        return model
    from ..model import Transformer

    if isinstance(model, Transformer):
        return SparsedepthAdapter(model)
    if hasattr(model, "config") and hasattr(model, "get_output_embeddings"):
        return HFAdapter(model)
    raise ProbeError(f"cannot probe a {type(model).__name__}: pass a sparsedepth Transformer or a Hugging Face "
                     f"causal LM (AutoModelForCausalLM), or wrap your model in a probes.adapters.ModelAdapter")
