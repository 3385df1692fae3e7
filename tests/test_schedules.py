"""Schedules: single-run LR, per-phase LR, modulus weights, each against the original's torch schedulers or formulas."""
import math

import numpy as np
import pytest
import torch

from utils.schedules import (Phase, modulus_weights, parse_phases, phase_at, phase_lr, single_lr,
                             total_steps, validate_single_schedule)

LR, LR_MIN = 5e-4, 1e-7


def torch_lrs(build_schedulers, milestones, num_updates, lr=LR):
    """LR of each of the first num_updates optimizer steps under torch's SequentialLR."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = torch.optim.lr_scheduler.SequentialLR(
        optimizer, build_schedulers(optimizer), milestones=milestones)
    lrs = []
    for _ in range(num_updates):
        lrs.append(optimizer.param_groups[0]['lr'])
        optimizer.step()
        scheduler.step()
    return lrs


def assert_close_all(ours, reference, rel):
    for u, (a, b) in enumerate(zip(ours, reference, strict=True)):
        assert a == pytest.approx(b, rel=rel, abs=0), f"update {u}: ours {a!r}, torch {b!r}"


# --------------------------------------------------------------------------- single_lr

def single(u, warm_steps=10, num_steps=100):
    return single_lr(u, lr_trgt=LR, lr_min=LR_MIN, warm_steps=warm_steps, num_steps=num_steps)


def test_single_lr_warmup_starts_near_zero_and_reaches_target():
    assert single(0) == pytest.approx(LR * 1e-8)
    assert single(5) == pytest.approx(LR * (1e-8 + (1 - 1e-8) * 0.5))
    assert single(10) == LR  # u = W: cosine at its start


def test_single_lr_cosine_follows_the_formula_and_ends_at_lr_min():
    def cosine(u):
        return LR_MIN + (LR - LR_MIN) * (1 + math.cos(math.pi * (u - 10) / 90)) / 2
    assert single(37) == pytest.approx(cosine(37), rel=1e-15)
    assert single(99) == pytest.approx(cosine(99), rel=1e-15)
    assert LR_MIN < single(99) < single(98)
    assert single(100) == LR_MIN
    assert single(10_000) == LR_MIN  # never climbs back up (B2)


def test_single_lr_without_warmup_starts_at_target():
    assert single(0, warm_steps=0) == LR
    assert single(50, warm_steps=0) == pytest.approx((LR + LR_MIN) / 2)


@pytest.mark.parametrize('warm_steps, num_steps', [(1, 2), (10, 100), (250, 1000)])
def test_single_lr_matches_torch_sequential_lr(warm_steps, num_steps):
    def build(optimizer):
        return [torch.optim.lr_scheduler.LinearLR(optimizer, 1e-8, 1.0, warm_steps),
                torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, num_steps - warm_steps,
                                                           LR_MIN)]
    reference = torch_lrs(build, [warm_steps], num_steps)
    ours = [single(u, warm_steps, num_steps) for u in range(num_steps)]
    assert_close_all(ours, reference, rel=1e-12)


@pytest.mark.parametrize('warm_steps, num_steps, message', [(-1, 100, 'warm_steps'), (0, 0, 'num_steps')])
def test_single_schedule_rejects_bad_step_counts(warm_steps, num_steps, message):
    with pytest.raises(ValueError, match=message):
        validate_single_schedule(warm_steps=warm_steps, num_steps=num_steps)


@pytest.mark.parametrize('warm_steps', [100, 5000])
def test_warmup_longer_than_the_run_is_all_warmup(warm_steps):
    # The README command with `--num_steps 2` appended keeps --warm_steps 5000: the run only warms up.
    lrs = [single(u, warm_steps, 100) for u in range(100)]
    assert lrs == [LR * (1e-8 + (1 - 1e-8) * u / warm_steps) for u in range(100)]


# --------------------------------------------------------------------------- phase_lr

README_PHASES = [
    {'name': 'Phase 1', 'phase_steps': 4000, 'warmup_steps': 500, 'lr_decay': 'constant',
     'transition': 'exp', 'transition_steps': 4000,
     'start_weights': [0.001, 0.999], 'end_weights': [0.0, 1.0]},
    {'name': 'Phase 2', 'phase_steps': 1000, 'warmup_steps': 0, 'lr_decay': 'cosine',
     'start_weights': [0, 1], 'end_weights': [0, 1]},
]


def lrs_for(phases, num_steps=None, extra=0):
    num_steps = total_steps(phases) if num_steps is None else num_steps
    return [phase_lr(u, phases, lr_trgt=LR, lr_min=LR_MIN, num_steps=num_steps)
            for u in range(num_steps + extra)]


def test_phase_lr_readme_example_at_boundaries():
    phases = parse_phases(README_PHASES, n_moduli=2)
    assert total_steps(phases) == 5000
    lrs = lrs_for(phases, extra=3)
    for u in (0, 499, 500, 3999, 4000, 4999, 5000):
        print(f"u={u}: lr={lrs[u]:.6e}")
    assert lrs[0] == pytest.approx(1e-4 * LR)  # warmup starts at 1e-4 * lr_trgt
    assert lrs[250] == pytest.approx(LR * (1e-4 + (1 - 1e-4) * 0.5))
    assert lrs[499] < LR and lrs[500] == LR  # warmup ends
    assert set(lrs[500:4000]) == {LR}  # constant
    assert lrs[4000] == LR  # phase 2 restarts at lr_trgt
    assert lrs[4500] == pytest.approx((LR + LR_MIN) / 2)
    assert lrs[4999] == pytest.approx(LR_MIN + (LR - LR_MIN) * (1 + math.cos(math.pi * 0.999)) / 2)
    assert lrs[5000:] == [LR_MIN] * 3  # after the final update: where phase 2's cosine ends


def test_phase_lr_readme_example_matches_torch_sequential_lr():
    # the original's LinearLR warmup, ConstantLR for the rest of phase 1, CosineAnnealingLR for phase 2;
    # the 5001st value is what the scheduler holds after the final update (the CSV's last row)
    def build(optimizer):
        lr_scheduler = torch.optim.lr_scheduler
        return [lr_scheduler.LinearLR(optimizer, 1e-4, 1.0, 500),
                lr_scheduler.ConstantLR(optimizer, 1.0, 3500),
                lr_scheduler.CosineAnnealingLR(optimizer, 1000, LR_MIN)]
    reference = torch_lrs(build, [500, 4000], 5001)
    assert_close_all(lrs_for(parse_phases(README_PHASES, n_moduli=2), extra=1), reference, rel=1e-12)


@pytest.mark.parametrize('last', ['constant', 'cosine'])
def test_phase_lr_after_the_final_update_is_what_the_torch_scheduler_holds(last):
    # cosine over 4 updates, then a phase with 2 warmup updates and 3 constant or cosine ones
    phases = parse_phases([{'phase_steps': 4, 'lr_decay': 'cosine', 'end_weights': [1]},
                           {'phase_steps': 5, 'warmup_steps': 2, 'lr_decay': last, 'end_weights': [1]}], 1)

    def build(optimizer):
        lr_scheduler = torch.optim.lr_scheduler
        rest = (lr_scheduler.ConstantLR(optimizer, 1.0, 3) if last == 'constant'
                else lr_scheduler.CosineAnnealingLR(optimizer, 3, LR_MIN))
        return [lr_scheduler.CosineAnnealingLR(optimizer, 4, LR_MIN), lr_scheduler.LinearLR(optimizer, 1e-4, 1.0, 2),
                rest]
    reference = torch_lrs(build, [4, 6], 10)
    assert_close_all(lrs_for(phases, extra=1), reference, rel=1e-12)
    assert lrs_for(phases, extra=1)[9] == {'constant': LR, 'cosine': LR_MIN}[last]


def test_phase_lr_warmup_free_constant_phases_hold_the_target():
    phases = parse_phases([{'phase_steps': 30, 'end_weights': [1]},
                           {'phase_steps': 20, 'end_weights': [1]}], n_moduli=1)
    assert lrs_for(phases) == [LR] * 50


def test_phase_lr_all_warmup_last_phase_just_warms_up():
    phases = parse_phases([{'phase_steps': 20, 'lr_decay': 'cosine', 'end_weights': [1]},
                           {'phase_steps': 10, 'warmup_steps': 10, 'end_weights': [1]}], 1)
    lrs = lrs_for(phases, extra=2)
    assert all(math.isfinite(lr) for lr in lrs)
    assert lrs[20] == pytest.approx(1e-4 * LR)
    assert lrs[29] == pytest.approx(LR * (1e-4 + (1 - 1e-4) * 0.9))
    assert lrs[30:] == [LR] * 2  # after the final update: the warmup is complete


def test_phase_lr_rest_phase_after_warmup_phase():
    raw = [{'phase_steps': 20, 'warmup_steps': 5, 'end_weights': [1, 1]},
           {'phase_steps': -1, 'warmup_steps': 4, 'lr_decay': 'cosine', 'end_weights': [0, 1]}]
    phases = parse_phases(raw, n_moduli=2)
    assert total_steps(phases) == 20
    lrs = lrs_for(phases)  # num_steps = total_steps: the rest phase has no updates
    assert all(math.isfinite(lr) for lr in lrs)
    assert lrs[0] == pytest.approx(1e-4 * LR) and lrs[5:] == [LR] * 15
    # with a larger num_steps the rest phase takes the remaining updates, with its own schedule
    longer = lrs_for(phases, num_steps=30)
    assert longer[:20] == lrs
    assert longer[20] == pytest.approx(1e-4 * LR)
    assert longer[24] == LR
    assert longer[29] == pytest.approx(LR_MIN + (LR - LR_MIN) * (1 + math.cos(math.pi * 5 / 6)) / 2)


# --------------------------------------------------------------------------- modulus_weights

def one_phase(transition, start=(0.2, 0.8), end=(0.6, 0.4)):
    return parse_phases([{'phase_steps': 200, 'transition_steps': 100, 'transition': transition,
                          'start_weights': list(start), 'end_weights': list(end)}], n_moduli=2)


G = {'linear': lambda p: p,
     'cosine': lambda p: (1 - math.cos(math.pi * p)) / 2,
     'exp': lambda p: 1 - math.exp(-3 * p),
     'step': lambda p: 1.0 if p > 0.5 else 0.0}


@pytest.mark.parametrize('transition', sorted(G))
@pytest.mark.parametrize('step', [0, 25, 50, 75, 99])
def test_modulus_weights_follow_the_transition_formula(transition, step):
    start, end = np.array([0.2, 0.8]), np.array([0.6, 0.4])  # both sum to 1
    expected = start + G[transition](step / 100) * (end - start)
    np.testing.assert_allclose(modulus_weights(step, one_phase(transition)), expected, rtol=1e-12)


@pytest.mark.parametrize('transition', sorted(G))
def test_modulus_weights_are_end_weights_after_the_transition(transition):
    phases = one_phase(transition)
    for step in (100, 150, 199, 200, 10_000):  # 200 and beyond: past the end, last phase
        np.testing.assert_array_equal(modulus_weights(step, phases), [0.6, 0.4])


def test_exp_transition_snaps_to_end_weights():
    phases = one_phase('exp', start=(1, 0), end=(0, 1))
    g_last = 1 - math.exp(-3 * 99 / 100)  # about 0.95 on the last transition step
    np.testing.assert_allclose(modulus_weights(99, phases), [1 - g_last, g_last], rtol=1e-12)
    np.testing.assert_array_equal(modulus_weights(100, phases), [0, 1])


def test_step_transition_switches_after_half_way():
    phases = one_phase('step', start=(1, 0), end=(0, 1))
    np.testing.assert_array_equal(modulus_weights(50, phases), [1, 0])
    np.testing.assert_array_equal(modulus_weights(51, phases), [0, 1])


def test_modulus_weights_are_normalised_probabilities():
    phases = one_phase('linear', start=(1, 3), end=(6, 2))
    np.testing.assert_allclose(modulus_weights(0, phases), [0.25, 0.75])
    np.testing.assert_allclose(modulus_weights(50, phases), [3.5 / 6, 2.5 / 6])
    np.testing.assert_allclose(modulus_weights(100, phases), [0.75, 0.25])  # end weights are normalised too


def test_zero_interpolated_weights_fall_back_to_end_weights():
    phases = one_phase('linear', start=(0, 0), end=(1, 3))
    np.testing.assert_allclose(modulus_weights(0, phases), [0.25, 0.75])


def test_rest_phase_and_lookup():
    phases = parse_phases([
        {'phase_steps': 100, 'end_weights': [1, 0]},
        {'phase_steps': 0},
        {'phase_steps': -1, 'transition_steps': 50, 'start_weights': [1, 0], 'end_weights': [0, 1]},
    ], n_moduli=2)
    assert [phase_at(s, phases) for s in (0, 99, 100, 10_000)] == [(0, 0), (0, 0), (2, 100),
                                                                  (2, 100)]
    np.testing.assert_array_equal(modulus_weights(99, phases), [1, 0])
    np.testing.assert_array_equal(modulus_weights(100, phases), [1, 0])
    np.testing.assert_allclose(modulus_weights(125, phases), [0.5, 0.5])
    np.testing.assert_array_equal(modulus_weights(10_000, phases), [0, 1])


def test_past_the_end_uses_the_last_counted_phase():
    phases = parse_phases([{'phase_steps': 10, 'end_weights': [1, 0]},
                           {'phase_steps': 10, 'end_weights': [1, 3]},
                           {'phase_steps': 0}], n_moduli=2)
    assert phase_at(25, phases) == (1, 10)
    np.testing.assert_allclose(modulus_weights(25, phases), [0.25, 0.75])


# --------------------------------------------------------------------------- parse_phases

def test_parse_phases_defaults_and_casts():
    phases = parse_phases([{'phase_steps': '1e3', 'warmup_steps': '10', 'lr_decay': 'COSINE',
                            'transition': 'Exp', 'end_weights': ['1e-2', 1]},
                           {'phase_steps': 5.0, 'end_weights': [1, 0]}], n_moduli=2)
    assert phases[0] == Phase(name='Phase 1', phase_steps=1000, transition_steps=0,
                              warmup_steps=10, lr_decay='cosine', start_weights=(0.01, 1.0),
                              end_weights=(0.01, 1.0), transition='exp')
    assert phases[1].name == 'Phase 2' and phases[1].lr_decay == 'constant'
    assert phases[1].transition == 'linear' and phases[1].phase_steps == 5


W = [1, 1]  # valid weights for two moduli


@pytest.mark.parametrize('raw, message', [
    ([{'phase_steps': 10, 'end_weights': W, 'steps': 3}], r"unknown key.*'steps'.*valid keys"),
    ([{'phase_steps': 10, 'end_weights': W, 'lr_decay': 'linear'}], 'lr_decay must be one of'),
    ([{'phase_steps': 10, 'end_weights': W, 'transition': 'sigmoid'}], 'transition must be one of'),
    ([{'phase_steps': 10, 'end_weights': [1]}], r'end_weights has 1 entries.*\(2\)'),
    ([{'phase_steps': 10, 'end_weights': W, 'start_weights': [1, 1, 1]}], 'start_weights has 3'),
    ([{'phase_steps': 10, 'end_weights': 1}], 'end_weights must be a list'),
    ([{'phase_steps': 10, 'end_weights': [1, -0.5]}], 'finite and >= 0'),
    ([{'phase_steps': 10, 'end_weights': W, 'start_weights': [-1, 1]}], 'finite and >= 0'),
    ([{'phase_steps': 10, 'end_weights': [1, 'x']}], 'must hold numbers'),
    ([{'phase_steps': 10, 'end_weights': [0, 0]}], 'must not be all zero'),
    ([{'phase_steps': 10}], 'end_weights is required'),
    ([{'phase_steps': -1}], 'end_weights is required'),
    ([{'phase_steps': 10, 'end_weights': W}, {'phase_steps': 0, 'start_weights': W}],
     'end_weights is required'),
    ([{'phase_steps': -2, 'end_weights': W}], 'phase_steps must be >= 0 or -1'),
    ([{'phase_steps': 10, 'end_weights': W, 'warmup_steps': -1}], 'warmup_steps must be >= 0'),
    ([{'phase_steps': 10, 'end_weights': W, 'transition_steps': -1}],
     'transition_steps must be >= 0'),
    ([{'phase_steps': 2.5, 'end_weights': W}], 'phase_steps must be an integer'),
    ([{'phase_steps': 'ten', 'end_weights': W}], 'phase_steps must be an integer'),
    ([{'phase_steps': True, 'end_weights': W}], 'phase_steps must be an integer'),
    ([{'phase_steps': -1, 'end_weights': W}, {'phase_steps': 10, 'end_weights': W}],
     'allowed only for the last phase'),
    ([], 'at least one phase with phase_steps > 0'),
    ([{'phase_steps': 0}], 'at least one phase with phase_steps > 0'),
    ([{'phase_steps': -1, 'end_weights': W}], 'at least one phase with phase_steps > 0'),
    (['phase one'], 'expected a mapping'),
])
def test_parse_phases_rejects(raw, message):
    with pytest.raises(ValueError, match=message):
        parse_phases(raw, n_moduli=2)


def test_a_transition_longer_than_its_phase_ends_part_way_as_the_original(capsys):
    # The original computes p = (step - phase start) / transition_steps whatever the phase length: a
    # 10-update phase with a 400-update transition ends at p = 9/400, weights [0.9775, 0.0225].
    phases = parse_phases([{'phase_steps': 10, 'transition_steps': 400, 'start_weights': [1, 0],
                            'end_weights': [0, 1]}, {'phase_steps': 5, 'end_weights': [0, 1]}], n_moduli=2)
    assert "transition_steps 400 > phase_steps 10" in capsys.readouterr().out
    np.testing.assert_allclose(modulus_weights(9, phases), [1 - 9 / 400, 9 / 400], rtol=1e-15)
    np.testing.assert_array_equal(modulus_weights(10, phases), [0, 1])


def test_a_warmup_longer_than_its_phase_is_all_warmup_as_the_original(capsys):
    # LinearLR(start_factor=1e-4, total_iters=warmup_steps): the slope is set by warmup_steps, so a
    # 4-update phase with 10 warmup updates ends at 1e-4 + (1 - 1e-4) * 3/10 of lr_trgt.
    phases = parse_phases([{'phase_steps': 4, 'warmup_steps': 10, 'end_weights': W},
                           {'phase_steps': 3, 'end_weights': W}], n_moduli=2)
    assert "warmup_steps 10 > phase_steps 4" in capsys.readouterr().out
    lrs = [phase_lr(u, phases, lr_trgt=LR, lr_min=LR_MIN, num_steps=7) for u in range(7)]
    expected = [LR * (1e-4 + (1 - 1e-4) * j / 10) for j in range(4)] + [LR] * 3
    assert lrs == pytest.approx(expected, rel=1e-13)


def test_parse_phases_names_the_phase():
    with pytest.raises(ValueError, match=r"^phase 2 \('ramp'\): lr_decay"):
        parse_phases([{'phase_steps': 10, 'end_weights': W},
                      {'name': 'ramp', 'phase_steps': 10, 'end_weights': W, 'lr_decay': 'step'}],
                     n_moduli=2)
