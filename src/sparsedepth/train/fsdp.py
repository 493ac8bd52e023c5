"""Sharded data parallel (FSDP2, ``torch.distributed.fsdp.fully_shard``) and activation checkpointing.

With ``parallel: fsdp`` every block is its own FSDP unit (the MoE experts' stacked ``[E, d, h]`` tensors are
block parameters, so they are sharded with it), and the root unit holds the embedding, final norm and head.
Each rank keeps 1/world of the float32 parameters, gradients and AdamW state; a block's parameters are
gathered in bf16 just before it runs and freed after, and gradients are reduce-scattered in float32.
Parameter names and the state dict keys are those of the unsharded model.

Everything that reads the model sees ordinary modules: telemetry of the forward (activations are local),
per-block norms (``telemetry.block_norms`` sums each rank's shard), the gradient norm (``full_tensor``),
and probes and evaluation through ``load_run``, which loads the sharded checkpoint into a whole model.
"""
from __future__ import annotations

import functools

import torch
import torch.distributed as tdist
from torch.distributed.tensor import DTensor
from torch.utils.checkpoint import checkpoint


def checkpoint_blocks(model: torch.nn.Module) -> None:
    """Recompute each block's forward during backward instead of keeping its activations.

    The block's ``forward`` is wrapped in place (no wrapper module), so parameter names, hooks and the
    state dict are unchanged. The model draws no random numbers, so no RNG state needs restoring."""
    for blk in model.blocks:
        blk.forward = functools.partial(checkpoint, blk.forward, use_reentrant=False, preserve_rng_state=False)


def shard_model(model: torch.nn.Module, device: torch.device, bf16: bool) -> None:
    """Apply FSDP2 in place: one unit per block, then the root. Call it after ``checkpoint_blocks`` and before
    building the optimiser (the parameters become DTensors); compile afterwards with
    ``compile_regions(hooks_eager=True)``, which leaves FSDP's hooks out of the compiled graphs."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if not tdist.is_initialized():
        raise RuntimeError("parallel=fsdp needs a process group: train through train() or torchrun, or call "
                           "init_distributed(device, group_of_one=True) before building the Trainer")
    mesh = init_device_mesh(device.type, (tdist.get_world_size(),))
    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16
              else MixedPrecisionPolicy())
    for blk in model.blocks:
        fully_shard(blk, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a sharded tensor; the tensor itself otherwise."""
    return t.to_local() if isinstance(t, DTensor) else t


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole value of a sharded (or partially reduced) tensor on every rank; the tensor itself otherwise."""
    return t.full_tensor() if isinstance(t, DTensor) else t
