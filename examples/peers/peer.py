"""The Python peers of examples/peers/run.sh: DBOS Transact and Powertools' idempotency on Redis.

Runs the miss and replay workloads defined in run.sh's header and prints one JSON line per
mode (miss, then replay of the same keys), with the fields every side prints:
side, store, mode, calls, concurrency, seconds, calls_per_s, p50_us, p99_us, executions.

  python peer.py --peer dbos --url postgresql://postgres@127.0.0.1:5432/dbos_bench?sslmode=disable
  python peer.py --peer powertools --url redis://127.0.0.1:6379/5 [--cache on]
"""

import argparse
import itertools
import json
import threading
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor


class Executions:
    """How many times a step body ran (a replay must not add to it)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.count = 0

    def bump(self):
        with self._lock:
            self.count += 1


EXECUTIONS = Executions()


def body(i):
    """The step body: the same small JSON object on every side."""
    EXECUTIONS.bump()
    return {"title": f"draft {i}", "tokens": 512}


def dbos_side(args, run):
    """A workflow of one step whose workflow id is the key; replay: the same id again."""
    from dbos import DBOS, DBOSConfig, SetWorkflowID

    config: DBOSConfig = {
        "name": "idem-peers",
        "system_database_url": args.url,
        # Callers plus DBOS's own background work.
        "sys_db_pool_size": args.concurrency + 4,
        "log_level": "WARNING",
    }
    DBOS(config=config)

    @DBOS.step()
    def draft(i):
        return body(i)

    @DBOS.workflow()
    def pipeline(i):
        return draft(i)

    DBOS.launch()

    def call(i):
        with SetWorkflowID(f"{run}-{i}"):
            return pipeline(i)

    return call, DBOS.destroy


def powertools_side(args, run):
    """`@idempotent_function` keyed by the request's key (JMESPath `key`), Redis persistence
    (`CachePersistenceLayer`, the new name of `RedisCachePersistenceLayer`)."""
    import redis
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
    from aws_lambda_powertools.utilities.idempotency.persistence.redis import (
        CachePersistenceLayer,
    )

    # Outside Lambda there is no context to register: Powertools warns once that it cannot
    # tell the remaining time, which does not apply here.
    warnings.filterwarnings("ignore", message=".*remaining time.*")
    client = redis.Redis.from_url(args.url)
    persistence = CachePersistenceLayer(client=client)
    config = IdempotencyConfig(
        event_key_jmespath="key",
        expires_after_seconds=3600,
        use_local_cache=args.cache == "on",
        local_cache_max_items=args.calls + args.warm + 1,
    )

    @idempotent_function(
        data_keyword_argument="request",
        persistence_store=persistence,
        config=config,
        key_prefix=args.key_prefix,
    )
    def draft(request):
        return body(request["i"])

    def call(i):
        return draft(request={"key": f"{run}-{i}", "i": i})

    return call, client.close


def drive(call, keys, concurrency):
    """Calls every key of `keys` on `concurrency` threads; returns latencies (s) and wall time."""
    nxt = iter(keys)
    lock = threading.Lock()

    def worker():
        latencies = []
        while True:
            with lock:
                i = next(nxt, None)
            if i is None:
                return latencies
            t = time.perf_counter()
            got = call(i)
            latencies.append(time.perf_counter() - t)
            if got != {"title": f"draft {i}", "tokens": 512}:
                raise SystemExit(f"unexpected result for {i}: {got!r}")

    started = time.perf_counter()
    if concurrency <= 1:
        latencies = worker()
    else:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            futures = [pool.submit(worker) for _ in range(concurrency)]
            latencies = list(itertools.chain.from_iterable(f.result() for f in futures))
    return latencies, time.perf_counter() - started


def report(args, mode, latencies, seconds, executions):
    latencies.sort()

    def pct(p):
        return latencies[min(int(len(latencies) * p), len(latencies) - 1)] * 1e6

    side = args.peer + ("-cache" if args.cache == "on" else "")
    print(json.dumps({
        "side": side,
        "store": "postgres" if args.peer == "dbos" else "redis",
        "mode": mode,
        "calls": len(latencies),
        "concurrency": args.concurrency,
        "seconds": seconds,
        "calls_per_s": len(latencies) / seconds,
        "p50_us": pct(0.50),
        "p99_us": pct(0.99),
        "executions": executions,
    }), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--peer", choices=["dbos", "powertools"], required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--calls", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--warm", type=int, default=100)
    p.add_argument("--cache", choices=["on", "off"], default="off",
                   help="Powertools' in-process cache of completed records (use_local_cache)")
    p.add_argument("--key-prefix", default="peers-powertools")
    args = p.parse_args()

    run = uuid.uuid4().hex
    call, close = (dbos_side if args.peer == "dbos" else powertools_side)(args, run)
    try:
        # Keys [0, warm) warm up both modes (connections, statements); the measured keys follow.
        warm = range(args.warm)
        drive(call, warm, args.concurrency)
        drive(call, warm, args.concurrency)
        measured = range(args.warm, args.warm + args.calls)
        before = EXECUTIONS.count
        latencies, seconds = drive(call, measured, args.concurrency)
        after_miss = EXECUTIONS.count
        report(args, "miss", latencies, seconds, after_miss - before)
        latencies, seconds = drive(call, measured, args.concurrency)
        report(args, "replay", latencies, seconds, EXECUTIONS.count - after_miss)
    finally:
        close()


if __name__ == "__main__":
    main()
