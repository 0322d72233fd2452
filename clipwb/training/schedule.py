"""The learning-rate schedule shared by pretraining and PO training."""
from __future__ import annotations

import math


def warmup_cosine(step: int, total: int, lr: float, warmup: int = 0) -> float:
    """Learning rate of optimiser step ``step`` (0-based): linear warm-up over ``warmup`` steps, then cosine from
    ``lr`` to 0 over the remaining ``total - warmup`` steps."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))) * lr
