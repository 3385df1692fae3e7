"""Analyse a trained model: accuracy by position (of whole numbers and bit by bit), context needed,
roll-out and classical baselines (eval), accuracy over training (curves), token embeddings (embed),
layer probes and attention maps (layers), context needed against the modulus (scaling).
`python analyze.py <command> --help`.

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

from utils import threads
from utils.analysis import baselines, bit_accuracy, embeddings, loading, positions, probes, scaling
from utils.config import OneLineParser, fail
from utils.distributed import DistInfo, resolve_device
from utils.evaluation import plot_accuracy_by_position
from utils.int_list import parse_int_list
from utils.results import NAME_MAX, PATH_MAX, WriteError, save_npz, save_table


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
    moduli = parse_int_list(args.m, "--m")
    flags = {"n_head": args.n_head, "digits": args.digits, "base": args.base, "n_a": args.n_a, "n_c": args.n_c,
             "m": moduli[0] if moduli else None, "seq_len": args.seq_len, "type": args.type,
             "control_bits": args.control_bits, "bits_to_keep": args.bits_to_keep}
    device = resolve_device(args.device)
    threads.use_threads(DistInfo(device=device), threads.requested_threads())
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
    return loading.eval_sets(settings, moduli=parse_int_list(args.m, "--m"), kind=args.type,
                             control_bits=args.control_bits, bits_to_keep=args.bits_to_keep, data_seed=args.data_seed,
                             a_values=parse_int_list(args.a, "--a"), c_values=parse_int_list(args.c, "--c"),
                             n_test_a=args.n_test_a, n_test_c=args.n_test_c, n_example=args.n_example,
                             seq_len=args.seq_len)


def threshold(text: str) -> float:
    """--tau and --reach_tau: an accuracy in (0, 1]."""
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1], got {text}")
    return value


# --------------------------------------------------------------------------------------------------

def cmd_eval(args) -> int:
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
    rows, bit_rows, summary, rolls, curves, heatmaps = [], [], [], [], {}, []
    for s in sets:
        n_seq = len(s.dataset)
        pred, numbers = positions.model_predictions(loaded.model, s.dataset, device, dtype, args.batch_size)
        predicted = {"model": pred}
        for name in names:
            predicted[f"baseline_{name}"] = baselines.run(name, numbers, s.combo, s.m)
        parts = bit_accuracy.parts_of(s.combo.kind, s.m, s.combo.bits_to_keep)
        found = {}
        for source, p in predicted.items():
            acc = found[source] = baselines.accuracy(p, numbers)
            rows += positions.curve_rows(source, s.m, s.label, acc, n_seq)
            needed = positions.context_needed(acc, args.tau)
            reached = positions.context_reached(acc, args.reach_tau)
            summary.append({"source": source, "m": s.m, "label": s.label, "tau": args.tau,
                            "context_needed": needed if needed is not None else "", "reach_tau": args.reach_tau,
                            "context_reached": reached if reached is not None else "",
                            "sqrt_m_half": math.sqrt(s.m) / 2, "last_accuracy": float(acc[-1]),
                            "mean_accuracy": float(acc.mean()), "sequences": n_seq})
            curves[f"{source} {s.label} m={s.m}"] = acc
            law = scaling.paper_law(s.label)
            reference = f"; {law['paper']}: {law['name']} = {scaling.law_value(law, s.m):.1f}" if law else ""
            print(f"{source:16s} {s.label:10s} m={s.m:<8d} context needed (tau {args.tau}, stays): "
                  f"{needed if needed is not None else 'not reached'}; "
                  f"{f'reaches {args.reach_tau} at {reached}' if reached else f'never reaches {args.reach_tau}'}"
                  f"{reference}; last-number accuracy {acc[-1]:.4f}")
            by_part = bit_accuracy.accuracy(p, numbers, parts)
            bit_rows += bit_accuracy.rows(source, s.m, s.label, parts, by_part, n_seq)
            steps = [f"{part.name}: {positions.context_reached(line, args.reach_tau) or '-'}"
                     for part, line in zip(parts, by_part) if part.kind != "bit"]
            print(f"    first position where the part is right in >= {args.reach_tau} of sequences (- never): "
                  f"{', '.join(steps)}")
            heatmaps.append(os.path.join(args.out, f"bit_accuracy_{source}_{s.label}_m{s.m}.png"))
            bit_accuracy.plot(heatmaps[-1], parts, by_part, f"{source}, {s.label}, m={s.m}: which parts of the "
                                                            f"predicted number are right")
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
                                                        ("summary", "context_needed.csv"),
                                                        ("bits", "bit_accuracy_by_position.csv"),
                                                        ("rollout", "rollout.csv"))}
    positions.write_curves(paths["curves"], rows)
    save_table(bit_rows, bit_accuracy.COLUMNS, paths["bits"])
    save_table(summary, list(summary[0]), paths["summary"])
    if rolls:
        save_table(rolls, list(rolls[0]), paths["rollout"])
    plot_accuracy_by_position(paths["plot"], curves, xlabel="position (numbers in the context)",
                              title="test accuracy by position" + (" beside the baselines" if names else ""))
    print("files written:")
    for key, path in paths.items():
        if key != "rollout" or rolls:
            print(f"  {path}")
    print("\n".join(f"  {path}" for path in heatmaps))
    return 0


def cmd_curves(args) -> int:
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
        reached = [positions.context_reached(row, args.reach_tau) for row in acc]
        over_training[key] = {f"stays >= {args.tau}": needed, f"reaches {args.reach_tau}": reached}
        rows += [{"step": int(st), "key": key, "tau": args.tau, "context_needed": n if n is not None else "",
                  "reach_tau": args.reach_tau, "context_reached": r if r is not None else "",
                  "last_accuracy": float(row[-1]), "mean_accuracy": float(row.mean())}
                 for st, row, n, r in zip(steps, acc, needed, reached)]
        path = os.path.join(args.out, f"curves_{key}.png")
        positions.plot_over_training(path, steps, acc, title=f"{key}: test accuracy by position during training")
        print(f"{key}: context needed at step {int(steps[-1])}: {needed[-1] if needed[-1] is not None else 'not reached'}"
              f" (stays >= {args.tau}); "
              f"{f'reaches {args.reach_tau} at {reached[-1]}' if reached[-1] else f'never reaches {args.reach_tau}'}"
              f"; written {path}")
    table = os.path.join(args.out, "context_needed_over_training.csv")
    save_table(rows, list(rows[0]), table)
    plot = os.path.join(args.out, "context_needed_over_training.png")
    positions.plot_needed_over_training(plot, steps, over_training, len(next(iter(arrays.values()))[0]))
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
    # Every component with variance (n tokens, centred, have at most n - 1), not only the top k.
    n_varying = int((ratio > 1e-12).sum())
    correlations = embeddings.component_correlations(coords, {n: labels[n] for n in embeddings.NUMERIC}, n_varying)
    correlation_path = os.path.join(args.out, "embed_correlations.csv")
    save_table(correlations, ["component", "label", "pearson", "spearman"], correlation_path)
    pairs = [(i, j) for i, j in ((0, 1), (0, 2), (1, 2), (2, 3)) if j < coords.shape[1]]
    written = [variance, score_path, correlation_path]
    for name in embeddings.PROPERTIES:
        path = os.path.join(args.out, f"embed_{name}.png")
        embeddings.plot_pairs(path, coords, labels[name], name, pairs,
                              f"token embedding PCA ({n_tokens} tokens, {w} bits), coloured by {name}")
        written.append(path)
    print(f"top {k} components explain {ratio[:k].sum():.3f} of the variance")
    for row in scores:
        print(f"  {row['property']:17s} {row['classes']:4d} classes: nearest-centroid accuracy {row['accuracy']:.3f} "
              f"(shuffled labels {row['shuffled_accuracy']:.3f})")
    shown = min(k, n_varying)
    print(f"Pearson correlation of the top {shown} components with each label (Spearman in {correlation_path}):")
    print(f"  {'':17s}" + "".join(f"{f'PC{i + 1}':>8s}" for i in range(shown)))
    for name in embeddings.NUMERIC:
        values = [r["pearson"] for r in correlations if r["label"] == name][:shown]
        print(f"  {name:17s}" + "".join(f"{v:+8.3f}" for v in values))
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
    wanted = parse_int_list(args.positions, "--positions") or sorted(
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
    for i in parse_int_list(args.attention, "--attention") if args.attention.strip() else []:
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
    tau = positions.DEFAULT_TAU[args.context_rule] if args.tau is None else args.tau
    points = [p for path in args.runs for p in scaling.points_from(path, tau, args.source, args.context_rule)]
    taus = sorted({p["tau"] for p in points})
    if len(taus) > 1:
        raise ValueError(f"the runs' context needed was measured with different tau {taus}: evaluate them with one "
                         f"--{scaling.CSV_COLUMNS[args.context_rule][0]}")
    reached = [p for p in points if p["context_needed"] is not None]
    verb = {"stays": "stays >=", "reaches": "reaches"}[args.context_rule]
    for p in points:
        if p["context_needed"] is None:
            print(f"left out (accuracy never {verb} {p['tau']}): {p['run']} m={p['m']} {p['label']}")
    fit = scaling.fit_power_law([p["m"] for p in reached], [p["context_needed"] for p in reached])
    table = os.path.join(args.out, "scaling.csv")
    laws = [scaling.paper_law(p["label"]) for p in points]
    save_table([{**p, "rule": args.context_rule,
                 "context_needed": "" if p["context_needed"] is None else p["context_needed"],
                 "sqrt_m_half": math.sqrt(p["m"]) / 2, "paper_law": f"{law['paper']}: {law['name']}" if law else "",
                 "paper_value": float(scaling.law_value(law, p["m"])) if law else ""} for p, law in zip(points, laws)],
               ["run", "m", "label", "rule", "tau", "context_needed", "sqrt_m_half", "paper_law", "paper_value"], table)
    fit_path = os.path.join(args.out, "scaling_fit.csv")
    save_table([{**fit, "tau": taus[0] if taus else tau, "rule": args.context_rule}], list(fit) + ["tau", "rule"],
               fit_path)
    plot = os.path.join(args.out, "scaling.png")
    scaling.plot(plot, reached, fit, args.context_rule)
    print(f"context needed ({args.context_rule}) ~ {fit['prefactor']:.3g} * m^{fit['exponent']:.3f} "
          f"(stderr {fit['exponent_stderr']:.3f}, {fit['points']} points)")
    for law in {id(law): law for law in laws if law}.values():
        print(f"  {law['paper']}: {law['name']} ({law['source']})")
    print(f"files written:\n  {table}\n  {fit_path}\n  {plot}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    e = sub.add_parser("eval", help="accuracy by position, context needed, roll-out, baselines",
                       description="Rebuild the model, regenerate the run's test set (or a fresh one) and write "
                                   "accuracy by number position (CSV, PNG), the accuracy of each bit and of the low "
                                   "bits (of each prime-power residue for an LCG whose m is not a power of two) by "
                                   "position (CSV, a heatmap per curve), the context needed by both definitions "
                                   "(--tau, --reach_tau), and a greedy roll-out. Position p = the prediction of "
                                   "number p+1 from the first p.")
    add_model_args(e)
    add_data_args(e)
    e.add_argument("--tau", type=threshold, default=positions.DEFAULT_TAU["stays"],
                   help="context needed 'stays': the first position from which accuracy stays >= tau to the end "
                        "(this project's definition, default 0.99; the second paper, arXiv 2510.26792, states its "
                        "sqrt(m) law for 'near-perfect prediction' without a number)")
    e.add_argument("--reach_tau", type=threshold, default=positions.DEFAULT_TAU["reaches"],
                   help="context needed 'reaches': the first position where accuracy reaches tau (default 0.9; the "
                        "first paper, arXiv 2502.10390, counts the elements 'needed to reach high accuracy' without a "
                        "number; the second paper's sqrt(m)/2 holds at about 90%% by a secondary summary, not checked "
                        "against its text); also the threshold of the per-bit steps printed")
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
    c.add_argument("--tau", type=threshold, default=positions.DEFAULT_TAU["stays"], help="as eval's --tau")
    c.add_argument("--reach_tau", type=threshold, default=positions.DEFAULT_TAU["reaches"],
                   help="as eval's --reach_tau")
    c.add_argument("--out", default="results/analysis")
    c.set_defaults(run=cmd_curves)

    m = sub.add_parser("embed", help="PCA of the token embedding, bitwise classes",
                       description="PCA of the token embedding: scatter plots of component pairs coloured by popcount, "
                                   "zero bits, zero runs (cyclic and plain), lowest set bit and rotation class; "
                                   "explained variance; nearest-centroid scores; each component's correlation with "
                                   "each numeric label.")
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
                                   "with its standard error, and a log-log plot with each paper's law: for LCG runs "
                                   "arXiv 2502.10390's sublinear growth (m^(1/4) by a secondary summary only), for PCG "
                                   "runs arXiv 2510.26792's sqrt(m) (the 1/2 by a secondary summary only).")
    s.add_argument("runs", nargs="+", help="context_needed.csv of analyze.py eval, or .npz files with test_m<m> arrays")
    s.add_argument("--source", default="model", help="rows of context_needed.csv to use (model, baseline_lcg, ...)")
    s.add_argument("--context_rule", choices=sorted(positions.CONTEXT_RULES), default="stays",
                   help="stays: the first position from which accuracy stays >= tau (eval's context_needed, --tau); "
                        "reaches: the first where it reaches tau (eval's context_reached, --reach_tau)")
    s.add_argument("--tau", type=threshold, default=None,
                   help=f"for .npz inputs (default {positions.DEFAULT_TAU['stays']} with stays, "
                        f"{positions.DEFAULT_TAU['reaches']} with reaches); a CSV carries its own")
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
