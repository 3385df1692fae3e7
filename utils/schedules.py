"""LR schedules (single run and per phase) and modulus weights over training steps.

Every schedule is a pure function of the update index u: the number of optimizer updates already
done, so `lr_at(u)` is the LR of the (u+1)-th `optimizer.step`. The training loop sets
`group['lr']` from it before each step. No scheduler state exists, so a resumed run only needs u.
"""
import math
from dataclasses import dataclass, fields

import numpy as np

from .bounds import check_int

SINGLE_WARMUP_START = 1e-8  # the original's LinearLR(start_factor=1e-8)
PHASE_WARMUP_START = 1e-4  # the original's per-phase LinearLR(start_factor=1e-4)
LR_DECAYS = ('constant', 'cosine')
TRANSITIONS = ('linear', 'cosine', 'exp', 'step')
REST_OF_TRAINING = -1  # phase_steps of a phase that runs to the end of training


def _warmup(j, span, lr_trgt, start_factor):
    """Linear warmup from start_factor*lr_trgt, reaching lr_trgt after `span` updates."""
    return lr_trgt * (start_factor + (1.0 - start_factor) * j / span)


def _cosine(j, span, lr_trgt, lr_min):
    """Half cosine from lr_trgt (j = 0) to lr_min (j = span)."""
    return lr_min + (lr_trgt - lr_min) * (1.0 + math.cos(math.pi * j / span)) / 2.0


def _check_update(u):
    if u < 0:
        raise ValueError(f"update index must be >= 0, got {u}")


# --------------------------------------------------------------------------- single-modulus LR

def validate_single_schedule(*, warm_steps, num_steps):
    """Raise ValueError unless num_steps > 0 and warm_steps >= 0.

    warm_steps >= num_steps is allowed: the whole run is warmup (the caller says so once), so the
    README command with small num_steps appended still runs.
    """
    if num_steps <= 0:
        raise ValueError(f"num_steps must be > 0, got {num_steps}")
    if warm_steps < 0:
        raise ValueError(f"warm_steps must be >= 0, got warm_steps={warm_steps}")


def single_lr(u, *, lr_trgt, lr_min, warm_steps, num_steps):
    """LR for update u of a single-modulus run (the original's LinearLR warmup, then CosineAnnealingLR).

    Linear warmup from 1e-8*lr_trgt over warm_steps updates, then a half cosine to lr_min at
    u = num_steps. warm_steps = 0 means no warmup (u = 0 uses lr_trgt). From num_steps on the LR
    stays at lr_min instead of climbing back up. The schedule is validated once, at start-up
    (validate_single_schedule).
    """
    _check_update(u)
    if u < warm_steps:
        return _warmup(u, warm_steps, lr_trgt, SINGLE_WARMUP_START)
    if u >= num_steps:
        return lr_min
    return _cosine(u - warm_steps, num_steps - warm_steps, lr_trgt, lr_min)


# --------------------------------------------------------------------------- curriculum phases

@dataclass(frozen=True)
class Phase:
    """One curriculum phase (a YAML/JSON phase dict, docs/curriculum.md, "Phases"); build it with `parse_phases`."""
    name: str
    phase_steps: int  # optimizer updates; REST_OF_TRAINING (-1) = the rest of training
    transition_steps: int  # updates over which the weights move from start to end
    warmup_steps: int  # linear LR warmup at the start of the phase
    lr_decay: str  # 'constant' or 'cosine'
    start_weights: tuple  # one weight per modulus, by position
    end_weights: tuple
    transition: str  # 'linear', 'cosine', 'exp' or 'step'


PHASE_KEYS = tuple(field.name for field in fields(Phase))


