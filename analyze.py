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

from utils.analysis import baselines, embeddings, loading, positions, probes, scaling
from utils.checkpoint import PATH_MAX
from utils.evaluation import plot_accuracy_by_position
from utils.results import NAME_MAX, WriteError, save_npz, save_table

EXIT_BAD_INPUT = 2


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_BAD_INPUT)


class Parser(argparse.ArgumentParser):
    """Bad flags are one `error:` line and exit 2, like every other bad input."""

    def error(self, message):
        fail(f"{message} (see --help)")


def check_out(out: str) -> None:
    """--out can hold the outputs: a directory, or a name a directory can be made at, where this process
    may write (checked before any compute; nothing is created until the first output is written)."""
    if not out or len(os.path.join(out, "x" * NAME_MAX).encode()) >= PATH_MAX:
        raise ValueError(f"--out must be a folder name with room for file names of {NAME_MAX} bytes, got {out[:40]!r}")
    folder = out
    while not os.path.exists(folder) and os.path.dirname(os.path.abspath(folder)) != os.path.abspath(folder):
        folder = os.path.dirname(os.path.abspath(folder))
    where = "" if folder == out else f" (at {folder})"
    if not os.path.isdir(folder):
        raise ValueError(f"--out {out}: not a directory{where}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: not writable{where}")


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
    check_sizes(args)
    moduli = loading.parse_int_list(args.m, "m")
    flags = {"n_head": args.n_head, "digits": args.digits, "base": args.base, "n_a": args.n_a, "n_c": args.n_c,
             "m": moduli[0] if moduli else None, "seq_len": args.seq_len, "type": args.type,
             "control_bits": args.control_bits, "bits_to_keep": args.bits_to_keep}
    device = loading.pick_device(args.device)
    loaded = loading.load_model(args.model, flags, device, seq_len=args.seq_len)
    return loaded, device, {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]


def check_sizes(args) -> None:
    """The size flags, before a model is built."""
    for name, lowest in (("n_head", 1), ("n_test_a", 1), ("n_test_c", 1), ("n_example", 1), ("batch_size", 1),
                         ("seq_len", 2)):
        value = getattr(args, name, None)
        if value is not None and value < lowest:
            raise ValueError(f"--{name} must be >= {lowest}, got {value}")


def sets_from_args(args, settings):
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
    sets = sets_from_args(args, loaded.settings)
    if args.rollout_from is not None and not 1 <= args.rollout_from < sets[0].dataset.seq_len:
        raise ValueError(f"--rollout_from must lie in [1, {sets[0].dataset.seq_len - 1}], got {args.rollout_from}")
    for name in names:
        for s in sets:
            if name == "lcg" and s.combo.kind != "LCG":
                raise ValueError(f"--baselines lcg reads LCG states; {s.label} is not an LCG (use family)")
            if name == "family" and s.m > baselines.MAX_FAMILY_MODULUS:
                raise ValueError(f"--baselines family enumerates states: m={s.m} is above {baselines.MAX_FAMILY_MODULUS}")
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
    paths = {k: os.path.join(args.out, f) for k, f in (("curves", "accuracy_by_position.csv"),
                                                        ("plot", "accuracy_by_position.png"),
                                                        ("summary", "context_needed.csv"), ("rollout", "rollout.csv"))}
    positions.write_curves(paths["curves"], rows)
    save_table(summary, list(summary[0]), paths["summary"])
    if rolls:
        save_table(rolls, list(rolls[0]), paths["rollout"])
    plot_accuracy_by_position(paths["plot"], curves, xlabel="position (numbers in the context)",
                              title="test accuracy by position" + (" beside the baselines" if names else ""))
    print("files written:")
    for key, path in paths.items():
        if key != "rollout" or rolls:
            print(f"  {path}")
    return 0


def cmd_curves(args) -> int:
    if not 0 < args.tau <= 1:
        raise ValueError(f"--tau must lie in (0, 1], got {args.tau}")
    arrays = positions.read_positions(args.positions)
    steps = arrays.pop("step")
    keys = [k.strip() for k in args.keys.split(",")] if args.keys else sorted(arrays)
    for key in keys:
        if key not in arrays:
            raise ValueError(f"{args.positions} has no array {key!r}; it has {', '.join(sorted(arrays))}")
    rows, over_training = [], {}
    for key in keys:
        acc = arrays[key]
        needed = [positions.context_needed(row, args.tau) for row in acc]
        over_training[key] = needed
        rows += [{"step": int(st), "key": key, "tau": args.tau, "context_needed": n if n is not None else "",
                  "last_accuracy": float(row[-1]), "mean_accuracy": float(row.mean())}
                 for st, row, n in zip(steps, acc, needed)]
        path = os.path.join(args.out, f"curves_{key}.png")
        positions.plot_over_training(path, steps, acc, title=f"{key}: test accuracy by position during training")
        print(f"{key}: context needed at step {int(steps[-1])}: {needed[-1] if needed[-1] is not None else 'not reached'}"
              f"; written {path}")
    table = os.path.join(args.out, "context_needed_over_training.csv")
    save_table(rows, list(rows[0]), table)
    plot = os.path.join(args.out, "context_needed_over_training.png")
    positions.plot_needed_over_training(plot, steps, over_training, args.tau, len(next(iter(arrays.values()))[0]))
    print(f"files written:\n  {table}\n  {plot}")
    return 0


