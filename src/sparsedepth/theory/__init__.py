"""Theory module: variance propagation in random pre-LN stacks with Bernoulli-masked weights (paper-spec §4).

Our numerical test of a reconstruction of the paper's claim, not the paper's theorem; see ``simulator``.
"""

from sparsedepth.theory.simulator import (
    predicted_jacobian_dist,
    predicted_variance,
    simulate,
    summarize,
    weight_stds,
)

__all__ = ["simulate", "predicted_variance", "predicted_jacobian_dist", "summarize", "weight_stds"]
