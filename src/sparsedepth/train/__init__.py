"""Training: ``train(cfg, run_dir)`` writes a run directory (config, metrics, provenance, summary,
checkpoints); ``load_run(run_dir)`` gives back the model, config and data.

    from sparsedepth.train import train, load_run, delete_checkpoints
"""
from .checkpoint import delete_checkpoints, latest_checkpoint
from .loop import NonFiniteLossError, Trainer, check_vocab, load_run, train
from .optim import lr_factor, param_groups
from .telemetry import SpikeMonitor, read_metrics

__all__ = ["train", "load_run", "delete_checkpoints", "latest_checkpoint", "NonFiniteLossError", "Trainer",
           "check_vocab", "lr_factor", "param_groups", "SpikeMonitor", "read_metrics"]
