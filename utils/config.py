"""Bounds on the configuration that follow from the machine and the data, checked before anything is
built, and the bounded integer-expression parser of `--moduli` / `--bits_to_keep`.

Every check raises ValueError with one line naming the flag (or YAML key) and the value; the scripts
turn that into `error: ...` and exit status 2.
"""
from __future__ import annotations

import math
import os
import re

INT64_MAX = 2**63 - 1  # generator states, a, c and token values live in int64
MAX_EXPR_CHARS = 200  # one --moduli entry; far longer than any real one
MAX_EXPR_DEPTH = 32  # nested parentheses
# Activations of a micro-batch live on one device. With CUDA the device's size is not asked for before
# the run starts (that would open a CUDA context on GPU 0 in every process of a distributed job), so a
# bound above every accelerator sold today stands in for it: the check catches impossible sizes only.
LARGEST_DEVICE_BYTES = 256 * 2**30


# --------------------------------------------------------------------------------------------------
# Integer expressions: numbers, **, *, +, -, parentheses; every intermediate result below 2^63.

_TOKEN = re.compile(r"\s*(?:(\d+)|(\*\*|[-+*()]))")


class _Expr:
    def __init__(self, text: str):
        self.tokens, pos, text = [], 0, text.strip()
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if not match or match.end() == pos:
                raise ValueError(f"unexpected {text[pos:pos + 10]!r}")
            self.tokens.append(int(match.group(1)) if match.group(1) else match.group(2))
            pos = match.end()
        self.i, self.depth = 0, 0

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self):
        token = self.peek()
        self.i += 1
        return token

    @staticmethod
    def capped(value: int) -> int:  # intermediate results up to 2^64, so that 2**63-1 can be written
        if abs(value) > 2**64:
            raise ValueError("a result reaches 2^63 or more")
        return value

    def expr(self) -> int:  # term (('+' | '-') term)*
        value = self.term()
        while self.peek() in ("+", "-"):
            op, right = self.take(), self.term()
            value = self.capped(value + right if op == "+" else value - right)
        return value

    def term(self) -> int:  # unary ('*' unary)*
        value = self.unary()
        while self.peek() == "*":
            self.take()
            value = self.capped(value * self.unary())
        return value

    def unary(self) -> int:  # '-' unary | '+' unary | power
        if self.peek() in ("-", "+"):
            sign = -1 if self.take() == "-" else 1
            return sign * self.unary()
        return self.power()

    def power(self) -> int:  # atom ('**' unary)?  (right-associative; -2**2 = -4 as in Python)
        base = self.atom()
        if self.peek() != "**":
            return base
        self.take()
        exponent = self.unary()
        if exponent < 0:
            raise ValueError("a negative exponent")
        if abs(base) >= 2 and exponent > 64:  # |base|^65 > 2^64: too large, known before computing it
            raise ValueError("a result reaches 2^63 or more")
        return self.capped(base**exponent)

    def atom(self) -> int:
        token = self.take()
        if isinstance(token, int):
            return self.capped(token)
        if token == "(":
            self.depth += 1
            if self.depth > MAX_EXPR_DEPTH:
                raise ValueError("parentheses nested too deeply")
            value = self.expr()
            if self.take() != ")":
                raise ValueError("a '(' without ')'")
            self.depth -= 1
            return value
        raise ValueError("a number is missing" if token is None else f"unexpected {token!r}")


def int_expr(text: str) -> int:
    """Evaluate '2**18', '3*2**10+1', '(2**4)**2' exactly; every result stays below 2^63, so the
    work is bounded whatever the input. Raises ValueError."""
    if len(text) > MAX_EXPR_CHARS:
        raise ValueError(f"longer than {MAX_EXPR_CHARS} characters")
    parser = _Expr(text)
    if not parser.tokens:
        raise ValueError("empty")
    value = parser.expr()
    if parser.peek() is not None:
        raise ValueError(f"unexpected {parser.peek()!r}")
    if abs(value) > INT64_MAX:
        raise ValueError("a result reaches 2^63 or more")
    return value


def parse_int_list(text, flag: str) -> list[int]:
    """'256,1024,2**12' -> [256, 1024, 4096] (numbers, **, *, +, -, parentheses)."""
    values = []
    for part in str(text).split(","):
        try:
            values.append(int_expr(part))
        except ValueError as err:
            raise ValueError(f"{flag}: cannot read {part.strip()[:40]!r} as an integer expression ({err}; "
                             f"numbers, **, *, +, - and parentheses allowed, results below 2^63)") from None
    return values


# --------------------------------------------------------------------------------------------------
# Bounds

def check_int(name: str, value, lo: int = 1, hi: int = INT64_MAX) -> None:
    if not lo <= value <= hi:
        rule = f">= {lo}" if hi == INT64_MAX else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be {rule}, got {value}")


def check_float(name: str, value, lo: float = 0.0, below: float | None = None) -> None:
    """A finite float >= lo (and < below when given)."""
    if not math.isfinite(value) or value < lo or (below is not None and value >= below):
        rule = f"in [{lo}, {below})" if below is not None else f"finite and >= {lo}"
        raise ValueError(f"{name} must be {rule}, got {value}")


