"""Benchmark: how long each command takes to answer ``--help`` and a usage error.

Each command runs in a fresh process, as a user starts it (``python train.py --help`` and
the others), ``--repeats`` times; the median wall time is reported. The target is under
2 s: TensorFlow (about 15 s to import on a loaded 2-core machine) loads only once work
starts. Timings depend on the machine and its load: run on an idle one.

    python bench/cli_startup.py [--repeats 5] [--out bench/results/cli_startup.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = [
    ["train.py", "--help"], ["train.py", "--no-such-option"],
    ["evaluate.py", "--help"], ["evaluate.py", "compare", "--help"],
    ["evaluate.py", "readers", "--help"], ["predict.py", "--help"],
    ["-m", "gan", "--help"], ["-m", "gan", "train", "--help"],
    ["-m", "preprocess", "crop", "--help"], ["-m", "preprocess", "filter", "train", "--help"],
    ["-m", "dermnet.data", "--help"],
]


def time_command(arguments: list[str], repeats: int) -> dict:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = subprocess.run([sys.executable, *arguments], cwd=ROOT, capture_output=True)
        seconds.append(time.perf_counter() - start)
    return {"command": " ".join(["python", *arguments]), "exit_status": result.returncode,
            "median_seconds": round(statistics.median(seconds), 3),
            "max_seconds": round(max(seconds), 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/cli_startup.json")
    args = parser.parse_args()
    rows = [time_command(command, args.repeats) for command in COMMANDS]
    print("| command | exit | median s | max s |\n|---|---|---|---|")
    for row in rows:
        print(f"| `{row['command']}` | {row['exit_status']} | {row['median_seconds']:.2f} | "
              f"{row['max_seconds']:.2f} |")
    machine = {"cpus": os.cpu_count(), "load_average": os.getloadavg(),
               "python": platform.python_version(), "platform": platform.platform()}
    args.out.write_text(json.dumps({"machine": machine, "repeats": args.repeats,
                                    "rows": rows}, indent=2) + "\n")
    print(f"written to {args.out}")
    return 0 if all(row["median_seconds"] < 2 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