def _as_int(value, what):
    """Cast an int-valued number or string ('1000', '1e3') to int; reject 2.5, 'abc', True."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be an integer, got {value!r}") from None
    if not number.is_integer():
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return int(number)


def _as_weights(values, what, n_moduli):
    """Cast a weight list (YAML may give strings such as '1e-2') to a tuple of floats >= 0."""
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"{what} must be a list of {n_moduli} numbers, got {values!r}")
    if len(values) != n_moduli:
        raise ValueError(f"{what} has {len(values)} entries, expected one per modulus ({n_moduli})")
    weights = []
    for value in values:
        try:
            weight = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{what} must hold numbers, got {value!r}") from None
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"{what} must be finite and >= 0, got {values!r}")
        weights.append(weight)
    return tuple(weights)


def _parse_phase(raw, i, n_moduli, log=print):
    if not isinstance(raw, dict):
        raise ValueError(f"phase {i}: expected a mapping of phase keys, got {raw!r}")
    name = str(raw.get('name', f'Phase {i}'))
    where = f"phase {i} ({name!r})"
    unknown = sorted(str(key) for key in set(raw) - set(PHASE_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys are {list(PHASE_KEYS)}")

    steps = {key: _as_int(raw.get(key, 0), f"{where}: {key}")
             for key in ('phase_steps', 'transition_steps', 'warmup_steps')}
    for key, value in steps.items():  # negative values are judged below (phase_steps may be -1)
        check_int(f"{where}: {key}", value, lo=-math.inf)  # only the int64 bound here
    phase_steps = steps['phase_steps']
    if phase_steps < 0 and phase_steps != REST_OF_TRAINING:
        raise ValueError(f"{where}: phase_steps must be >= 0 or -1 (rest of training), "
                         f"got {phase_steps}")
    for key in ('transition_steps', 'warmup_steps'):
        if steps[key] < 0:
            raise ValueError(f"{where}: {key} must be >= 0, got {steps[key]}")
        if phase_steps > 0 and steps[key] > phase_steps:  # the original ran these as they come
            what = ("the phase ends part-way through its weight transition" if key == 'transition_steps'
                    else "the whole phase is LR warmup and ends below lr_trgt")
            log(f"note: {where}: {key} {steps[key]} > phase_steps {phase_steps}: {what}")

    lr_decay = str(raw.get('lr_decay', 'constant')).lower()
    if lr_decay not in LR_DECAYS:
        raise ValueError(f"{where}: lr_decay must be one of {list(LR_DECAYS)}, got {lr_decay!r}")
    transition = str(raw.get('transition', 'linear')).lower()
    if transition not in TRANSITIONS:
        raise ValueError(f"{where}: transition must be one of {list(TRANSITIONS)}, "
                         f"got {transition!r}")

    if 'end_weights' in raw:
        end = _as_weights(raw['end_weights'], f"{where}: end_weights", n_moduli)
        if sum(end) == 0:
            raise ValueError(f"{where}: end_weights must not be all zero, got {list(end)}")
    elif phase_steps != 0 or 'start_weights' in raw:
        raise ValueError(f"{where}: end_weights is required (one weight per modulus)")
    else:
        end = ()  # a 0-step phase is never used, so it needs no weights
    start = (_as_weights(raw['start_weights'], f"{where}: start_weights", n_moduli)
             if 'start_weights' in raw else end)

    return Phase(name=name, lr_decay=lr_decay, transition=transition,
                 start_weights=start, end_weights=end, **steps)


def parse_phases(phase_dicts, n_moduli, log=print):
    """Validate the YAML/JSON phase dicts and return a list of Phase.

    Defaults: name 'Phase i' (1-based), phase_steps / transition_steps / warmup_steps 0,
    lr_decay 'constant', transition 'linear'; lr_decay and transition are lower-cased. Numbers may
    arrive as strings ('1e-2'). Every phase with phase_steps != 0 needs end_weights, one
    non-negative weight per modulus, not all zero; start_weights default to end_weights.
    phase_steps = -1 means "rest of training" and is allowed only for the last phase. At least one
    phase must have phase_steps > 0. Any violation is a ValueError naming the phase. A transition or
    warmup longer than its phase is accepted as the original ran it (cut off at the phase end), with
    one printed line.
    """
    if not isinstance(n_moduli, int) or n_moduli <= 0:
        raise ValueError(f"n_moduli must be a positive integer, got {n_moduli!r}")
    phases = [_parse_phase(raw, i, n_moduli, log) for i, raw in enumerate(phase_dicts, start=1)]
    for i, phase in enumerate(phases[:-1], start=1):
        if phase.phase_steps == REST_OF_TRAINING:
            raise ValueError(f"phase {i} ({phase.name!r}): phase_steps -1 (rest of training) "
                             f"is allowed only for the last phase")
    if total_steps(phases) == 0:
        raise ValueError("curriculum needs at least one phase with phase_steps > 0")
    return phases


def total_steps(phases):
    """Optimizer updates of the whole curriculum: the sum of phase_steps > 0 (-1 not counted)."""
    return sum(phase.phase_steps for phase in phases if phase.phase_steps > 0)


def phase_at(step, phases):
    """(index into phases, first step of that phase) for an update index (the original's lookup).

    Phases are walked in order with a cumulative start; the -1 phase is selected as soon as it is
    reached. Past the end, the last phase with phase_steps > 0 continues. Phases with
    phase_steps 0 have no updates and are never selected.
    """
    _check_update(step)
    start = 0
    last = None
    for index, phase in enumerate(phases):
        if phase.phase_steps == REST_OF_TRAINING:
            return index, start
        if phase.phase_steps > 0:
            if step < start + phase.phase_steps:
                return index, start
            last = (index, start)
            start += phase.phase_steps
    if last is None:
        raise ValueError("curriculum needs at least one phase with phase_steps > 0")
    return last


def _transition_fraction(transition, p):
    """g(p): the fraction of the way from start to end weights at progress p (the original's curves)."""
    if transition == 'linear':
        return p
    if transition == 'cosine':
        return (1.0 - math.cos(math.pi * p)) / 2.0
    if transition == 'exp':
        return 1.0 - math.exp(-3.0 * p)  # about 0.95 at p = 1, then it snaps to end weights
    if transition == 'step':
        return 1.0 if p > 0.5 else 0.0
    raise ValueError(f"transition must be one of {list(TRANSITIONS)}, got {transition!r}")


def modulus_weights(step, phases):
    """Probability of drawing each modulus at update `step`, summing to 1.

    During the first transition_steps updates of a phase the weights move from start to end
    weights along the phase's transition; afterwards they are the end weights. The result is
    always normalised; if an interpolated set sums to 0, the end weights are used.
    """
    index, start = phase_at(step, phases)
    phase = phases[index]
    end = np.asarray(phase.end_weights, dtype=np.float64)
    weights = end
    into_phase = step - start
    if 0 < phase.transition_steps and into_phase < phase.transition_steps:
        g = _transition_fraction(phase.transition, into_phase / phase.transition_steps)
        begin = np.asarray(phase.start_weights, dtype=np.float64)
        weights = begin + g * (end - begin)
        if weights.sum() == 0:
            weights = end
    return weights / weights.sum()


def phase_lr(u, phases, *, lr_trgt, lr_min, num_steps):
    """LR for update u of a curriculum run (the original's per-phase schedulers, as pure arithmetic).

    Every phase restarts at lr_trgt: a warmup phase rises linearly from 1e-4*lr_trgt to lr_trgt
    over its first warmup_steps updates (a warmup longer than its phase is cut off at the phase end, below
    lr_trgt), then
    'constant' holds lr_trgt and 'cosine' decays to lr_min over the phase's remaining updates.
    A -1 phase runs from the end of the counted phases up to num_steps; with the usual
    num_steps = total_steps(phases) it has no updates. Should num_steps exceed the counted phases
    with no -1 phase, the last phase holds its final LR. For u >= num_steps this returns the LR the
    original's scheduler holds after the final update, which its CSV's last row reports: the last
    phase's schedule one update on (lr_min after a cosine phase, lr_trgt after a constant phase or a
    complete warmup).
    """
    if num_steps <= 0:
        raise ValueError(f"num_steps must be > 0, got {num_steps}")
    _check_update(u)
    after = u >= num_steps
    index, start = phase_at(num_steps - 1 if after else u, phases)
    phase = phases[index]
    length = phase.phase_steps if phase.phase_steps > 0 else num_steps - start
    j = length if after else min(u - start, length - 1)
    if j < phase.warmup_steps:  # a warmup longer than its phase is cut off at the phase end, as the original's
        return _warmup(j, phase.warmup_steps, lr_trgt, PHASE_WARMUP_START)
    if phase.lr_decay == 'constant' or length == phase.warmup_steps:  # the latter: after an all-warmup phase
        return lr_trgt
    return _cosine(j - phase.warmup_steps, length - phase.warmup_steps, lr_trgt, lr_min)
