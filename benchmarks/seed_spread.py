"""Seed-to-seed spread of Table 1: run the pipeline once per ``train.seed`` and summarise.

On the embedded dataset (200 test images, 4 epochs) the caption metrics of two runs that differ
only in the seed differ about as much as the two models do, so one run cannot say whether +ICA
helps the captions. This runs ``kedro run --params train.seed=S`` for each seed (all pipelines by
default, about 3.5 min per seed on 2 CPU cores), loads each run's ``comparison`` from the catalog
and prints mean ± sd per model and metric, and in how many seeds +ICA beat the baseline.

    python benchmarks/seed_spread.py --seeds 0 1 2 3
    python benchmarks/seed_spread.py --env gpu --seeds 0 1 2 --pipeline train  # train+evaluate
    python benchmarks/seed_spread.py --table 0=path/a.parquet --table 1=path/b.parquet  # no runs

Writes ``seed_spread_long.parquet`` and ``seed_spread_summary.parquet`` to ``--out``
(``data/08_reporting/seed_spread/``); a run that fails stops the script and names its log.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from ica_captioning.reports.seeds import seed_spread

PROJECT = Path(__file__).resolve().parents[1]
SHOWN = ["BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "CHAIR-i", "CHAIR-s"]


def load_comparison(env: str | None) -> pd.DataFrame:
    """The latest ``comparison`` version, through the project's catalog."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(PROJECT)
    with KedroSession.create(project_path=PROJECT, env=env) as session:
        return session.load_context().catalog.load("comparison")


def run_seed(seed: int, args: argparse.Namespace, logs: Path) -> pd.DataFrame:
    params = ",".join([f"train.seed={seed}", *args.params])
    cmd = ["kedro", "run", "--params", params]
    if args.pipeline:
        cmd += ["--pipeline", args.pipeline]
    if args.env:
        cmd += ["--env", args.env]
    log = logs / f"seed_{seed}.log"
    print(f"seed {seed}: {' '.join(cmd)}  (log: {log})", flush=True)
    with log.open("w") as fh:
        done = subprocess.run(cmd, cwd=PROJECT, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if done.returncode:
        raise SystemExit(f"seed {seed}: kedro run failed (exit {done.returncode}); see {log}")
    return load_comparison(args.env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--pipeline", default=None, help="kedro pipeline (default: all)")
    parser.add_argument("--env", default=None, help="kedro environment (e.g. gpu)")
    parser.add_argument("--params", nargs="*", default=[], help="extra key=value overrides")
    parser.add_argument(
        "--table",
        action="append",
        default=[],
        metavar="SEED=PATH",
        help="aggregate an existing comparison Parquet instead of running (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=PROJECT / "data/08_reporting/seed_spread")
    args = parser.parse_args()

    tables: dict[int, pd.DataFrame] = {}
    if args.table:
        for item in args.table:
            seed, _, path = item.partition("=")
            if not path or not seed.lstrip("-").isdigit():
                raise SystemExit(f"--table expects SEED=PATH, got {item!r}")
            tables[int(seed)] = pd.read_parquet(path)
    else:
        logs = Path(tempfile.mkdtemp(prefix="seed_spread_"))
        for seed in args.seeds:
            tables[seed] = run_seed(seed, args, logs)

    long, summary = seed_spread(tables)
    args.out.mkdir(parents=True, exist_ok=True)
    long.to_parquet(args.out / "seed_spread_long.parquet", index=False)
    summary.to_parquet(args.out / "seed_spread_summary.parquet", index=False)

    attention = [m for m in summary.metric if "[" in m and "_chance" not in m]
    shown = summary[summary["metric"].isin(SHOWN + attention)]
    print(f"\n{len(tables)} seeds: {sorted(tables)}")
    for variant in ("baseline", "ica", "difference"):
        rows = shown[shown["variant"] == variant]
        print(f"\n{variant}")
        for r in rows.itertuples():
            wins = (
                f"  +ICA better in {int(r.ica_better)}/{r.seeds}" if variant == "difference" else ""
            )
            print(
                f"  {r.metric:55s} {r.mean:7.3f} ± {r.std:5.3f}  [{r.min:.3f}, {r.max:.3f}]{wins}"
            )
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    sys.exit(main())
