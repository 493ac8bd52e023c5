"""All probes in one call: ``run_probes(model, windows)`` and ``probe_run(run_dir)`` (writes probes.json).

The stream probes (variance, usefulness, causal, permutation, angular distance, block influence, logit lens,
expert load) share one base forward per micro-batch of windows; the Jacobian uses a small sample of its own
(4 × 128 tokens by default) and attention sparsity runs a few windows on the ``math`` attention path.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from ..faults import crash_point
from .adapters import ProbeError, as_adapter
from .causal import CausalProbe
from .collector import check_windows, run_stream_probes, sync
from .jacobian import jacobian
from .permutation import PermutationProbe
from .similarity import AngularDistanceProbe, BlockInfluenceProbe, LogitLensProbe, VarianceProbe
from .sparsity import ExpertProbe, attention_sparsity, weight_density
from .usefulness import UsefulnessProbe

__all__ = ["PROBES", "CODE_VERSION", "run_probes", "probe_run", "probe_model", "probe_hf", "hf_windows", "parse_probes"]

# Bump when a change alters what run_probes returns (a new reading, another definition): cached probe results
# of runs then count as stale. tests/probes/test_probe_code_version.py holds the digest of each version's
# outputs on a tiny fixed model and fails when the outputs change while this number does not.
CODE_VERSION = 2  # 2: usefulness.skip (plain layer removal) and variance.max_abs

PROBES = ("variance", "jacobian", "usefulness", "causal", "permutation", "angular_distance", "block_influence",
          "logit_lens", "sparsity")


def parse_probes(probes) -> tuple[str, ...]:
    """A tuple of known probe names from a sequence or a comma-separated string; unknown names are an error."""
    if isinstance(probes, str):
        probes = [p.strip() for p in probes.split(",") if p.strip()]
    probes = tuple(dict.fromkeys(probes))
    unknown = [p for p in probes if p not in PROBES]
    if unknown or not probes:
        raise ProbeError(f"unknown probe(s) {unknown or '(none given)'}; choose from {', '.join(PROBES)}")
    return probes


def run_probes(model, windows: torch.Tensor, *, probes=PROBES, paper_compat: bool = False, progress: bool = False,
               batch_tokens: int = 4096, jacobian_windows: int = 4, jacobian_seq_len: int = 128,
               jacobian_layers: list[int] | None = None, max_pairs: int | None = None, seed: int = 0,
               attention_windows: int = 4, attention_context: torch.Tensor | None = None, tf32: bool = True) -> dict:
    """Run the selected probes on ``windows`` ([n, T+1] held-out token ids) and return JSON-ready results.

    Keys (present when that probe ran): variance, jacobian, usefulness, causal, permutation,
    angular_distance, block_influence, logit_lens, sparsity, plus timings {probe: seconds} and meta.
    ``paper_compat`` adds the official code's usefulness variant (transposed replacement) beside the fixed one.
    ``attention_context``: held-out windows of another length (the model's training context) on which attention
    sparsity is read a second time, as ``sparsity.attention_train_T``: ``windows`` show every model at one
    context length, these show each at its own (the sequence-length study's mechanism is about the latter).
    The model is put in eval mode for the call and its mode restored afterwards; nothing stays hooked.
    ``tf32``: float32 matmuls on CUDA use TensorFloat-32 tensor cores (about 8x the float32 rate; relative
    error about 1e-3, far below the differences the probes report); ``False`` keeps full float32.
    """
    probes = parse_probes(probes)
    ad = as_adapter(model)
    windows = check_windows(windows, ad)
    t_start = time.perf_counter()
    was_training = ad.model.training
    ad.model.eval()
    # our decoder with the hand-written kernels runs torch's code meanwhile: the Jacobian probe's torch.func
    # transforms have no rules for those custom ops
    kernels = getattr(ad.model, "kernels", None) if hasattr(ad.model, "set_kernels") else None
    if kernels is not None:
        ad.model.set_kernels("torch")
    old_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        res, timings = _run(ad, windows, probes, paper_compat, progress, batch_tokens, jacobian_windows,
                            jacobian_seq_len, jacobian_layers, max_pairs, seed, attention_windows,
                            attention_context)
    finally:
        ad.model.train(was_training)
        if kernels is not None:
            ad.model.set_kernels(kernels)
        torch.backends.cuda.matmul.allow_tf32 = old_tf32
    timings["total"] = time.perf_counter() - t_start
    res["timings"] = timings
    res["meta"] = {"probes": list(probes), "n_windows": int(windows.shape[0]), "seq_len": int(windows.shape[1] - 1),
                   "n_tokens": int(windows[:, 1:].numel()), "paper_compat": paper_compat, "model": ad.info(),
                   "options": {"batch_tokens": batch_tokens, "jacobian_windows": jacobian_windows,
                               "jacobian_seq_len": jacobian_seq_len, "jacobian_layers": jacobian_layers,
                               "max_pairs": max_pairs, "seed": seed, "attention_windows": attention_windows,
                               "tf32": tf32},
                   "torch": torch.__version__}
    return res


def _run(ad, windows, probes, paper_compat, progress, batch_tokens, jacobian_windows, jacobian_seq_len,
         jacobian_layers, max_pairs, seed, attention_windows, attention_context):
    stream = []
    if "variance" in probes:
        stream.append(VarianceProbe(ad))
    if "usefulness" in probes:
        stream.append(UsefulnessProbe(ad, paper_compat=paper_compat))
    if "causal" in probes:
        stream.append(CausalProbe(ad))
    if "permutation" in probes:
        stream.append(PermutationProbe(ad, max_pairs=max_pairs, seed=seed))
    if "angular_distance" in probes:
        stream.append(AngularDistanceProbe(ad))
    if "block_influence" in probes:
        stream.append(BlockInfluenceProbe(ad))
    if "logit_lens" in probes:
        stream.append(LogitLensProbe(ad))
    expert = ExpertProbe(ad) if "sparsity" in probes else None
    if expert is not None and expert.mods:
        stream.append(expert)

    res: dict = {}
    timings: dict[str, float] = {}
    if stream:
        timings["collect"] = run_stream_probes(ad, windows, stream, batch_tokens=batch_tokens, progress=progress)
        for p in stream:
            if p is expert:
                continue
            r = p.result()
            res[p.name] = r["block_influence"] if p.name == "block_influence" else r
            timings[p.name] = p.seconds
    if "jacobian" in probes:
        t0 = time.perf_counter()
        res["jacobian"] = jacobian(ad, windows, n_windows=jacobian_windows, seq_len=jacobian_seq_len,
                                   layers=jacobian_layers)
        sync(ad.device)
        timings["jacobian"] = time.perf_counter() - t0
    if "sparsity" in probes:
        t0 = time.perf_counter()
        res["sparsity"] = {"weight_density": weight_density(ad),
                           "attention": attention_sparsity(ad, windows, n_windows=attention_windows),
                           "expert": expert.result(), "nominal_density": ad.nominal_density()}
        if attention_context is not None:
            same = attention_context.shape == windows.shape and torch.equal(attention_context, windows)
            res["sparsity"]["attention_train_T"] = (res["sparsity"]["attention"] if same else
                                                    attention_sparsity(ad, attention_context, n_windows=attention_windows))
        sync(ad.device)
        timings["sparsity"] = time.perf_counter() - t0 + expert.seconds
    return res, timings


def _device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def probe_run(run_dir, *, n_windows: int = 16, seq_len: int | None = None, probes=PROBES, out: str = "probes.json",
              paper_compat: bool = False, seed: int = 0, device: str = "auto", progress: bool = False,
              root: str | Path | None = None, **options) -> dict:
    """Probe the latest checkpoint of a training run on ``n_windows`` held-out validation windows
    (``sparsedepth.data.val_windows`` with ``seed``) of ``seq_len`` tokens (default: the run's own), write
    ``run_dir/out`` atomically and return the result. ``options`` go to ``run_probes``; ``root``: where the
    run's relative data paths start (default: the current folder)."""
    from ..atomic import atomic_write_json
    from ..train import load_run

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise ProbeError(f"{run_dir} is not a run directory (no config.json); train one with `sparsedepth train` "
                         f"or pass --hf PATH for a Hugging Face model folder")
    probes = parse_probes(probes)
    model, cfg, data = load_run(run_dir, device=device, root=root)
    res = probe_model(model, cfg, data, n_windows=n_windows, seq_len=seq_len, probes=probes,
                      paper_compat=paper_compat, seed=seed, progress=progress, **options)
    crash_point("probe")
    atomic_write_json(run_dir / out, res)
    return res


def probe_model(model, cfg, data, *, n_windows: int = 16, seq_len: int | None = None, probes=PROBES,
                paper_compat: bool = False, seed: int = 0, progress: bool = False, first_windows: int | None = None,
                **options) -> dict:
    """``probe_run`` on a model of a run already in memory (``cfg`` its TrainConfig, ``data`` its TokenData),
    without writing. ``first_windows``: probe only the first that many of the ``n_windows`` windows (a cheaper
    reading on a subset of the same windows)."""
    from ..data import val_windows

    probes = parse_probes(probes)
    model.float()  # probes compute in float32 whatever the training precision was
    T = seq_len or cfg.seq_len
    if T > cfg.model.max_seq_len:
        raise ProbeError(f"seq_len {T} exceeds the model's max_seq_len {cfg.model.max_seq_len}; pass a smaller --seq-len")
    windows = val_windows(data.val, T, n_windows, seed=seed)
    if first_windows is not None:
        windows = windows[:first_windows]
    # attention is read a second time at the run's own context (sparsity.attention_train_T)
    context = None
    if "sparsity" in probes:
        context = windows if T == cfg.seq_len else val_windows(
            data.val, cfg.seq_len, options.get("attention_windows", 4), seed=seed)
    res = run_probes(model, windows, probes=probes, paper_compat=paper_compat, progress=progress, seed=seed,
                     attention_context=context, **options)
    res["meta"].update({"source": "run", "split": "val", "window_seed": seed})
    return res


def hf_windows(tokenizer, n_windows: int, seq_len: int, *, seed: int = 0, corpus: str = "embedded") -> torch.Tensor:
    """Held-out windows for a model with its own tokenizer: the validation documents of ``corpus`` (the same
    document split as ``DataConfig`` defaults), tokenised and joined by EOS, then ``val_windows``."""
    import numpy as np

    from ..config import DataConfig
    from ..data import load_documents, split_documents, val_windows

    dc = DataConfig()
    docs = load_documents(corpus)
    _, val_idx = split_documents(len(docs), dc.val_fraction, dc.split_seed)
    eos = getattr(tokenizer, "eos_token_id", None)
    need = n_windows * (seq_len + 1)
    ids: list[int] = []
    for i in val_idx:
        ids.extend(tokenizer(docs[i])["input_ids"])
        if eos is not None:
            ids.append(eos)
        if len(ids) >= 4 * need:  # enough for distinct non-overlapping windows; skip tokenising the rest
            break
    return val_windows(np.asarray(ids, dtype=np.int64), seq_len, n_windows, seed=seed)


def probe_hf(model_path, *, out=None, n_windows: int = 16, seq_len: int = 256, probes=PROBES,
             paper_compat: bool = False, seed: int = 0, device: str = "auto", corpus: str = "embedded",
             progress: bool = False, **options) -> dict:
    """Probe a local Hugging Face causal-LM folder (model + tokenizer, no download) on held-out windows of
    ``corpus`` tokenised with its tokenizer; writes ``out`` (default ``model_path/probes.json``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..atomic import atomic_write_json

    path = Path(model_path)
    if not (path / "config.json").is_file():
        raise ProbeError(f"{path} is not a Hugging Face model folder (no config.json); pass the folder written by "
                         f"save_pretrained")
    probes = parse_probes(probes)
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as e:
        raise ProbeError(f"no usable tokenizer in {path} ({e}); save the tokenizer next to the model "
                         f"(tokenizer.save_pretrained(folder))") from e
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    model.to(_device(device))
    windows = hf_windows(tok, n_windows, seq_len, seed=seed, corpus=corpus)
    res = run_probes(model, windows, probes=probes, paper_compat=paper_compat, progress=progress, seed=seed, **options)
    res["meta"].update({"source": "hf", "model_path": path.name, "corpus": corpus, "split": "val",
                        "window_seed": seed})
    atomic_write_json(Path(out) if out is not None else path / "probes.json", res)
    return res
