"""DAG parse time (DESIGN §7: parsing all DAGs well under one second, no I/O at parse time).

Parses dags/retention.py the way the DAG processor does (Airflow already imported) in a fresh
process, several times, and prints the median against the one-second budget.

    .venv/bin/python benchmarks/dag_parse.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
DAG_FILE = PROJECT / "dags" / "retention.py"
CHILD = """
import json, runpy, sys, time
import airflow.sdk  # loaded by the DAG processor before it parses any file
started = time.perf_counter()
namespace = runpy.run_path(sys.argv[1])
first = time.perf_counter() - started
started = time.perf_counter()
runpy.run_path(sys.argv[1])
again = time.perf_counter() - started
dags = [name for name, value in namespace.items() if type(value).__name__ == "DAG"]
print(json.dumps({"first": first, "again": again, "dags": len(dags)}))
"""


def main() -> None:
    runs = []
    for _ in range(5):
        output = subprocess.run(
            [sys.executable, "-c", CHILD, str(DAG_FILE)],
            check=True,
            capture_output=True,
            text=True,
            env=os.environ | {"PYTHONPATH": str(PROJECT / "plugins")},
        ).stdout
        runs.append(json.loads(output.strip().splitlines()[-1]))
    first = sorted(run["first"] for run in runs)[2]
    again = sorted(run["again"] for run in runs)[2]
    print(f"DAG parse: {runs[0]['dags']} DAGs from {DAG_FILE.name}")
    print(f"first parse in a process : {first * 1000:.0f} ms ({first:.2f} of the 1 s budget)")
    print(f"re-parse (warm imports)  : {again * 1000:.0f} ms ({again:.2f} of the 1 s budget)")


if __name__ == "__main__":
    main()
