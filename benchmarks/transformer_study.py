"""ICA on Show-Attend-Tell and on the Transformer, over seeds; which layer and head to supervise.

Trains and evaluates, for every seed, Show-Attend-Tell and the Transformer decoder with and
without ICA, and the Transformer with ICA on other layers or with other head reductions, on the
project's data (run ``kedro run`` first: the script reads the upstream tables through the
catalog). It reuses the control-experiment grid (:mod:`ica_captioning.experiments.grid`) with
the variants of ``transformer_study.yml`` next to this script and, by default, the **full**
``train`` budget (the grid's reduced budget is not applied). For Transformer models every
single cross-attention head, each layer's head mean and the mean over all heads are scored on
the reference captions (``@L<l>.H<h>``, ``@L<l>.mean``, ``@all.mean``), and the best single head
is chosen on the ``val`` split and scored on the evaluated one (``@best_head``).

    python benchmarks/transformer_study.py                       # 8 variants x 3 seeds
    python benchmarks/transformer_study.py --seeds 0 --variants baseline transformer_ica
    python benchmarks/transformer_study.py --summary-only        # print the saved results

Each variant's rows are written as soon as it finishes (``--out``, default
``data/08_reporting/transformer_study/``); a rerun skips the (variant, seed) pairs already
there. Prints mean [95 % bootstrap CI] per variant and the per-head table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from ica_captioning.experiments import grid
from ica_captioning.experiments.report import summarise_results
from ica_captioning.params.base import deep_merge
from ica_captioning.params.experiments import ExperimentsParams

PROJECT = Path(__file__).resolve().parents[1]
STUDY = Path(__file__).with_name("transformer_study.yml")
AC = "attention_correctness [reference/pseudo_labels]"
IOU = "attention_iou_topk [reference/pseudo_labels]"
SHOWN = ["BLEU-4", "CIDEr", "CHAIR-i", AC, IOU, f"{AC} @all.mean", f"{AC} @best_head"]


def load_inputs(env: str | None) -> tuple[dict, dict]:
    """The catalog tables and parameters the grid reads."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(PROJECT)
    with KedroSession.create(project_path=PROJECT, env=env) as session:
        context = session.load_context()
        catalog = context.catalog
        names = [
            "images",
            "captions",
            "encoded_captions",
            "detections",
            "pseudo_labels",
            "vocabulary",
            "pretrained_encoder",
        ]
        tables = {name: catalog.load(name) for name in names}
        return tables, dict(context.params)


def study_params(base: dict, args: argparse.Namespace) -> ExperimentsParams:
    """``params:experiments`` with the study's variants, seeds and budget."""
    study = yaml.safe_load(STUDY.read_text())
    variants = study["variants"]
    if args.variants:
        unknown = sorted(set(args.variants) - set(variants))
        if unknown:
            raise SystemExit(f"unknown variants {unknown}; {STUDY.name} has {list(variants)}")
        variants = {k: v for k, v in variants.items() if k in args.variants or k == "baseline"}
    merged = {
        **base,
        "variants": variants,
        "seeds": args.seeds,
        "train_overrides": deep_merge(study.get("train_overrides") or {}, {"progress_bar": False}),
        "evaluation_overrides": study.get("evaluation_overrides") or {},
        "num_threads": args.threads,
        "tracking": {**base["tracking"], "enabled": False},
    }
    return ExperimentsParams.parse(merged, "experiments")


def run(args: argparse.Namespace) -> None:
    tables, params = load_inputs(args.env)
    exp = study_params(params["experiments"], args)
    grid.plan_grid(exp, params["train"])  # every override checked before the first training
    evaluation, data = grid.grid_inputs(tables, params, exp)
    args.out.mkdir(parents=True, exist_ok=True)
    for spec in grid.plan_grid(exp, params["train"]):
        path = args.out / f"{spec.variant}-seed{spec.seed}.parquet"
        if path.exists():
            print(f"{spec.name}: done before ({path.name})", flush=True)
            continue
        start = time.perf_counter()
        outcome = grid.run_one(spec, data, evaluation)
        outcome.results.to_parquet(path, index=False)
        outcome.history.to_parquet(path.with_suffix(".history.parquet"), index=False)
        print(f"{spec.name}: {time.perf_counter() - start:.0f} s", flush=True)


