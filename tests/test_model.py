"""Models: shapes, names, init, causality, positions, optimizer."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.gpt2 import (
    GPT, GPT_RoPE, GPT_oth_abacus, GPTConfig, apply_rotary, build_model, configure_optimizers,
    count_parameters, param_group_summary, rope_table, strip_compile_prefix,
)

CLASSES = [GPT, GPT_RoPE, GPT_oth_abacus]


def tiny_config(**overrides):
    cfg = dict(block_size=12, vocab_size=17, n_layer=2, n_head=2, n_embd=16, digits=3)
    return GPTConfig(**{**cfg, **overrides})


def tiny_model(cls, seed=0, **overrides):
    torch.manual_seed(seed)
    return cls(tiny_config(**overrides)).eval()


def test_readme_example_parameter_count():
    cfg = GPTConfig(block_size=512, vocab_size=512, n_layer=4, n_head=8, n_embd=1024)
    with torch.device("meta"):  # the real module, without allocating or initialising 200 MB
        model = build_model(cfg, no_rope=False)
    assert isinstance(model, GPT_RoPE)
    assert count_parameters(model) == 50_911_232


def test_build_model_selection():
    assert type(build_model(tiny_config(digits=1), no_rope=False)) is GPT_RoPE
    assert type(build_model(tiny_config(digits=3), no_rope=False)) is GPT_RoPE
    assert type(build_model(tiny_config(digits=3), no_rope=True)) is GPT_oth_abacus
    assert type(build_model(tiny_config(digits=1), no_rope=True)) is GPT


@pytest.mark.parametrize("cls", CLASSES)
def test_parameter_names_and_tying(cls):
    model = tiny_model(cls)
    names = set(model.state_dict())
    common = {
        "transformer.wte.weight", "lm_head.weight", "transformer.ln_f.weight",
        "transformer.h.0.ln_1.weight", "transformer.h.0.attn.c_attn.weight",
        "transformer.h.0.attn.c_attn.bias", "transformer.h.0.attn.c_proj.weight",
        "transformer.h.0.ln_2.weight", "transformer.h.0.mlp.c_fc.weight",
        "transformer.h.0.mlp.c_proj.weight", "transformer.h.1.mlp.c_proj.bias",
    }
    assert common <= names
    assert ("transformer.wpe.weight" in names) == (cls is not GPT_RoPE)
    assert ("transformer.abacus.weight" in names) == (cls is GPT_oth_abacus)
    assert not any("rope" in n for n in names)
    assert model.transformer.wte.weight is model.lm_head.weight
    sd = model.state_dict()
    assert sd["transformer.wte.weight"].data_ptr() == sd["lm_head.weight"].data_ptr()
    # A saved state dict loads strictly into a fresh model and keeps the tie.
    other = tiny_model(cls, seed=1)
    other.load_state_dict(sd)
    assert other.transformer.wte.weight is other.lm_head.weight
    assert torch.equal(other.lm_head.weight, model.transformer.wte.weight)


def test_rope_table_is_a_non_persistent_buffer():
    model = tiny_model(GPT_RoPE)
    buffers = dict(model.named_buffers())
    assert {"rope_cos", "rope_sin"} <= set(buffers)
    assert buffers["rope_cos"].shape == (12, 4)
    assert not any("rope" in n for n in model.state_dict())


def test_position_table_sizes():
    abacus = tiny_model(GPT_oth_abacus, block_size=11, digits=3)
    assert abacus.transformer.wpe.weight.shape == (4, 16)  # ceil(11 / 3)
    assert abacus.transformer.abacus.weight.shape == (3, 16)
    assert tiny_model(GPT).transformer.wpe.weight.shape == (12, 16)


def test_init_statistics():
    torch.manual_seed(0)
    n_layer = 4
    model = GPT(GPTConfig(block_size=64, vocab_size=512, n_layer=n_layer, n_head=4, n_embd=256))
    resid_std = 0.02 / math.sqrt(2 * n_layer)
    for name, p in model.named_parameters():
        if name.endswith("c_proj.weight"):
            assert p.std().item() == pytest.approx(resid_std, rel=0.05), name
        elif p.dim() >= 2:  # other Linears and Embeddings (wte/lm_head, wpe)
            assert p.std().item() == pytest.approx(0.02, rel=0.05), name
        elif "ln" in name and name.endswith("weight"):
            assert torch.all(p == 1), name
        else:  # Linear and LayerNorm biases
            assert torch.all(p == 0), name


def original_init(cls, config: GPTConfig, seed: int) -> dict[str, torch.Tensor]:
    """The original's init rule, written out: torch seeded, its modules built (torch's default init),
    then one normal draw per weight in
    nn.Module.apply order (wte, wpe, abacus, then per block c_attn, attn.c_proj, c_fc, mlp.c_proj,
    then lm_head, which overwrites the tied wte); Linear std 0.02, times (2 n_layer)^-0.5 for the two
    output projections; biases 0, LayerNorm weight 1 and bias 0."""
    torch.manual_seed(seed)
    d, L = config.n_embd, config.n_layer
    # Building the modules runs torch's own default init first, which advances the random stream.
    modules = [nn.Embedding(config.vocab_size, d)]
    if cls is GPT:
        modules.append(nn.Embedding(config.block_size, d))
    if cls is GPT_oth_abacus:
        modules += [nn.Embedding(math.ceil(config.block_size / config.digits), d), nn.Embedding(config.digits, d)]
    for _ in range(L):
        modules += [nn.LayerNorm(d), nn.Linear(d, 3 * d), nn.Linear(d, d), nn.LayerNorm(d), nn.Linear(d, 4 * d),
                    nn.Linear(4 * d, d)]
    modules += [nn.LayerNorm(d), nn.Linear(d, config.vocab_size, bias=False)]
    draw = lambda *shape, std=0.02: torch.empty(*shape).normal_(mean=0.0, std=std)
    small = 0.02
    small *= (2 * L) ** -0.5
    out = {"transformer.wte.weight": draw(config.vocab_size, d)}
    if cls is GPT:
        out["transformer.wpe.weight"] = draw(config.block_size, d)
    if cls is GPT_oth_abacus:
        out["transformer.wpe.weight"] = draw(math.ceil(config.block_size / config.digits), d)
        out["transformer.abacus.weight"] = draw(config.digits, d)
    for i in range(L):
        h = f"transformer.h.{i}."
        out[h + "ln_1.weight"], out[h + "ln_1.bias"] = torch.ones(d), torch.zeros(d)
        out[h + "attn.c_attn.weight"], out[h + "attn.c_attn.bias"] = draw(3 * d, d), torch.zeros(3 * d)
        out[h + "attn.c_proj.weight"], out[h + "attn.c_proj.bias"] = draw(d, d, std=small), torch.zeros(d)
        out[h + "ln_2.weight"], out[h + "ln_2.bias"] = torch.ones(d), torch.zeros(d)
        out[h + "mlp.c_fc.weight"], out[h + "mlp.c_fc.bias"] = draw(4 * d, d), torch.zeros(4 * d)
        out[h + "mlp.c_proj.weight"], out[h + "mlp.c_proj.bias"] = draw(d, 4 * d, std=small), torch.zeros(d)
    out["transformer.ln_f.weight"], out["transformer.ln_f.bias"] = torch.ones(d), torch.zeros(d)
    out["lm_head.weight"] = draw(config.vocab_size, d)
    out["transformer.wte.weight"] = out["lm_head.weight"]  # tied: the last draw wins
    out["_next"] = torch.rand(5)  # the random stream after the model is built
    return out


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("n_layer", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_initial_weights_equal_the_originals_for_the_same_seed(cls, n_layer, seed):
    config = tiny_config(n_layer=n_layer, n_embd=24, n_head=2, vocab_size=19, block_size=14, digits=3)
    expected = original_init(cls, config, seed)
    torch.manual_seed(seed)
    model = cls(config)
    after = torch.rand(5)
    state = model.state_dict()
    assert set(state) == set(expected) - {"_next"}
    for key, tensor in state.items():
        assert torch.equal(tensor, expected[key]), key
    assert torch.equal(after, expected["_next"])


@pytest.mark.parametrize("cls", CLASSES)
def test_causality(cls):
    model = tiny_model(cls)
    idx = torch.randint(0, 17, (2, 12), generator=torch.Generator().manual_seed(0))
    t = 7
    changed = idx.clone()
    changed[:, t] = (changed[:, t] + 1) % 17
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(changed)
    torch.testing.assert_close(a[:, :t], b[:, :t], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, t], b[:, t])


@pytest.mark.parametrize("cls", CLASSES)
def test_too_long_input_raises(cls):
    with pytest.raises(ValueError, match="block_size"):
        tiny_model(cls)(torch.zeros(1, 13, dtype=torch.long))


def test_n_embd_must_divide_into_heads():
    with pytest.raises(ValueError, match="divisible"):
        GPT(tiny_config(n_embd=15, n_head=2))


@pytest.mark.parametrize("cls", CLASSES)
def test_shorter_input_matches_prefix(cls):
    model = tiny_model(cls)
    idx = torch.randint(0, 17, (3, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full, _ = model(idx)
        for T in (1, 5, 11):
            short, _ = model(idx[:, :T])
            assert short.shape == (3, T, 17)
            torch.testing.assert_close(short, full[:, :T], rtol=1e-5, atol=1e-6)


def complex_rotary_reference(x, theta=10000.0):
    """The original's formulation: pairs (2j, 2j+1) as complex numbers times e^{i t f_j}."""
    head_dim, T = x.shape[-1], x.shape[-2]
    j = torch.arange(head_dim // 2, dtype=torch.float64)
    freqs = theta ** (-2 * j / head_dim)
    angles = torch.outer(torch.arange(T, dtype=torch.float64), freqs)
    z = torch.view_as_complex(x.double().reshape(*x.shape[:-1], head_dim // 2, 2).contiguous())
    return torch.view_as_real(z * torch.polar(torch.ones_like(angles), angles)).flatten(-2)


def test_rotary_matches_complex_reference():
    x = torch.randn(2, 3, 50, 8, generator=torch.Generator().manual_seed(0))
    cos, sin = rope_table(head_dim=8, end=64)
    out = apply_rotary(x, cos[:50], sin[:50])
    assert out.dtype == x.dtype
    torch.testing.assert_close(out.double(), complex_rotary_reference(x), rtol=1e-5, atol=1e-5)
    # Lower-precision input: computed in float32, returned in the input dtype.
    out_bf16 = apply_rotary(x.bfloat16(), cos[:50], sin[:50])
    assert out_bf16.dtype == torch.bfloat16
    torch.testing.assert_close(out_bf16.double(), complex_rotary_reference(x.bfloat16().float()),
                               rtol=2e-2, atol=2e-2)


def test_rotary_scores_depend_only_on_relative_position():
    cos, sin = rope_table(head_dim=8, end=32)
    q, k = torch.randn(2, 8, generator=torch.Generator().manual_seed(0))

    def score(tq, tk):
        rq = apply_rotary(q.expand(32, 8), cos, sin)[tq]
        rk = apply_rotary(k.expand(32, 8), cos, sin)[tk]
        return (rq * rk).sum()

    torch.testing.assert_close(score(5, 2), score(20, 17))
    torch.testing.assert_close(score(9, 9), score(0, 0))


def first_layer_input(model, idx):
    captured = []
    hook = model.transformer.h[0].register_forward_pre_hook(lambda mod, args: captured.append(args[0]))
    with torch.no_grad():
        model(idx)
    hook.remove()
    return captured[0]


def test_abacus_positions_are_number_and_digit_index():
    model = tiny_model(GPT_oth_abacus, block_size=11, digits=3)
    idx = torch.randint(0, 17, (2, 11), generator=torch.Generator().manual_seed(2))
    tr = model.transformer
    expected = torch.stack([
        torch.stack([tr.wte.weight[idx[b, t]] + tr.wpe.weight[t // 3] + tr.abacus.weight[t % 3]
                     for t in range(11)])
        for b in range(2)
    ])
    torch.testing.assert_close(first_layer_input(model, idx), expected)


def test_learned_and_rope_first_layer_inputs():
    idx = torch.randint(0, 17, (2, 12), generator=torch.Generator().manual_seed(3))
    gpt = tiny_model(GPT)
    expected = gpt.transformer.wte.weight[idx] + gpt.transformer.wpe.weight[:12]
    torch.testing.assert_close(first_layer_input(gpt, idx), expected)
    rope = tiny_model(GPT_RoPE)
    torch.testing.assert_close(first_layer_input(rope, idx), rope.transformer.wte.weight[idx])


@pytest.mark.parametrize("cls", CLASSES)
def test_loss_is_mean_cross_entropy(cls):
    model = tiny_model(cls)
    gen = torch.Generator().manual_seed(4)
    idx = torch.randint(0, 17, (3, 12), generator=gen)
    targets = torch.randint(0, 17, (3, 12), generator=gen)
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 12, 17)
    torch.testing.assert_close(loss, F.cross_entropy(logits.reshape(-1, 17), targets.reshape(-1)))
    assert model(idx)[1] is None


@pytest.mark.parametrize("cls", CLASSES)
def test_optimizer_groups(cls):
    model = tiny_model(cls)
    opt = configure_optimizers(model, weight_decay=0.1, learning_rate=3e-4, betas=(0.9, 0.95),
                               device_type="cpu")
    decay, nodecay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and nodecay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"])
    assert all(p.dim() < 2 for p in nodecay["params"])
    all_params = decay["params"] + nodecay["params"]
    assert len({id(p) for p in all_params}) == len(all_params)
    assert sum(p is model.lm_head.weight for p in all_params) == 1
    assert {id(p) for p in all_params} == {id(p) for p in model.parameters()}
    n_decay_t, n_decay, n_nodecay_t, n_nodecay = param_group_summary(model)
    assert (n_decay_t, n_nodecay_t) == (len(decay["params"]), len(nodecay["params"]))
    assert n_decay + n_nodecay == count_parameters(model)
    assert opt.defaults["eps"] == 1e-8 and opt.defaults["betas"] == (0.9, 0.95)
    assert not opt.defaults["fused"]
    # The method form builds the same groups.
    method_opt = model.configure_optimizers(0.1, 3e-4, (0.9, 0.95), "cpu")
    assert [len(g["params"]) for g in method_opt.param_groups] == [len(decay["params"]),
                                                                   len(nodecay["params"])]


def test_count_parameters_counts_tied_weight_once():
    model = tiny_model(GPT_RoPE)
    cfg = model.config
    d, V = cfg.n_embd, cfg.vocab_size
    per_block = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d)
    assert count_parameters(model) == cfg.n_layer * per_block + V * d + 2 * d


def test_strip_compile_prefix():
    t = torch.zeros(1)
    sd = {"_orig_mod.lm_head.weight": t, "module._orig_mod.transformer.wte.weight": t,
          "transformer.ln_f.bias": t, "transformer.h.0._orig_mod.x": t}
    assert list(strip_compile_prefix(sd)) == ["lm_head.weight", "transformer.wte.weight",
                                              "transformer.ln_f.bias", "transformer.h.0._orig_mod.x"]
    # A state dict of a compiled model loads into a plain one after stripping.
    model = tiny_model(GPT)
    compiled_style = {"_orig_mod." + k: v for k, v in model.state_dict().items()}
    tiny_model(GPT, seed=1).load_state_dict(strip_compile_prefix(compiled_style))