def check_seeds(main_seed: int, data_seed: int, name, n_data_seeds: int = 1) -> None:
    """Seeds seed numpy's generators (non-negative) and torch.manual_seed (below 2^64): both fit int64.
    The curriculum seeds modulus i's (a, c) with data_seed + 1000 i, which must fit too."""
    check_int(name("main_seed"), main_seed, 0)
    check_int(name("data_seed"), data_seed, 0, INT64_MAX - 1000 * (n_data_seeds - 1))


def host_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on every platform: no bound then
        return 2**62


def model_parameters(*, vocab_size: int, n_embd: int, n_layer: int, block_size: int, no_rope: bool) -> int:
    """Parameters of the GPT (token table, blocks of 12 n_embd^2 weights, learned positions without RoPE)."""
    return vocab_size * n_embd + n_layer * 12 * n_embd * n_embd + (block_size * n_embd if no_rope else 0)


def check_memory(cfg, name, device_is_cuda: bool) -> None:
    """Refuse sizes that cannot be allocated: the model (built in host memory; weights, gradients and two
    AdamW moments in float32 during training) and the activations of one micro-batch (at least the
    float32 logits and 16 bytes per layer and embedding dimension for every token)."""
    if cfg.vocab_size > INT64_MAX // max(cfg.n_embd, 1):
        raise ValueError(f"{name('vocab_size')} {cfg.vocab_size} x {name('n_embd')} {cfg.n_embd} cannot be allocated")
    params = model_parameters(vocab_size=cfg.vocab_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
                              block_size=cfg.context_len, no_rope=cfg.no_rope)
    host = host_memory_bytes()
    if 16 * params > (host if not device_is_cuda else max(host, LARGEST_DEVICE_BYTES)) or 4 * params > host:
        raise ValueError(f"the model ({name('vocab_size')} {cfg.vocab_size}, {name('n_embd')} {cfg.n_embd}, "
                         f"{name('n_layer')} {cfg.n_layer}) has {params:,} parameters and needs "
                         f"{16 * params / 1e9:.3g} GB to train; this machine has {host / 1e9:.3g} GB")
    tokens = cfg.batch_size * cfg.context_len
    activations = tokens * (4 * cfg.vocab_size + 16 * cfg.n_layer * cfg.n_embd)
    limit = LARGEST_DEVICE_BYTES if device_is_cuda else host
    if activations > limit:
        raise ValueError(f"{name('batch_size')} {cfg.batch_size} x {name('seq_len')} {cfg.seq_len} x {name('digits')} "
                         f"{cfg.digits}: one micro-batch of {tokens:,} tokens needs at least "
                         f"{activations / 1e9:.3g} GB of activations, more than {limit / 1e9:.3g} GB "
                         f"({'any accelerator' if device_is_cuda else 'host memory'})")


def device_is_cuda(choice: str) -> bool:
    """Whether the run will train on CUDA (`--device auto` means CUDA when one is available)."""
    if choice == "cpu":
        return False
    import torch
    return choice == "cuda" or torch.cuda.is_available()


# Integers both scripts share that must be >= 1 (seq_len >= 2: inputs are a sequence without its last number).
POSITIVE_INTS = ("seq_len", "digits", "n_a", "n_c", "n_test_a", "n_test_c", "n_example", "n_layer", "n_head", "n_embd",
                 "batch_size", "grad_acc_steps", "eval_interval", "checkpoint_interval")


def check_common(cfg, name, log=print, n_data_seeds: int = 1) -> None:
    """The bounds both scripts share; `name(attr)` gives the flag or YAML key a message names."""
    for attr in POSITIVE_INTS:
        check_int(name(attr), getattr(cfg, attr), 2 if attr == "seq_len" else 1)
    if cfg.keep_checkpoints is not None:
        check_int(name("keep_checkpoints"), cfg.keep_checkpoints)
    for attr in ("vocab_size", "base"):
        if getattr(cfg, attr) is not None:
            check_int(name(attr), getattr(cfg, attr), 2 if attr == "base" else 1)
    if cfg.base is not None:  # every digit value base^i, i < digits, must fit int64
        check_int(name("digits"), cfg.digits, 1, 63)
        if cfg.base ** (cfg.digits - 1) > INT64_MAX:
            raise ValueError(f"{name('base')} {cfg.base} with {name('digits')} {cfg.digits}: base^(digits-1) "
                             f"does not fit int64")
    check_seeds(cfg.main_seed, cfg.data_seed, name, n_data_seeds)
    check_float(name("lr_trgt"), cfg.lr_trgt)
    check_float(name("lr_min"), cfg.lr_min)
    if cfg.lr_min > cfg.lr_trgt:  # the original has no such rule: the cosine then rises to lr_min
        log(f"note: lr_min {cfg.lr_min} > lr_trgt {cfg.lr_trgt}: the cosine part of the schedule rises to lr_min")
    check_float(name("weight_decay"), cfg.weight_decay)
    for attr in ("beta1", "beta2"):  # AdamW's own rule, checked before any work
        check_float(name(attr), getattr(cfg, attr), 0.0, 1.0)
    if cfg.n_embd % cfg.n_head:
        raise ValueError(f"{name('n_embd')} {cfg.n_embd} must be divisible by {name('n_head')} {cfg.n_head}")
    if not cfg.no_rope and (cfg.n_embd // cfg.n_head) % 2:
        raise ValueError(f"RoPE needs an even head size, got {name('n_embd')}/{name('n_head')} = "
                         f"{cfg.n_embd // cfg.n_head} (or use no_rope)")
