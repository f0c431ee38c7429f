"""Print the README's result tables from the eval.json files under results/ (standard library only).

    python results/summarize.py            # markdown tables, as pasted into README.md

Layout: results/<group>/<task>/<variant>/seed<k>/eval.json, where <group> names the budget or the
experiment (full = the published ~2M steps, short = 500k steps, ablation = BARPO candidates) and
<variant> is the algorithm (BARPO named by its schedule: barpo-ramp, barpo-kappa0.02) or the
ablation candidate. The notebook imports load_runs() to plot the same numbers.
"""

import csv
import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ATTACKS = ("random", "critic", "mad", "optimal")
TASK_ORDER = ("Hopper-v4", "Walker2d-v4", "HalfCheetah-v4", "Ant-v4")


def load_runs(root=ROOT):
    """One dict per run: group, task, variant, seed, steps, natural, worst, worst attack, the
    per-attack means, and the mean realized attack KL of the last 10% of training iterations."""
    runs = []
    for path in sorted(Path(root).glob("*/*/*/seed*/eval.json")):
        group, task, variant, seed = path.parent.relative_to(root).parts
        result = json.loads(path.read_text())
        means = {name: r["mean"] for name, r in result["returns"].items()}
        rows = list(csv.DictReader(open(path.parent / "metrics.csv")))
        last = rows[-max(1, len(rows) // 10):]
        runs.append({"group": group, "task": task, "variant": variant, "seed": result["seed"],
                     "steps": result["total_steps"], "eps": result["eps"], "natural": means["none"],
                     "worst": means[result["worst"]], "worst_attack": result["worst"],
                     "returns": means, "command": result["command"],
                     "final_kl": statistics.fmean(float(r["attack_kl"]) for r in last)})
    return runs


def spread(values):
    if len(values) == 1:   # one seed has no spread to show
        return f"{values[0]:.0f}"
    return f"{statistics.median(values):.0f} [{min(values):.0f}, {max(values):.0f}]"


def summary_table(runs, key="variant"):
    lines = [f"| {key} | seeds | natural: median [min, max] | worst case: median [min, max] "
             "| attack KL, last 10% | worst attacks |", "|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r[key] for r in runs):
        group = [r for r in runs if r[key] == name]
        worst_by = ", ".join(sorted(r["worst_attack"] for r in group))
        lines.append(f"| {name} | {len(group)} | {spread([r['natural'] for r in group])} "
                     f"| {spread([r['worst'] for r in group])} "
                     f"| {statistics.median(r['final_kl'] for r in group):.2g} | {worst_by} |")
    return "\n".join(lines)


def per_seed_table(runs):
    lines = ["| run | seed | natural | " + " | ".join(ATTACKS) + " | worst |",
             "|---|---|---|" + "---|" * len(ATTACKS) + "---|"]
    for r in runs:
        cells = " | ".join(f"{r['returns'][a]:.0f}" if a in r["returns"] else "-" for a in ATTACKS)
        lines.append(f"| {r['task']}/{r['variant']} | {r['seed']} | {r['natural']:.0f} | {cells} "
                     f"| {r['worst']:.0f} ({r['worst_attack']}) |")
    return "\n".join(lines)


def overview_table(runs, zero):
    """One row per task and method of short/: the README's results table."""
    lines = ["| task (eps) | method | seeds | natural: median [min, max] | worst case: median [min, max] |",
             "|---|---|---|---|---|"]
    for task in sorted({r["task"] for r in runs if r["group"] == "short"}, key=TASK_ORDER.index):
        chosen = task_runs(runs, "short", task)
        lines.append(f"| {task} ({chosen[0]['eps']}) | zero action | | {round(zero[task]['mean'])} | |")
        for variant in dict.fromkeys(r["variant"] for r in chosen):
            mine = [r for r in chosen if r["variant"] == variant]
            lines.append(f"| | {variant} | {len(mine)} | {spread([r['natural'] for r in mine])} "
                         f"| {spread([r['worst'] for r in mine])} |")
    return "\n".join(lines)


def task_runs(runs, group, task):
    """The rows of one table.
    full: the runs at the published budget, as they are.
    ablation: SPO, ARPO and the ramp of short/, seeds 0-2 (what the rule compared), first, as its
    reference, then the candidates.
    short: on Hopper-v4 the default BARPO (kappa 0.02) of seeds 0-2 lives in ablation/kappa0.02
    (those seeds chose it), seeds 3-4 in short/; they form one row."""
    order = {"spo": 0, "arpo": 1, "barpo-ramp": 2, "barpo-kappa0.02": 3}
    pick = lambda g, variants=None: sorted(
        (r for r in runs if (r["group"], r["task"]) == (g, task)
         and (variants is None or r["variant"] in variants)),
        key=lambda r: (order.get(r["variant"], 4), r["variant"], r["seed"]))
    if group == "ablation":
        reference = [r for r in pick("short", ("spo", "arpo", "barpo-ramp")) if r["seed"] <= 2]
        return [{**r, "variant": f"{r['variant']} (short/)"} for r in reference] + pick("ablation")
    if group == "full":
        return pick("full")
    chosen = pick("short") + [{**r, "variant": "barpo-kappa0.02"}
                              for r in pick("ablation", ("kappa0.02",))]
    return sorted(chosen, key=lambda r: (order[r["variant"]], r["seed"]))


if __name__ == "__main__":
    runs = load_runs()
    zero = json.loads((ROOT / "zero_action.json").read_text())
    print("### short: every task, median over seeds\n")
    print(overview_table(runs, zero))
    for group in ("full", "ablation", "short"):
        for task in dict.fromkeys(r["task"] for r in runs if r["group"] == group):
            chosen = task_runs(runs, group, task)
            steps = sorted({r["steps"] for r in chosen})
            print(f"\n### {group} / {task} (eps {chosen[0]['eps']}, {', '.join(f'{s:,}' for s in steps)} steps)\n")
            print(summary_table(chosen))
            print(f"\nThe all-zero action scores {zero[task]['mean']:.1f} here (zero_action.json).\n")
            print(per_seed_table(chosen))
