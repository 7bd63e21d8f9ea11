"""Run every benchmark: ``.venv/bin/python -m tests.bench [NAME ...]``. Prints a table, writes bench-results.json."""

from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path

from tests.bench.harness import BenchRow, machine, render, write_results

BENCHES = {
    "claim": ("tests.bench.bench_db", "bench_claim_overhead"),
    "insert": ("tests.bench.bench_db", "bench_bulk_insert"),
    "imaging": ("tests.bench.bench_imaging", "bench_image_postprocessing"),
    "offline": ("tests.bench.bench_imaging", "bench_offline_task"),
    "gallery": ("tests.bench.bench_gallery", "bench_gallery"),
    "render": ("tests.bench.bench_render", "bench_gallery_render"),
    "executor": ("tests.bench.bench_executor", "bench_executor_efficiency"),
    "pacing": ("tests.bench.bench_pacing", "bench_pacing"),
    "export": ("tests.bench.bench_exports", "bench_table_exports"),
    "zip": ("tests.bench.bench_exports", "bench_zip_export"),
    "identity": ("tests.bench.bench_identity", "bench_identity"),
    "map": ("tests.bench.bench_map", "bench_map"),
}


def main(names: list[str]) -> int:
    rows: list[BenchRow] = []
    for name in names or list(BENCHES):
        module, func = BENCHES[name]
        print(f"running {name} ...", file=sys.stderr, flush=True)
        try:
            result = getattr(importlib.import_module(module), func)()
        except Exception:
            traceback.print_exc()
            continue
        rows.extend(result if isinstance(result, list) else [result])
    print(f"Machine: {machine()}\n")
    print(render(rows))
    write_results(rows, Path("bench-results.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
