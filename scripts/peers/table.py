"""Prints the markdown table of bench-peers.sh: events per second of deltarec
and of each peer on the same log, and the ratio to deltarec.

Usage: python table.py EVENTS DELTAREC_OUT_DIR DELTAREC.time [PEER.json PEER.time]...

A .time file is a `/usr/bin/time -v` report (wall time, peak memory); a
.json file is what a peer script printed. A peer that did only the model
part also gets a "full task" line: DuckDB's feature time plus its own.
"""

import json
import sys


def time_report(path):
    """(wall seconds, peak RSS MiB) of a /usr/bin/time -v report."""
    wall = rss = 0.0
    with open(path) as file:
        for line in file:
            key, _, value = line.strip().rpartition(": ")
            if key.startswith("Elapsed (wall clock)"):
                for part in value.split(":"):
                    wall = wall * 60 + float(part)
            elif key == "Maximum resident set size (kbytes)":
                rss = float(value) / 1024
    return wall, rss


def main():
    events = int(sys.argv[1])
    with open(f"{sys.argv[2]}/metrics.jsonl") as file:
        summary = [json.loads(line) for line in file][-1]
    wall, rss = time_report(sys.argv[3])
    base = events / wall

    print("| tool | what it does | seconds | events/s | deltarec ÷ tool | peak RSS MiB "
          "| examples | log loss | AUC |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| deltarec -w 2 | full task, incremental (wall time of the run) | {wall:.1f} "
          f"| {base:,.0f} | 1.0 | {rss:.0f} | {summary['examples']} "
          f"| {summary['log_loss']:.4f} | {summary['auc']:.4f} |")

    feature_seconds = None
    pairs = sys.argv[4:]
    for json_path, time_path in zip(pairs[::2], pairs[1::2]):
        with open(json_path) as file:
            text = file.read().strip()
        if not text:
            continue
        peer = json.loads(text.splitlines()[-1])
        if "skipped" in peer:
            print(f"| {peer['tool']} | skipped: {peer['skipped']} | | | | | | | |")
            continue
        _, peer_rss = time_report(time_path)
        seconds = peer["seconds"]
        rate = events / seconds
        print(f"| {peer['tool']} | {peer['scope']} | {seconds:.1f} | {rate:,.0f} "
              f"| {base / rate:.2f} | {peer_rss:.0f} | {peer['examples']} "
              f"| {peer['log_loss']:.4f} | {peer['auc']:.4f} |")
        if "feature_seconds" in peer:
            feature_seconds = peer["feature_seconds"]
        elif feature_seconds is not None:
            total = feature_seconds + seconds
            name = peer["tool"].split(" (")[0].replace(" StandardScaler + LogisticRegression", "")
            print(f"| DuckDB + {name} | full task: DuckDB features "
                  f"({feature_seconds:.1f} s) + the above | {total:.1f} | {events / total:,.0f} "
                  f"| {base * total / events:.2f} | | | | |")


if __name__ == "__main__":
    main()