def report(args: argparse.Namespace) -> None:
    files = sorted(p for p in args.out.glob("*-seed*.parquet") if ".history" not in p.name)
    if not files:
        raise SystemExit(f"no results under {args.out}")
    results = pd.concat([pd.read_parquet(p) for p in files], ignore_index=True)
    # Paired statistics need every variant on the baseline's seeds: leave incomplete ones out.
    seeds_of = results.groupby("variant")["seed"].agg(lambda s: frozenset(s.tolist()))
    full = seeds_of.get("baseline", frozenset())
    partial = sorted(v for v, s in seeds_of.items() if s != full)
    if partial:
        print(f"left out (not on the baseline's seeds {sorted(full)} yet): {partial}")
        results = results[~results["variant"].isin(partial)]
    study = yaml.safe_load(STUDY.read_text())
    order = [v for v in study["variants"] if v in set(results["variant"])]
    base = {
        **yaml.safe_load((PROJECT / "conf/base/parameters_experiments.yml").read_text())[
            "experiments"
        ],
        "variants": {v: study["variants"][v] for v in order},
        "seeds": sorted(results["seed"].unique().tolist()),
    }
    exp = ExperimentsParams.parse(base, "experiments")
    summary = summarise_results(results, exp)
    summary.to_parquet(args.out / "summary.parquet", index=False)
    results.to_parquet(args.out / "results.parquet", index=False)
    seeds = sorted(results["seed"].unique().tolist())
    print(f"{len(order)} variants, seeds {seeds}; mean [95% bootstrap CI over seeds]")
    for metric in SHOWN:
        rows = summary[summary["metric"] == metric].set_index("variant")
        if rows.empty:
            continue
        print(f"\n{metric}")
        for v in order:
            if v in rows.index:
                r = rows.loc[v]
                print(f"  {v:30s} {r['mean']:7.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]")
    # Paired by seed against each architecture's own baseline.
    pairs = {v: "baseline" for v in order if v == "ica"} | {
        v: "transformer_baseline"
        for v in order
        if v.startswith("transformer_") and v != "transformer_baseline"
    }
    if "transformer_baseline" not in order:
        pairs = {v: b for v, b in pairs.items() if b != "transformer_baseline"}
    if pairs:
        table = results.pivot_table(index=["metric", "seed"], columns="variant", values="value")
        print("\npaired by seed vs its architecture's baseline: mean delta (seeds better)")
        for metric in SHOWN[:5]:
            if metric not in table.index.get_level_values(0):
                continue
            rows = table.loc[metric]
            lower = metric.startswith("CHAIR")
            cells = []
            for v, b in pairs.items():
                d = rows[v] - rows[b]
                wins = int(((d < 0) if lower else (d > 0)).sum())
                cells.append(f"{v} {d.mean():+.3f} ({wins}/{len(d)})")
            print(f"  {metric}: " + ", ".join(cells))

    heads = results[results["metric"].str.startswith(f"{AC} @")]
    if not heads.empty:
        # Head indices are not comparable across seeds (each seed initialises its own heads),
        # so every run gets its own line: each layer's heads sorted by AC, then the means.
        print(f"\n{AC} of every head, per run (each layer's heads sorted high to low)")
        for (variant, seed), run in heads.groupby(["variant", "seed"], sort=False):
            values = dict(zip(run["metric"].str.split("@").str[1], run["value"]))
            layers = sorted({k.split(".")[0] for k in values if k.startswith("L")})
            parts = []
            for layer in layers:
                singles = sorted(
                    (v for k, v in values.items() if k.startswith(f"{layer}.H")), reverse=True
                )
                parts.append(
                    f"{layer}: "
                    + " ".join(f"{v:.2f}" for v in singles)
                    + f" | mean {values[f'{layer}.mean']:.3f}"
                )
            best = values.get("best_head", float("nan"))
            print(
                f"  {variant:28s} seed {seed}: "
                + "; ".join(parts)
                + f"; all.mean {values['all.mean']:.3f}; best head (val) {best:.3f}"
            )
        index = results[results["metric"] == "best_head_index"]
        if not index.empty:
            print("\nbest head (chosen on val) per variant and seed, index layer*H + head:")
            print(index.pivot_table(index="variant", columns="seed", values="value").to_string())
    print(f"\nwritten: {args.out}/results.parquet, summary.parquet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=None, help="subset (baseline is kept)")
    parser.add_argument("--env", default=None, help="kedro environment")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--summary-only", action="store_true", help="only print saved results")
    parser.add_argument("--out", type=Path, default=PROJECT / "data/08_reporting/transformer_study")
    args = parser.parse_args()
    if not args.summary_only:
        run(args)
    report(args)


if __name__ == "__main__":
    sys.exit(main())
