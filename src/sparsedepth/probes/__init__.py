"""Layer-effectiveness and sparsity probes over one hook-based activation collector.

    from sparsedepth.probes import run_probes, probe_run, PROBES

``run_probes(model, windows)`` runs every probe on a sparsedepth ``Transformer`` or a Hugging Face causal LM
and returns plain data; ``probe_run(run_dir)`` does it for a training run and writes ``probes.json``. Each
probe is also a library function (``jacobian``, ``usefulness``, ``causal``, ``permutation``,
``layer_variance``, ``angular_distance``, ``block_influence``, ``logit_lens``, ``weight_density``,
``attention_sparsity``, ``expert_load``); their docstrings give the formula, the origin and how the result
differs from the official code.
"""
from .adapters import HFAdapter, ModelAdapter, ProbeError, SparsedepthAdapter, as_adapter
from .causal import causal
from .collector import ActivationCollector, StreamProbe, WindowBatch, replay, run_stream_probes
from .jacobian import block_jacobian, jacobian, jacobian_metrics
from .permutation import permutation
from .similarity import angular_distance, block_influence, layer_variance, logit_lens
from .sparsity import attention_sparsity, expert_load, nominal_density, weight_density
from .suite import CODE_VERSION, PROBES, hf_windows, probe_hf, probe_run, run_probes
from .usefulness import usefulness

__all__ = ["PROBES", "run_probes", "probe_run", "probe_hf", "hf_windows", "ProbeError", "ModelAdapter",
           "SparsedepthAdapter", "HFAdapter", "as_adapter", "ActivationCollector", "StreamProbe", "WindowBatch",
           "replay", "run_stream_probes", "jacobian", "block_jacobian", "jacobian_metrics", "usefulness", "causal",
           "permutation", "layer_variance", "angular_distance", "block_influence", "logit_lens", "weight_density",
           "attention_sparsity", "expert_load", "nominal_density", "CODE_VERSION"]
