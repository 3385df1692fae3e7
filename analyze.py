"""Analyse a trained model: accuracy by position, context needed, roll-out and classical baselines
(eval), accuracy over training (curves), token embeddings (embed), layer probes and attention maps
(layers), context needed against the modulus (scaling). `python analyze.py <command> --help`.

A model file is any params, checkpoint or curriculum model file of this project or of the original;
the model's shape is read from its weights, its settings from its config, and flags supply what a file
without a config cannot tell (--n_head, --m, --seq_len, --type, ...).
"""
from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np
import torch

from utils.analysis import baselines, loading, positions

EXIT_BAD_INPUT = 2


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_BAD_INPUT)


class Parser(argparse.ArgumentParser):
    """Bad flags are one `error:` line and exit 2, like every other bad input."""

    def error(self, message):
        fail(f"{message} (see --help)")


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="params_*.pth, checkpoint_*.pt or multi_curriculum_*.pt (ours or the original's)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: cuda if available")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="autocast dtype")
    g = p.add_argument_group("for files without a config (a params file): what the weights cannot tell")
    g.add_argument("--n_head", type=int, default=None)
    g.add_argument("--digits", type=int, default=None)
    g.add_argument("--base", type=int, default=None)
    g.add_argument("--n_a", type=int, default=None, help="training sizes: with the seed they fix the test split")
    g.add_argument("--n_c", type=int, default=None)


def add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("test sequences (default: the run's own test set)")
    g.add_argument("--m", type=str, default=None, help="modulus or comma list (another modulus: an unseen-modulus test)")
    g.add_argument("--type", type=str, default=None, help="generator type(s), as the training scripts take them")
    g.add_argument("--control_bits", type=str, default=None)
    g.add_argument("--bits_to_keep", type=int, default=None)
    g.add_argument("--seq_len", type=int, default=None, help="numbers per sequence")
    g.add_argument("--data_seed", type=int, default=None, help="another seed: a fresh (a, c) split and start states")
    g.add_argument("--a", type=str, default=None, help="comma list of multipliers to test")
    g.add_argument("--c", type=str, default=None, help="comma list of increments to test")
    g.add_argument("--n_test_a", type=int, default=None)
    g.add_argument("--n_test_c", type=int, default=None)
    g.add_argument("--n_example", type=int, default=1, help="start states per (a, c)")
    g.add_argument("--batch_size", type=int, default=64)


def load(args):
    moduli = loading.parse_int_list(args.m, "m")
    flags = {"n_head": args.n_head, "digits": args.digits, "base": args.base, "n_a": args.n_a, "n_c": args.n_c,
             "m": moduli[0] if moduli else None, "seq_len": args.seq_len, "type": args.type,
             "control_bits": args.control_bits, "bits_to_keep": args.bits_to_keep}
    device = loading.pick_device(args.device)
    loaded = loading.load_model(args.model, flags, device, seq_len=args.seq_len)
    return loaded, device, {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]


def test_sets(args, settings):
    for name in ("n_test_a", "n_test_c", "n_example", "batch_size", "seq_len"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}")
    if args.seq_len is not None and args.seq_len < 2:
        raise ValueError(f"--seq_len must be >= 2, got {args.seq_len}")
    return loading.eval_sets(settings, moduli=loading.parse_int_list(args.m, "m"), kind=args.type,
                             control_bits=args.control_bits, bits_to_keep=args.bits_to_keep, data_seed=args.data_seed,
                             a_values=loading.parse_int_list(args.a, "a"), c_values=loading.parse_int_list(args.c, "c"),
                             n_test_a=args.n_test_a, n_test_c=args.n_test_c, n_example=args.n_example,
                             seq_len=args.seq_len)


# --------------------------------------------------------------------------------------------------

