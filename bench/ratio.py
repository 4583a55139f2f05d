#!/usr/bin/env python3
"""ratio.py BASELINE.tsv ELKFS.tsv - median of each metric over runs and elkfs/baseline
ratio oriented so that > 1 means elkfs is better (higher rate, or lower time)."""
import statistics
import sys
from collections import OrderedDict

LOWER_IS_BETTER = {"s", "us"}


def load(path):
    rows = OrderedDict()
    for line in open(path):
        tid, test, metric, unit, run, val, note = line.rstrip("\n").split("\t")
        try:
            rows.setdefault((tid, test, unit), []).append(float(val))
        except ValueError:
            pass
    return OrderedDict((k, statistics.median(v)) for k, v in rows.items())


base, elk = load(sys.argv[1]), load(sys.argv[2])
print("| # | test | unit | MooseFS | elkfs | ratio (>1 = elkfs better) |")
print("|---|---|---|---|---|---|")
for key, b in base.items():
    if key not in elk:
        continue
    e = elk[key]
    tid, test, unit = key
    if unit in LOWER_IS_BETTER:
        r = b / e if e else float("inf")
    else:
        r = e / b if b else float("inf")
    print(f"| {tid} | {test} | {unit} | {b:g} | {e:g} | {r:.2f} |")
