"""Best of five interleaved logbench.py runs per store (the figures docs/performance.md quotes).

    python tests/benchmarks/bestof.py [ROUNDS]

Starts a throwaway PostgreSQL server (tests/_postgres.py), runs the neutral
benchmark logbench.py (beside this file: a copy of the shared referee) for
FileHandler and each tasklog store, 100,000 records, ROUNDS times interleaved,
and prints the best run of each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _postgres import PostgresServer  # noqa: E402

PY = sys.executable
# the neutral workload, carried beside this file (or wherever TASKLOG_LOGBENCH points)
BENCH = os.environ.get("TASKLOG_LOGBENCH", str(HERE / "logbench.py"))
CONFIGS = [("stdlib", "file"), ("tasklog", "memory"), ("tasklog", "csv"),
           ("tasklog", "sqlite"), ("tasklog", "postgresql")]


def main(rounds: int = 5) -> None:
    """Run the grid and print the best figures with their ratios to FileHandler."""
    server = PostgresServer()
    server.start()
    results: dict[tuple[str, str], list[dict[str, float]]] = {c: [] for c in CONFIGS}
    try:
        for _ in range(rounds):
            for system, store in CONFIGS:
                out = subprocess.run(
                    [PY, BENCH, system, store, "-n", "100000", "--url", server.url],
                    capture_output=True, text=True, check=True,
                ).stdout
                results[(system, store)].append(json.loads(out))
    finally:
        server.stop()
    files = results[("stdlib", "file")]
    best_emit = max(r["emit_per_s"] for r in files)
    best_e2e = max(r["end_to_end_per_s"] for r in files)
    for (system, store), runs in results.items():
        emit = max(r["emit_per_s"] for r in runs)
        e2e = max(r["end_to_end_per_s"] for r in runs)
        fastest = min(runs, key=lambda r: r.get("fail_of_one_task_ms", 0))
        print(
            f"{system:8} {store:10} emit {emit:6.0f}/s ({emit / best_emit:.2f}x)  "
            f"e2e {e2e:6.0f}/s ({e2e / best_e2e:.2f}x)  "
            f"fail-of-task {fastest.get('fail_of_one_task_ms', '-')} ms  "
            f"count-fail {fastest.get('count_fail_ms', '-')} ms  "
            f"latest-run {fastest.get('latest_run_of_task_ms', '-')} ms"
        )


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
