"""Turn a pytest-benchmark JSON into a markdown table: median time per case and the
reference / cpu ratio at equal batch (the speedup of our kernels over plain torch).

    python bench/summarize.py bench/results/cpu-2core.json > bench/results/cpu-2core.md
"""
from __future__ import annotations

import json
import re
import sys
from collections import defaultdict


def main(path: str) -> None:
    data = json.load(open(path))
    table: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
    for bench in data["benchmarks"]:
        match = re.match(r"test_(\w+)\[(\w+)-B(\d+)-\]", bench["name"])
        if not match:
            continue
        op, backend, batch = match.group(1), match.group(2), int(match.group(3))
        table[(op, batch)][backend] = bench["stats"]["median"]
    machine = data["machine_info"]
    print(f"Machine: {machine.get('cpu', {}).get('brand_raw', '?')}, "
          f"{machine.get('cpu', {}).get('count', '?')} logical CPUs; "
          f"python {machine.get('python_version')}; commit {data.get('commit_info', {}).get('id', '?')[:10]}; "
          f"{data.get('datetime', '')}\n")
    backends = sorted({b for row in table.values() for b in row}, key=lambda b: (b != "cpu", b))
    print("| op | B | " + " | ".join(f"{b} (ms)" for b in backends) + " | reference / cpu |")
    print("|---|---|" + "---|" * len(backends) + "---|")
    for (op, batch), row in sorted(table.items()):
        cells = [f"{row[b] * 1e3:.2f}" if b in row else "—" for b in backends]
        ratio = f"{row['reference'] / row['cpu']:.1f}x" if "reference" in row and "cpu" in row else "—"
        print(f"| {op} | {batch} | " + " | ".join(cells) + f" | {ratio} |")


if __name__ == "__main__":
    main(sys.argv[1])
