#!/usr/bin/env bash
# Time the paper-scale configs on one GPU with `sparsedepth bench --config` (records in
# paper_results/bench/<device>/config-*.json). One measurement per call, each well under ten minutes on an H200:
#
#   scripts/paper_scale/bench.sh dense        # dense 1B, DDP mode (one GPU: the plain model), global batch 256
#   scripts/paper_scale/bench.sh dense-fsdp   # the same under FSDP2 (one rank: bf16 parameters, no sharding gain)
#   scripts/paper_scale/bench.sh moe          # MoE-7B/1B, FSDP2 + activation checkpointing, micro-batches of 1
#   scripts/paper_scale/bench.sh moe-ddp      # MoE-7B/1B as the plain model (DDP mode), same batch
#   scripts/paper_scale/bench.sh moe-no-ac    # MoE-7B/1B under FSDP2 without activation checkpointing (may not fit)
#
# The MoE runs use a global batch of 16 sequences (65k tokens) instead of the paper's 256, so that a few dozen
# timed steps take a minute: tokens/s per step does not depend on how many micro-batches a step accumulates.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
bench() { python3 -m sparsedepth.cli bench "$@"; }
case "${1:-}" in
  dense) bench --config scripts/paper_scale/dense-1b.yaml ;;
  dense-fsdp) bench --config scripts/paper_scale/dense-1b.yaml --set parallel=fsdp ;;
  moe) bench --config scripts/paper_scale/moe-7b-1b.yaml --set batch_size=16 ;;
  moe-ddp) bench --config scripts/paper_scale/moe-7b-1b.yaml --set batch_size=16 --set parallel=ddp ;;
  moe-no-ac) bench --config scripts/paper_scale/moe-7b-1b.yaml --set batch_size=16 \
               --set activation_checkpointing=false ;;
  *) echo "usage: $0 dense|dense-fsdp|moe|moe-ddp|moe-no-ac" >&2; exit 2 ;;
esac
