"""GPT-2-style decoders, the original's models with its parameter names.

Three positional schemes share one pre-LayerNorm transformer: rotary (GPT_RoPE, the default),
learned absolute positions (GPT) and learned number positions plus a per-digit "abacus"
embedding (GPT_oth_abacus). Parameter names match the original project, so its params_*.pth
files load here after strip_compile_prefix.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50257
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    digits: int = 1  # tokens per number; used only by GPT_oth_abacus

    @classmethod
    def for_run(cls, cfg) -> "GPTConfig":
        """The model shape of a run's validated config (block size = the context length)."""
        return cls(block_size=cfg.context_len, vocab_size=cfg.vocab_size, n_layer=cfg.n_layer, n_head=cfg.n_head,
                   n_embd=cfg.n_embd, digits=cfg.digits)


def rope_table(head_dim: int, end: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the angles t * f_j, shape (end, head_dim // 2), f_j = theta^(-2j/head_dim)."""
    freqs = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(end, dtype=torch.float32), freqs)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (..., T, head_dim): pair (2j, 2j+1) is a complex number times e^{i t f_j}.

    Real arithmetic instead of complex tensors, which torch.compile handles better; done in
    float32 and cast back to the input dtype.
    """
    xf = x.float()
    re, im = xf[..., 0::2], xf[..., 1::2]
    rotated = torch.stack((re * cos - im * sin, re * sin + im * cos), dim=-1)
    return rotated.flatten(-2).type_as(x)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        if config.n_embd % config.n_head:
            raise ValueError(f"n_embd={config.n_embd} must be divisible by n_head={config.n_head}")
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.c_proj.residual_projection = True  # smaller init std (GPTBase._init_weights)

    def forward(self, x, rope=None):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.gelu = nn.GELU()  # exact erf form, not the tanh approximation
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.c_proj.residual_projection = True

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x, rope=None):
        x = x + self.attn(self.ln_1(x), rope)
        return x + self.mlp(self.ln_2(x))


class GPTBase(nn.Module):
    """Shared trunk; subclasses supply the positional modules, _embed and (optionally) _rope."""

    def __init__(self, config: GPTConfig, **pos_modules: nn.Module):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            **pos_modules,
            h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
            ln_f=nn.LayerNorm(config.n_embd),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying: one tensor, two names
        self._init_weights()

    def _init_weights(self):
        """The original's init, drawn once per weight in nn.Module.apply order (wte, positions, blocks,
        lm_head), so the same seed gives the same initial tensors and the same random stream after."""
        # Residual output projections get a smaller std, in their one draw, so the residual stream's
        # variance does not grow with depth (GPT-2 paper).
        resid_scale = (2 * self.config.n_layer) ** -0.5

        def init(module):
            if isinstance(module, nn.Linear):
                std = 0.02
                if getattr(module, "residual_projection", False):
                    std *= resid_scale
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)

        self.apply(init)  # the tied wte/lm_head matrix ends with lm_head's draw, as in the original

    def _embed(self, idx: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _rope(self, T: int):
        return None

    def forward(self, idx, targets=None):
        T = idx.size(1)
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}")
        x = self._embed(idx)
        rope = self._rope(T)
        for block in self.transformer.h:
            x = block(x, rope)
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        return configure_optimizers(self, weight_decay, learning_rate, betas, device_type)


class GPT(GPTBase):
    """Learned absolute position embedding added to the token embedding."""

    def __init__(self, config: GPTConfig):
        super().__init__(config, wpe=nn.Embedding(config.block_size, config.n_embd))

    def _embed(self, idx):
        pos = torch.arange(idx.size(1), device=idx.device)
        return self.transformer.wte(idx) + self.transformer.wpe(pos)


class GPT_RoPE(GPTBase):
    """Rotary position embedding on q and k in every layer; no learned positions."""

    def __init__(self, config: GPTConfig):
        super().__init__(config)
        head_dim = config.n_embd // config.n_head
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim, got n_embd/n_head = {head_dim}")
        cos, sin = rope_table(head_dim, config.block_size)
        # Non-persistent: derived from the config, so kept out of the state_dict, but moved by .to().
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def _embed(self, idx):
        return self.transformer.wte(idx)

    def _rope(self, T):
        return self.rope_cos[:T], self.rope_sin[:T]


class GPT_oth_abacus(GPTBase):
    """Learned number position (t // digits) plus abacus digit position (t % digits)."""

    def __init__(self, config: GPTConfig):
        n_numbers = math.ceil(config.block_size / config.digits)
        super().__init__(config, wpe=nn.Embedding(n_numbers, config.n_embd),
                         abacus=nn.Embedding(config.digits, config.n_embd))

    def _embed(self, idx):
        t = torch.arange(idx.size(1), device=idx.device)
        digits = self.config.digits
        return (self.transformer.wte(idx) + self.transformer.wpe(t // digits)
                + self.transformer.abacus(t % digits))


def build_model(config: GPTConfig, no_rope: bool) -> GPTBase:
    """As the original chose: RoPE unless --no_rope; then abacus when digits > 1, else learned positions."""
    if not no_rope:
        return GPT_RoPE(config)
    return GPT_oth_abacus(config) if config.digits > 1 else GPT(config)


def _param_groups(model: nn.Module) -> tuple[list, list]:
    """(decayed, not decayed) trainable parameters; parameters() yields the tied tensor once."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [p for p in params if p.dim() >= 2], [p for p in params if p.dim() < 2]


def param_group_summary(model: nn.Module) -> tuple[int, int, int, int]:
    """(n_decay_tensors, n_decay_params, n_nodecay_tensors, n_nodecay_params)."""
    decay, nodecay = _param_groups(model)
    return (len(decay), sum(p.numel() for p in decay),
            len(nodecay), sum(p.numel() for p in nodecay))


def configure_optimizers(model, weight_decay, learning_rate, betas, device_type):
    """AdamW with weight decay on matrices and embeddings only (not biases or LayerNorm)."""
    decay, nodecay = _param_groups(model)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": nodecay, "weight_decay": 0.0}]
    fused = "cuda" in str(device_type)  # one kernel for the whole update
    return torch.optim.AdamW(groups, lr=learning_rate, betas=tuple(betas), eps=1e-8, fused=fused)


def count_parameters(model: nn.Module) -> int:
    """Number of unique parameters (the tied embedding counted once)."""
    return sum(p.numel() for p in model.parameters())


def strip_compile_prefix(state_dict: dict) -> dict:
    """Drop leading `_orig_mod.` (torch.compile) and `module.` (DDP) from every key."""
    prefixes = ("_orig_mod.", "module.")
    stripped = {}
    for key, value in state_dict.items():
        while key.startswith(prefixes):
            key = key.split(".", 1)[1]
        stripped[key] = value
    return stripped


def parameter_shapes(config: GPTConfig, no_rope: bool) -> tuple[dict[str, tuple], int, list[tuple]]:
    """(state-dict key -> shape, parameter count, the parameters' shapes in the order the optimizer
    numbers them) of the model build_model would make, without allocating it (built on the meta
    device): for start-up checks before anything is built."""
    with torch.device("meta"):
        model = build_model(config, no_rope)
    decay, nodecay = _param_groups(model)
    return ({k: tuple(v.shape) for k, v in model.state_dict().items()}, count_parameters(model),
            [tuple(p.shape) for p in decay + nodecay])
