#!/usr/bin/env python3
"""Side-by-side speed of ternlm and llama.cpp (or bitnet.cpp's llama-bench) on the same model
file, in one run: the two engines alternate round by round, each timing one repetition of
every test per round, so a noisy shared machine slows both alike. Prints medians, spreads
and the ratio.

    python3 benches/compare.py --model 2b4t.gguf --llama-bench /path/to/llama-bench \\
        --threads 2 --prompt 128 --gen 128 --rounds 5

Build llama.cpp outside this repository (its source ships in the PyPI sdist
`llama-cpp-python`); nothing of it is committed here.
"""

import argparse
import json
import statistics
import subprocess
import sys


def ternlm_round(args):
    cmd = [args.ternlm, "bench", "-m", args.model, "-t", str(args.threads), "-p", str(args.prompt),
           "-n", str(args.gen), "-r", "1", "--json", "--no-probe"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return {j["test"]: j["tokens_per_s"] for j in map(json.loads, out.splitlines()) if j}


def llama_round(args):
    cmd = [args.llama_bench, "-m", args.model, "-t", str(args.threads), "-p", str(args.prompt),
           "-n", str(args.gen), "-r", "1", "-o", "jsonl"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    res = {}
    for line in out.splitlines():
        if not line.startswith("{"):
            continue
        j = json.loads(line)
        test = f"pp{j['n_prompt']}" if j["n_prompt"] else f"tg{j['n_gen']}"
        res[test] = j["avg_ts"]
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--llama-bench", required=True)
    ap.add_argument("--ternlm", default="target/release/ternlm")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print one JSON object per test")
    args = ap.parse_args()
    ours, theirs = {}, {}
    for r in range(args.rounds):
        for name, fn, acc in (("ternlm", ternlm_round, ours), ("peer", llama_round, theirs)):
            for test, tps in fn(args).items():
                acc.setdefault(test, []).append(tps)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{t} {ours[t][-1]:.1f} vs {theirs.get(t, [0])[-1]:.1f}" for t in ours),
              file=sys.stderr)
    rows = []
    for test in ours:
        a, b = ours[test], theirs.get(test, [])
        row = {"test": test, "threads": args.threads, "model": args.model,
               "ternlm_median": statistics.median(a), "ternlm_min": min(a), "ternlm_max": max(a),
               "peer_median": statistics.median(b) if b else None, "peer_min": min(b) if b else None,
               "peer_max": max(b) if b else None}
        row["ratio"] = row["ternlm_median"] / row["peer_median"] if b else None
        rows.append(row)
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return
    print("| test | threads | ternlm t/s (min..max) | peer t/s (min..max) | ratio |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        peer = f"{r['peer_median']:.2f} ({r['peer_min']:.2f}..{r['peer_max']:.2f})" if r["peer_median"] else "-"
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] else "-"
        print(f"| {r['test']} | {r['threads']} | {r['ternlm_median']:.2f} ({r['ternlm_min']:.2f}..{r['ternlm_max']:.2f}) | {peer} | {ratio} |")


if __name__ == "__main__":
    main()
