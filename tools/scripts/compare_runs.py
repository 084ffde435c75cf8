#!/usr/bin/env python3
"""Compares the training curves of two runs of `longnet train` (their metrics.jsonl files).

Prints a markdown table of both losses every --every steps, the largest relative gap of the
losses smoothed over --window steps (after --skip steps), and each run's mean tokens/s, MFU and
memory. With --tolerance, exits 1 when the largest gap exceeds it. Typical use: a bf16 run
against an f32 run of the same config.

  compare_runs.py RUN_A RUN_B [--names bf16,f32] [--every 10] [--window 10] [--tolerance 0.05]
"""
import argparse
import json
import math
import pathlib
import sys


def train_records(run):
    path = pathlib.Path(run) / "metrics.jsonl"
    if not path.is_file():
        sys.exit(f"compare_runs: {path} does not exist (is {run} a run directory with metrics.jsonl?)")
    out = {}
    with path.open() as f:
        for line_no, line in enumerate(f, 1):
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"compare_runs: {path}:{line_no}: not JSON ({e})")
            if r.get("split") == "train" and "loss" in r:
                out[int(r["step"])] = r  # a resumed run logs a step again: the later record wins
    if not out:
        sys.exit(f"compare_runs: {path} holds no training record")
    return out


def smoothed(losses, steps, window):
    """Mean of the finite losses at the `window` logged steps ending at each step."""
    out = {}
    for i, s in enumerate(steps):
        vals = [losses[t] for t in steps[max(0, i - window + 1): i + 1] if math.isfinite(losses[t])]
        out[s] = sum(vals) / len(vals) if vals else math.nan
    return out


def mean_of(records, key, skip):
    vals = [r[key] for s, r in records.items() if s > skip and key in r]
    return sum(vals) / len(vals) if vals else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_a")
    ap.add_argument("run_b")
    ap.add_argument("--names", default="A,B", help="column names of the two runs, comma separated")
    ap.add_argument("--every", type=int, default=10, help="table row every this many steps")
    ap.add_argument("--window", type=int, default=10, help="logged steps averaged for the gap")
    ap.add_argument("--skip", type=int, default=0, help="steps left out of the gap and the means (warm-up)")
    ap.add_argument("--tolerance", type=float, help="fail when the largest smoothed relative gap exceeds this")
    args = ap.parse_args()
    names = args.names.split(",")
    if len(names) != 2:
        sys.exit("compare_runs: --names takes two names")

    a, b = train_records(args.run_a), train_records(args.run_b)
    steps = sorted(set(a) & set(b))
    if not steps:
        sys.exit("compare_runs: the runs share no logged step")
    la = smoothed({s: a[s]["loss"] for s in steps}, steps, args.window)
    lb = smoothed({s: b[s]["loss"] for s in steps}, steps, args.window)

    print(f"| step | loss {names[0]} | loss {names[1]} | relative gap (smoothed over {args.window}) |")
    print("|---:|---:|---:|---:|")
    for s in steps:
        if s % args.every == 0 or s == steps[-1]:
            gap = abs(la[s] - lb[s]) / abs(lb[s])
            print(f"| {s} | {a[s]['loss']:.4f} | {b[s]['loss']:.4f} | {gap:.4f} |")

    gaps = [(abs(la[s] - lb[s]) / abs(lb[s]), s) for s in steps if s > args.skip and math.isfinite(la[s] + lb[s])]
    worst, at = max(gaps) if gaps else (math.nan, None)
    print(f"\nlargest smoothed relative gap after step {args.skip}: {worst:.4f} (step {at}); "
          f"final smoothed losses {la[steps[-1]]:.4f} ({names[0]}) and {lb[steps[-1]]:.4f} ({names[1]})")
    print("\n| run | tokens/s | MFU | memory (GiB) |")
    print("|---|---:|---:|---:|")
    for name, rec in ((names[0], a), (names[1], b)):
        tps, mfu, mem = (mean_of(rec, k, args.skip) for k in ("tokens_per_s", "mfu", "memory_bytes"))
        cell = lambda v, f: f.format(v) if v is not None else "-"
        print(f"| {name} | {cell(tps, '{:.0f}')} | {cell(mfu, '{:.3f}')} | "
              f"{cell(mem / 2**30 if mem is not None else None, '{:.1f}')} |")
    if args.tolerance is not None and not worst <= args.tolerance:
        print(f"compare_runs: the gap {worst:.4f} exceeds --tolerance {args.tolerance}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
