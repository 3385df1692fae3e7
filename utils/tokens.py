"""Base-b tokens, as the original: each number becomes `digits` tokens, least-significant first; a
sequence of seq_len numbers gives inputs x = S[:-1] and targets y = S[1:] of seq_len*digits - 1 tokens."""
from __future__ import annotations

import numpy as np
import torch


def context_len(seq_len: int, digits: int) -> int:
    """Model input length: x = S[:-1] of a sequence of seq_len*digits tokens."""
    return seq_len * digits - 1


def to_tokens(values, base: int, digits: int):
    """(..., L) int64 numbers -> (..., L*digits) tokens; works on numpy arrays and torch tensors."""
    if digits == 1:
        return values
    parts = [(values // base**i) % base for i in range(digits)]
    stack = torch.stack if isinstance(values, torch.Tensor) else np.stack
    return stack(parts, -1).reshape(*values.shape[:-1], -1)


def check_vocab(max_value: int, base: int, digits: int, vocab_size: int, what: str = "generator") -> None:
    """Raise ValueError unless every value fits in `digits` base-`base` digits and every token < vocab_size."""
    if base < 2 or digits < 1:
        raise ValueError(f"need base >= 2 and digits >= 1, got base={base}, digits={digits}")
    if max_value >= base**digits:
        raise ValueError(f"{what} values reach {max_value}, which needs more than digits={digits} "
                         f"base-{base} digits (largest representable: {base**digits - 1})")
    max_token = max_value if digits == 1 else min(max_value, base - 1)
    if max_token >= vocab_size:
        raise ValueError(f"vocab_size={vocab_size} is too small: {what} tokens reach {max_token} "
                         f"(need vocab_size >= {max_token + 1})")