def cmd_eval(args) -> int:
    if not 0 < args.tau <= 1:
        raise ValueError(f"--tau must lie in (0, 1], got {args.tau}")
    names = [n.strip() for n in args.baselines.split(",") if n.strip()] if args.baselines else []
    for name in names:
        if name not in baselines.NAMES:
            raise ValueError(f"--baselines: unknown baseline {name!r}; valid: {', '.join(baselines.NAMES)}")
    loaded, device, dtype = load(args)
    sets = test_sets(args, loaded.settings)
    if args.rollout_from is not None and not 1 <= args.rollout_from < sets[0].dataset.seq_len:
        raise ValueError(f"--rollout_from must lie in [1, {sets[0].dataset.seq_len - 1}], got {args.rollout_from}")
    for name in names:
        for s in sets:
            if name == "lcg" and s.combo.kind != "LCG":
                raise ValueError(f"--baselines lcg reads LCG states; {s.label} is not an LCG (use family)")
            if name == "family" and s.m > baselines.MAX_FAMILY_MODULUS:
                raise ValueError(f"--baselines family enumerates states: m={s.m} is above {baselines.MAX_FAMILY_MODULUS}")
    os.makedirs(args.out, exist_ok=True)
    rows, summary, rolls, curves = [], [], [], {}
    for s in sets:
        n_seq = len(s.dataset)
        found = {"model": positions.model_accuracy(loaded.model, s.dataset, device, dtype, args.batch_size)}
        if names:
            numbers = s.dataset.numbers(np.arange(n_seq))
            for name in names:
                found[f"baseline_{name}"] = baselines.accuracy(baselines.run(name, numbers, s.combo, s.m), numbers)
        for source, acc in found.items():
            rows += positions.curve_rows(source, s.m, s.label, acc, n_seq)
            needed = positions.context_needed(acc, args.tau)
            summary.append({"source": source, "m": s.m, "label": s.label, "tau": args.tau,
                            "context_needed": needed if needed is not None else "",
                            "sqrt_m_half": math.sqrt(s.m) / 2, "last_accuracy": float(acc[-1]),
                            "mean_accuracy": float(acc.mean()), "sequences": n_seq})
            curves[f"{source} {s.label} m={s.m}"] = acc
            print(f"{source:16s} {s.label:10s} m={s.m:<8d} context needed (tau {args.tau}): "
                  f"{needed if needed is not None else 'not reached'} (sqrt(m)/2 = {math.sqrt(s.m) / 2:.1f}); "
                  f"last-number accuracy {acc[-1]:.4f}")
        start = args.rollout_from
        if start is None:
            needed = positions.context_needed(found["model"], args.tau)
            start = needed if needed is not None and needed < s.dataset.seq_len - 1 else s.dataset.seq_len // 2
        if not args.no_rollout:
            run = positions.rollout(loaded.model, s.dataset, start, device, dtype, args.batch_size)
            generated = s.dataset.seq_len - start
            rolls.append({"m": s.m, "label": s.label, "start": start, "generated": generated, "sequences": n_seq,
                          "mean_exact": float(run.mean()), "median_exact": float(np.median(run)),
                          "fraction_exact_to_end": float((run == generated).mean())})
            print(f"roll-out {s.label} m={s.m} from position {start}: {run.mean():.1f} of {generated} numbers exact "
                  f"on average, {np.mean(run == generated):.3f} of sequences exact to the end")
    from utils.evaluation import plot_accuracy_by_position
    from utils.results import save_table
    paths = {k: os.path.join(args.out, f) for k, f in (("curves", "accuracy_by_position.csv"),
                                                        ("plot", "accuracy_by_position.png"),
                                                        ("summary", "context_needed.csv"), ("rollout", "rollout.csv"))}
    positions.write_curves(paths["curves"], rows)
    save_table(summary, list(summary[0]), paths["summary"])
    if rolls:
        save_table(rolls, list(rolls[0]), paths["rollout"])
    plot_accuracy_by_position(paths["plot"], curves, xlabel="position (numbers in the context)",
                              title=f"test accuracy by position: {os.path.basename(args.model)[:60]}")
    print("files written:")
    for key, path in paths.items():
        if key != "rollout" or rolls:
            print(f"  {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    e = sub.add_parser("eval", help="accuracy by position, context needed, roll-out, baselines",
                       description="Rebuild the model, regenerate the run's test set (or a fresh one) and write "
                                   "accuracy by number position (CSV, PNG), the context needed for --tau, and a "
                                   "greedy roll-out. Position p = the prediction of number p+1 from the first p.")
    add_model_args(e)
    add_data_args(e)
    e.add_argument("--tau", type=float, default=0.99, help="context needed: first position from which accuracy stays >= tau")
    e.add_argument("--baselines", type=str, default="", help="comma list of lcg (LCG with known m), family "
                                                            "(majority of the training family's consistent (a, c, s0))")
    e.add_argument("--rollout_from", type=int, default=None,
                   help="numbers given before the roll-out (default: the context needed, else half the sequence)")
    e.add_argument("--no_rollout", action="store_true")
    e.add_argument("--out", default="results/analysis", help="output folder")
    e.set_defaults(run=cmd_eval)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ValueError as err:
        fail(str(err))


if __name__ == "__main__":
    sys.exit(main())
