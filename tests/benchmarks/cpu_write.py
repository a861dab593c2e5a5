"""CPU time to log N records through RepoHandler (auto mode) and flush, per store.

    python tests/benchmarks/cpu_write.py [N] [--stores memory,csv,sqlite] [--rounds 3]

Prints the best (lowest) user + system CPU seconds of the process, all threads
(``resource.getrusage``), spent by the logging calls ("emit") and by the
logging calls plus ``flush()`` ("end to end"). CPU time varies far less than
wall time on a shared machine, so before/after comparisons of the write path
use it (run it from two checkouts, interleaved).
"""

from __future__ import annotations

import argparse
import logging
import resource
import tempfile
from pathlib import Path

import tasklog


def cpu() -> float:
    """User + system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def once(store: str, n: int, folder: Path) -> tuple[float, float]:
    """(emit, end to end) CPU seconds for *n* records into a new *store*."""
    url = {
        "memory": f"memory://?max_size={n}",
        "csv": f"csv:///{folder / 'w.csv'}",
        "sqlite": f"sqlite:///{folder / 'w.db'}",
    }[store]
    handler = tasklog.RepoHandler(url)
    logger = logging.getLogger(f"bench.cpu.{store}.{id(handler)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    extra = {"task_name": "bench", "action": "log", "run_id": "r1"}
    start = cpu()
    for i in range(n):
        logger.info("record %d", i, extra=extra)
    emitted = cpu()
    handler.flush()
    done = cpu()
    logger.removeHandler(handler)
    handler.close()
    return emitted - start, done - start


def main() -> None:
    """Parse arguments and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=30_000)
    parser.add_argument("--stores", default="memory,csv,sqlite")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for store in args.stores.split(","):
        best = (float("inf"), float("inf"))
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory() as tmp:
                emit, total = once(store, args.n, Path(tmp))
            best = (min(best[0], emit), min(best[1], total))
        print(f"{store}\temit {best[0]:.3f}\tend-to-end {best[1]:.3f}")


if __name__ == "__main__":
    main()
