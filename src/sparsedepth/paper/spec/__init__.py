"""What the paper ran (the experiments at each scale) and what it reported (its numbers)."""