def cmd_embed(args) -> int:
    if args.components < 1:
        raise ValueError(f"--components must be >= 1, got {args.components}")
    state, config = loading.read_model_file(args.model)
    wte = state["transformer.wte.weight"].float().numpy()
    n_tokens = args.tokens or int((config or {}).get("base") or 0) or len(wte)
    n_tokens = min(n_tokens, len(wte))
    if n_tokens < 2:
        raise ValueError(f"--tokens must be >= 2, got {n_tokens}")
    coords, ratio = embeddings.pca(wte[:n_tokens])
    k = min(args.components, coords.shape[1])
    w, labels = embeddings.token_properties(n_tokens)
    variance = os.path.join(args.out, "embed_variance.csv")
    save_table([{"component": i + 1, "explained_variance": float(r), "cumulative": float(c)}
                for i, (r, c) in enumerate(zip(ratio, np.cumsum(ratio)))], ["component", "explained_variance", "cumulative"],
               variance)
    scores = embeddings.separation_scores(coords, labels, k)
    score_path = os.path.join(args.out, "embed_scores.csv")
    save_table(scores, list(scores[0]), score_path)
    pairs = [(i, j) for i, j in ((0, 1), (0, 2), (1, 2), (2, 3)) if j < coords.shape[1]]
    written = [variance, score_path]
    for name in embeddings.PROPERTIES:
        path = os.path.join(args.out, f"embed_{name}.png")
        embeddings.plot_pairs(path, coords, labels[name], name, pairs,
                              f"token embedding PCA ({n_tokens} tokens, {w} bits), coloured by {name}")
        written.append(path)
    print(f"top {k} components explain {ratio[:k].sum():.3f} of the variance")
    for row in scores:
        print(f"  {row['property']:15s} {row['classes']:4d} classes: nearest-centroid accuracy {row['accuracy']:.3f} "
              f"(shuffled labels {row['shuffled_accuracy']:.3f})")
    print("files written:\n" + "\n".join(f"  {p}" for p in written))
    return 0


