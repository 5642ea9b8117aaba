"""Turns the JSON lines of examples/peers/run.sh into a markdown table: ranges over rounds."""

import collections
import json
import sys

# Rows in this order; (side, store, mode, label).
ROWS = [
    ("idem", "postgres", "miss", "idem, PostgreSQL"),
    ("dbos", "postgres", "miss", "DBOS Transact (Python), PostgreSQL"),
    ("durare", "postgres", "miss", "durare (Rust), PostgreSQL"),
    ("idem", "redis", "miss", "idem, Redis"),
    ("powertools", "redis", "miss", "Powertools idempotency (Python), Redis"),
    ("idem", "postgres", "replay", "idem, PostgreSQL, cache off"),
    ("idem-cache", "postgres", "replay", "idem, PostgreSQL, snapshot cache on"),
    ("dbos", "postgres", "replay", "DBOS Transact (Python), PostgreSQL"),
    ("durare", "postgres", "replay", "durare (Rust), PostgreSQL"),
    ("idem", "redis", "replay", "idem, Redis, cache off"),
    ("idem-cache", "redis", "replay", "idem, Redis, snapshot cache on"),
    ("powertools", "redis", "replay", "Powertools idempotency (Python), Redis, local cache off"),
    ("powertools-cache", "redis", "replay", "Powertools idempotency (Python), Redis, local cache on"),
]


def latency(us):
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"


def rate(x):
    return f"{x:,.0f}/s"


def span(values, fmt):
    lo, hi = min(values), max(values)
    a, b = fmt(lo), fmt(hi)
    if a == b:
        return a
    for unit in (" µs", " ms", "/s"):
        if a.endswith(unit) and b.endswith(unit):
            return f"{a[: -len(unit)]}–{b}"
    return f"{a}–{b}"


def main():
    runs = collections.defaultdict(list)
    problems = []
    for line in open(sys.argv[1]):
        j = json.loads(line)
        key = (j["side"], j["store"], j["mode"], j["concurrency"])
        runs[key].append(j)
        want = j["calls"] if j["mode"] == "miss" else 0
        if j["executions"] != want:
            problems.append(f"{key}: {j['executions']} body executions, expected {want}")
    concurrencies = sorted({k[3] for k in runs})
    many = [c for c in concurrencies if c != 1]
    rounds = max((j["round"] for v in runs.values() for j in v), default=0)
    calls = max((j["calls"] for v in runs.values() for j in v), default=0)
    print(f"N = {calls:,} calls per case, {rounds} round(s); ranges are min–max over rounds.\n")
    head = "| case | side | 1 caller p50 | 1 caller p99 | 1 caller calls/s |"
    head += "".join(f" {c} callers calls/s |" for c in many)
    print(head)
    print("|" + "---|" * (4 + 1 + len(many)))
    for side, store, mode, label in ROWS:
        one = runs.get((side, store, mode, 1), [])
        cells = [
            span([j["p50_us"] for j in one], latency) if one else "",
            span([j["p99_us"] for j in one], latency) if one else "",
            span([j["calls_per_s"] for j in one], rate) if one else "",
        ]
        for c in many:
            r = runs.get((side, store, mode, c), [])
            cells.append(span([j["calls_per_s"] for j in r], rate) if r else "")
        if any(cells):
            print(f"| {mode} | {label} | " + " | ".join(cells) + " |")
    for p in problems:
        print(f"\nWARNING: {p}")
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
