#!/usr/bin/env python3
"""Decode speed when the CPUs are shared: `ternlm bench` token generation (tg) at the default
thread count, `-t 1` and `-t 2`, on an idle machine and with N competing busy-loop processes
(`sh -c 'while :; do :; done'`). Every configuration runs once per round, in an order that
rotates from round to round, so slow spells of a noisy machine hit all of them alike; the
table shows medians (min-max) of tokens/s and the ratio of the default to the better of
-t 1 and -t 2. Several binaries may be compared side by side (e.g. a build of the previous
commit), interleaved the same way.

    TERNLM_OFFLINE=1 python3 benches/contention.py --busy 0,1 --rounds 5 \\
        --ternlm new=target/release/ternlm --ternlm base=/tmp/ternlm-base

The default model (SmolLM2-135M) needs to be cached (`ternlm pull`) or given with --model.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

SETTINGS = ("default", "1", "2")


def bench_once(binary, model, threads, gen, timeout):
    cmd = [binary, "bench", "-p", "0", "-n", str(gen), "-r", "1", "--no-probe", "--json"]
    if model:
        cmd += ["-m", model]
    if threads != "default":
        cmd += ["-t", threads]
    try:
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=timeout).stdout
    except subprocess.TimeoutExpired:
        return 0.0  # slower than `gen` tokens in `timeout` seconds: counts as (near) zero
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return rows[0]["tokens_per_s"]


def start_busy(n, new_session):
    # The loop runs in the shell itself (`:` is a builtin), so killing the shell ends it.
    return [subprocess.Popen(["sh", "-c", "while :; do :; done"], start_new_session=new_session) for _ in range(n)]


def stop_busy(procs):
    for p in procs:
        p.kill()
        p.wait()


def fmt(samples):
    if not samples:
        return "-"
    return f"{statistics.median(samples):6.1f} ({min(samples):.0f}-{max(samples):.0f})"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ternlm", action="append", help="NAME=PATH of a ternlm binary; repeat to compare (default: new=target/release/ternlm)")
    ap.add_argument("--model", default="", help="model (default: ternlm's default model)")
    ap.add_argument("--busy", default="0,1", help="comma-separated numbers of competing busy processes")
    ap.add_argument("--new-session", action="store_true",
                    help="start the busy processes in a session of their own: with the kernel's autogroup scheduling "
                         "(sched_autogroup_enabled) they then form a group that gets as much CPU time as ternlm's, as a "
                         "build started in another terminal would")
    ap.add_argument("--gen", type=int, default=64, help="tokens per timed run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=120, help="seconds before a run counts as 0 tokens/s")
    ap.add_argument("--json", action="store_true", help="print one JSON object per row instead of a table")
    args = ap.parse_args()
    binaries = [b.split("=", 1) if "=" in b else (b, b) for b in (args.ternlm or ["new=target/release/ternlm"])]
    for name, path in binaries:
        if not os.access(path, os.X_OK):
            sys.exit(f"{name}: no executable at {path} (build with `cargo build --release -p ternlm-cli`, or pass --ternlm NAME=PATH)")
    busy_levels = [int(b) for b in args.busy.split(",")]
    configs = [(name, path, t) for name, path in binaries for t in SETTINGS]
    res = {}
    load_before = os.getloadavg()
    for r in range(args.rounds):
        for busy in busy_levels:
            procs = start_busy(busy, args.new_session)
            try:
                k = r % len(configs)
                for name, path, t in configs[k:] + configs[:k]:
                    tps = bench_once(path, args.model, t, args.gen, args.timeout)
                    res.setdefault((busy, name, t), []).append(tps)
                    print(f"round {r + 1}/{args.rounds} busy {busy} {name} -t {t}: {tps:.1f} tok/s", file=sys.stderr)
            finally:
                stop_busy(procs)
    load_after = os.getloadavg()
    rows = []
    for busy in busy_levels:
        for name, _ in binaries:
            med = {t: statistics.median(res[(busy, name, t)]) for t in SETTINGS}
            best = max(med["1"], med["2"])
            rows.append({
                "busy": busy,
                "binary": name,
                **{f"t_{t}": res[(busy, name, t)] for t in SETTINGS},
                "default_vs_best": med["default"] / best if best else 0.0,
            })
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return
    session = "own session" if args.new_session else "ternlm's session"
    print(f"tg{args.gen} tokens/s, median (min-max) of {args.rounds} rounds; {os.cpu_count()} CPUs; busy processes in {session}; "
          f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f}")
    print()
    print("| busy procs | binary | default | -t 1 | -t 2 | default / best |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['busy']} | {row['binary']} | {fmt(row['t_default'])} | {fmt(row['t_1'])} | {fmt(row['t_2'])} | "
              f"{row['default_vs_best']:.2f} |")
    if len(binaries) > 1:
        base = binaries[-1][0]
        print()
        print(f"ratio of medians to `{base}`:")
        for busy in busy_levels:
            for name, _ in binaries[:-1]:
                cells = []
                for t in SETTINGS:
                    a, b = statistics.median(res[(busy, name, t)]), statistics.median(res[(busy, base, t)])
                    cells.append(f"-t {t}: {a / b:.2f}x" if b else f"-t {t}: -")
                print(f"  busy {busy}, {name}: " + ", ".join(cells))


if __name__ == "__main__":
    main()