def cmd_layers(args) -> int:
    loaded, device, dtype = load(args)
    sets = sets_from_args(args, loaded.settings)
    by_m = {}
    for s in sets:
        by_m.setdefault(s.m, []).append(s)
    if all(len(v) < 2 for v in by_m.values()):
        raise ValueError("layers compares generators: the model must be trained (or --type given) with several "
                         "types or control bits, e.g. a '+'-joined --type")
    m, group = next((m, g) for m, g in by_m.items() if len(g) >= 2)
    seq_len, d = group[0].dataset.seq_len, group[0].dataset.digits
    wanted = loading.parse_int_list(args.positions, "positions") or sorted(
        {min(2 ** i, seq_len - 1) for i in range(int(math.log2(seq_len - 1)) + 1)} | {seq_len - 1})
    if min(wanted) < 1 or max(wanted) > seq_len - 1:
        raise ValueError(f"--positions must lie in [1, {seq_len - 1}], got {wanted}")
    feats, labels = None, []
    for j, s in enumerate(group):
        ds = s.dataset
        for idx in np.array_split(np.arange(len(ds)), max(1, len(ds) // args.batch_size)):
            x, _ = ds.batch(idx, device)
            streams = probes.residual_streams(loaded.model, x)
            chunk = np.stack([st[:, [p * d - 1 for p in wanted]].numpy() for st in streams])  # (L+1, B, P, E)
            feats = chunk if feats is None else np.concatenate([feats, chunk], 1)
            labels += [j] * len(idx)
    labels = np.array(labels)
    chance = np.bincount(labels).max() / len(labels)
    rows = [{"m": m, "layer": layer, "position": p, "accuracy": probes.linear_probe(feats[layer, :, i], labels),
             "chance": float(chance), "classes": len(group), "sequences": len(labels)}
            for layer in range(feats.shape[0]) for i, p in enumerate(wanted)]
    table = os.path.join(args.out, "layer_probe.csv")
    save_table(rows, list(rows[0]), table)
    plot = os.path.join(args.out, "layer_probe.png")
    probes.plot_accuracy_by_layer(plot, rows, wanted, feats.shape[0], chance, [s.label for s in group])
    written = [table, plot]
    first = group[0].dataset
    n_first = len(first)
    for i in loading.parse_int_list(args.attention, "attention") or []:
        if not 0 <= i < n_first * len(group):
            raise ValueError(f"--attention: sequence {i} is not in [0, {n_first * len(group)})")
        s = group[i // n_first]
        x, _ = s.dataset.batch(np.array([i % n_first]), device)
        maps = probes.attention_maps(loaded.model, x)
        base = os.path.join(args.out, f"attention_{i}")
        save_npz(base + ".npz", attention=maps, tokens=x.cpu().numpy()[0])
        probes.plot_attention(base + ".png", maps, f"{s.label} m={m}, sequence {i}")
        written += [base + ".npz", base + ".png"]
    for layer in range(feats.shape[0]):
        accs = [r["accuracy"] for r in rows if r["layer"] == layer]
        print(f"layer {layer}: probe accuracy {min(accs):.3f}-{max(accs):.3f} over positions (chance {chance:.3f})")
    print("files written:\n" + "\n".join(f"  {p}" for p in written))
    return 0


def cmd_scaling(args) -> int:
    if not 0 < args.tau <= 1:
        raise ValueError(f"--tau must lie in (0, 1], got {args.tau}")
    points = [p for path in args.runs for p in scaling.points_from(path, args.tau, args.source)]
    taus = sorted({p["tau"] for p in points})
    if len(taus) > 1:
        raise ValueError(f"the runs' context needed was measured with different tau {taus}: evaluate them with one --tau")
    reached = [p for p in points if p["context_needed"] is not None]
    for p in points:
        if p["context_needed"] is None:
            print(f"left out (accuracy never stays >= {args.tau}): {p['run']} m={p['m']} {p['label']}")
    fit = scaling.fit_power_law([p["m"] for p in reached], [p["context_needed"] for p in reached])
    table = os.path.join(args.out, "scaling.csv")
    save_table([{**p, "context_needed": "" if p["context_needed"] is None else p["context_needed"],
                 "sqrt_m_half": math.sqrt(p["m"]) / 2} for p in points],
               ["run", "m", "label", "tau", "context_needed", "sqrt_m_half"], table)
    fit_path = os.path.join(args.out, "scaling_fit.csv")
    save_table([{**fit, "tau": taus[0] if taus else args.tau}], list(fit) + ["tau"], fit_path)
    plot = os.path.join(args.out, "scaling.png")
    scaling.plot(plot, reached, fit)
    print(f"context needed ~ {fit['prefactor']:.3g} * m^{fit['exponent']:.3f} (stderr {fit['exponent_stderr']:.3f}, "
          f"{fit['points']} points; the paper: m^0.5)")
    print(f"files written:\n  {table}\n  {fit_path}\n  {plot}")
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

    c = sub.add_parser("curves", help="accuracy by position over training, from positions_<base>.npz",
                       description="Read a positions_<base>.npz (array `step` and one (steps x positions) array per "
                                   "curve) and plot each curve's evolution and the context needed at every evaluation.")
    c.add_argument("positions", help="positions_<base>.npz written during training")
    c.add_argument("--keys", default=None, help="comma list of arrays to use (default: all)")
    c.add_argument("--tau", type=float, default=0.99)
    c.add_argument("--out", default="results/analysis")
    c.set_defaults(run=cmd_curves)

    m = sub.add_parser("embed", help="PCA of the token embedding, bitwise classes",
                       description="PCA of the token embedding: scatter plots of component pairs coloured by popcount, "
                                   "lowest set bit and rotation class; explained variance; nearest-centroid scores.")
    m.add_argument("model")
    m.add_argument("--tokens", type=int, default=None, help="tokens 0..N-1 to use (default: the run's base, else the vocabulary)")
    m.add_argument("--components", type=int, default=4, help="top components used for the separation score")
    m.add_argument("--out", default="results/analysis")
    m.set_defaults(run=cmd_embed)

    y = sub.add_parser("layers", help="linear probes per layer for several generators; attention maps",
                       description="For a model trained on several generators: held-out accuracy of a linear probe "
                                   "for the generator at each layer's residual stream and position; attention maps.")
    add_model_args(y)
    add_data_args(y)
    y.add_argument("--positions", default=None, help="comma list of number positions (default: powers of two and the last)")
    y.add_argument("--attention", default="0", help="comma list of test sequences to draw attention maps for ('' for none)")
    y.add_argument("--out", default="results/analysis")
    y.set_defaults(run=cmd_layers)

    s = sub.add_parser("scaling", help="context needed against m from several runs, power-law fit",
                       description="Context needed against the modulus from several runs: a table, the fitted exponent "
                                   "with its standard error, and a log-log plot with the paper's sqrt(m)/2.")
    s.add_argument("runs", nargs="+", help="context_needed.csv of analyze.py eval, or .npz files with test_m<m> arrays")
    s.add_argument("--source", default="model", help="rows of context_needed.csv to use (model, baseline_lcg, ...)")
    s.add_argument("--tau", type=float, default=0.99, help="for .npz inputs")
    s.add_argument("--out", default="results/analysis")
    s.set_defaults(run=cmd_scaling)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "out", None) is not None:
            check_out(args.out)
        return args.run(args)
    except (ValueError, WriteError) as err:  # bad input, or an output that could not be written (disk full)
        fail(str(err))


if __name__ == "__main__":
    sys.exit(main())
