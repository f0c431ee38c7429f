"""The tables and figures of the shipped runs, made from the run folders alone.

    python results/summarize.py             # writes TABLES.md, overview.png, the README's table,
                                            # EARLIER.md and earlier.png; prints the README's table
    python results/summarize.py commands    # the command of every earlier-formulation run: the sweep
    python results/summarize.py actors      # the table of results/actors (one actor or 8 environments)
    python results/summarize.py kappa       # results/kappa's table and the value its rule chooses

Today's formulation (the paper's): TABLES.md and overview.png hold SPO, ARPO and BARPO beside the
paper's BAR-PPO and the published PPO, from the agents that results/evidence/README.md counts
(`evidence_runs`); an agent's worst case is the lowest mean return of any attack in any of its
complete records, and it counts once all six attacks have run.

The earlier formulation: EARLIER.md and earlier.png. Those agents were trained by barpo.py as of
commit c9caa60, whose BARPO was this project's earlier formulation (an adversary minimizing
kappa l + (1 - kappa) KL by PGD, not the paper's), with Hopper's settings on every task. Their
commands run with that file: `git show c9caa60:barpo.py > barpo_earlier.py`.

Layout: results/<budget>/<task>/<variant>/seed<k>/, budget `short` (500k steps) or `full` (the
published budget, 1,998,848 steps), variant `spo`, `arpo` or `barpo-<schedule>` (kappa0.02,
kappa0.1, kappa0.5, ramp, ramp-g0.3). Every folder holds checkpoint.pt, metrics.csv and eval.json,
the evaluation made at the end of training (random, critic, MAD and an SA-RL attacker trained for
200k steps). full/ folders also hold the six-attack re-evaluation,
eval-none+random+critic+mad+rs+optimal+paad-eps<eps>-50ep.json, whose learned attackers trained
for 1M steps or more (their curves beside it; "optimal" is the SA-RL attack's older name), and,
where it has been made, eval-none+rs+paad-eps<eps>-50ep.json with the stronger robust sarsa (the
lowest of six Q models) and PA-AD (cos+norm actor). Each attack's column is its newest record's;
the worst case is the lowest return any attack reached in any record of the agent: where a newer
rs or paad did less than the older one, the older counts (marked "before"), and so does the
end-of-training evaluation (marked "at the end of training"). The notebook imports load_runs() to
plot the same numbers.
"""

import csv
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
import barpo   # noqa: E402  (its TASK_EPS and default kappa)
EARLIER = ("full", "short")
KAPPA_RUNS = 12               # results/kappa: 2 tasks x 3 values x 2 seeds
TASKS = ("Hopper-v4", "Walker2d-v4", "HalfCheetah-v4", "Ant-v4")
METHODS = ("spo", "arpo", "barpo-kappa0.02")       # the three methods; barpo-kappa0.02 is the default
SUITE = ("random", "critic", "mad", "rs", "sarl", "paad")
RENAMED = {"optimal": "sarl"}   # as barpo.RENAMED: SA-RL's name in the older records
COLORS = {"spo": "#0072B2", "arpo": "#E69F00", "barpo-kappa0.02": "#009E73"}   # Okabe and Ito: colour-blind safe
MARKERS = {"spo": "o", "arpo": "s", "barpo-kappa0.02": "^"}
LABELS = {"spo": "SPO", "arpo": "ARPO", "barpo-kappa0.02": "earlier BARPO (kappa 0.02)"}


def read_record(path):
    record = json.loads(path.read_text())
    record["returns"] = {RENAMED.get(k, k): v for k, v in record["returns"].items()}
    return record


def newest_returns(folder):
    """The re-evaluations of a run (complete ones, oldest first): each attack's newest result,
    and the one it replaced (attack -> result) where an attack was measured again."""
    records = [read_record(p) for p in folder.glob("eval-*.json")]
    newest, replaced = {}, {}
    for record in sorted((r for r in records if not r.get("partial")), key=lambda r: r["made"]["date"]):
        for name, result in record["returns"].items():
            if name in newest and name != "none":
                replaced[name] = newest[name]
            newest[name] = result
    return newest, replaced


def load_runs(root=ROOT):
    """One dict per run: budget, task, variant, seed, steps, eps, natural, worst, worst_attack,
    returns (attack -> mean, each attack's newest), replaced (attack -> the mean a newer record
    replaced), older (the end-of-training evaluation: its attacks and worst case), seconds
    (attack -> seconds, re-evaluated runs), final_kl (mean realized attack KL of the last 10% of
    iterations) and folder."""
    runs = []
    for path in sorted(p for budget in EARLIER for p in Path(root).glob(f"{budget}/*/*/seed*/eval.json")):
        budget, task, variant, _ = path.parent.relative_to(root).parts
        older = read_record(path)
        newest, replaced = newest_returns(path.parent)
        six = set(SUITE) <= set(newest)
        results = newest if six else older["returns"]
        returns = {name: r["mean"] for name, r in results.items()}
        measured = {**returns, **{f"{a} before": r["mean"] for a, r in replaced.items()},
                    **({f"{a} at the end of training": r["mean"] for a, r in older["returns"].items()
                        if a != "none"}
                       if six else {})}
        worst = min((a for a in measured if a != "none"), key=measured.get)
        rows = list(csv.DictReader(open(path.parent / "metrics.csv")))
        last = rows[-max(1, len(rows) // 10):]
        runs.append({"budget": budget, "task": task, "variant": variant, "seed": older["seed"],
                     "steps": older["total_steps"], "eps": older["eps"], "natural": returns["none"],
                     "worst": measured[worst], "worst_attack": worst, "returns": returns,
                     "six_attacks": six, "replaced": {n: r["mean"] for n, r in replaced.items()},
                     "older": {"sarl_200k": older["returns"].get("sarl", {}).get("mean"),
                               "worst": older["returns"][RENAMED.get(older["worst"], older["worst"])]["mean"],
                               "worst_attack": RENAMED.get(older["worst"], older["worst"])},
                     "seconds": {n: r["seconds"] for n, r in results.items() if "seconds" in r},
                     "attacker_steps": {n: r["settings"]["attacker_steps"] for n, r in results.items()
                                        if "attacker_steps" in r.get("settings", {})},
                     "final_kl": statistics.fmean(float(r["attack_kl"]) for r in last),
                     "folder": path.parent.relative_to(root.parent)})
    order = lambda r: (r["budget"] != "full", TASKS.index(r["task"]), variant_order(r["variant"]), r["seed"])
    return sorted(runs, key=order)


def variant_order(variant):
    return (METHODS.index(variant), "") if variant in METHODS else (len(METHODS), variant)


def spread(values):
    if len(values) == 1:   # one seed has no spread to show
        return f"{values[0]:.0f}"
    return f"{statistics.median(values):.0f} [{min(values):.0f}, {max(values):.0f}]"


def groups(runs, *keys):
    out = {}
    for r in runs:
        out.setdefault(tuple(r[k] for k in keys), []).append(r)
    return out


def readme_table(runs):
    """The README's table: the three methods on the four tasks at the published budget."""
    lines = ["| task (eps) | " + " | ".join(LABELS[m] for m in METHODS) + " |", "|---|" + "---|" * len(METHODS)]
    for task in TASKS:
        mine = groups([r for r in runs if r["budget"] == "full" and r["task"] == task], "variant")
        if not mine:
            continue
        cells = []
        for method in METHODS:
            seeds = mine.get((method,), [])
            cells.append(f"{statistics.median(r['natural'] for r in seeds):.0f} / "
                         f"{statistics.median(r['worst'] for r in seeds):.0f} ({len(seeds)})"
                         if seeds else "-")
        lines.append(f"| {task} ({mine[next(iter(mine))][0]['eps']}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_table(runs, zero):
    lines = ["| variant | seeds | natural: median [min, max] | worst case: median [min, max] "
             "| attack KL, last 10% | worst attacks |", "|---|---|---|---|---|---|"]
    for (variant,), mine in groups(runs, "variant").items():
        lines.append(f"| {variant} | {len(mine)} | {spread([r['natural'] for r in mine])} "
                     f"| {spread([r['worst'] for r in mine])} "
                     f"| {statistics.median(r['final_kl'] for r in mine):.2g} "
                     f"| {', '.join(sorted(r['worst_attack'] for r in mine))} |")
    return "\n".join(lines) + f"\n\nThe all-zero action scores {zero:.1f} on these episodes (zero_action.json)."


def per_seed_table(runs):
    six = any(r["six_attacks"] for r in runs)
    attacks = SUITE if six else ("random", "critic", "mad", "sarl")
    redone = sorted({a for r in runs for a in r["replaced"]}, key=SUITE.index)
    older = [f"{a} before" for a in redone] + (["SA-RL 200k (older)", "older worst"] if six else [])
    lines = ["| " + " | ".join(["run", "seed", "natural", *attacks, "worst", *older]) + " |",
             "|---|---|---|" + "---|" * (len(attacks) + 1 + len(older))]
    for r in runs:
        cells = [f"{r['returns'][a]:.0f}" if a in r["returns"] else "-" for a in attacks]
        if six:
            cells += [f"{r['worst']:.0f} ({r['worst_attack']})"]
            cells += [f"{r['replaced'][a]:.0f}" if a in r["replaced"] else "-" for a in redone]
            cells += [f"{r['older']['sarl_200k']:.0f}",
                      f"{r['older']['worst']:.0f} ({r['older']['worst_attack']})"]
        else:
            cells.append(f"{r['worst']:.0f} ({r['worst_attack']})")
        lines.append(f"| {r['task']}/{r['variant']} | {r['seed']} | {r['natural']:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cost_table(runs):
    """Seconds per attack per agent, from the six-attack records."""
    timed = [r for r in runs if r["seconds"]]
    lines = ["| task | agents | " + " | ".join(("none",) + SUITE) + " | learned attacker steps |",
             "|---|---|" + "---|" * (len(SUITE) + 2)]
    for (task,), mine in groups(timed, "task").items():
        cells = [f"{statistics.median(r['seconds'][a] for r in mine):.0f}" for a in ("none",) + SUITE]
        steps = [s for r in mine for s in r["attacker_steps"].values()]
        lines.append(f"| {task} | {len(mine)} | " + " | ".join(cells)
                     + f" | {min(steps):,} to {max(steps):,} |")
    return "\n".join(lines)


def tables(runs, zero):
    out = ["# Every run of the earlier formulation\n", "These agents were trained by barpo.py of commit "
           "c9caa60, whose BARPO was this project's earlier formulation (an adversary minimizing "
           "kappa l + (1 - kappa) KL by PGD, not the paper's), every task with Hopper's settings. "
           "Made by `python results/summarize.py` from the run folders; "
           "medians over seeds, [min, max] in brackets. *Worst case*: the lowest mean return over "
           "the attacks in any record of the agent: the six-attack suite where a run has it (full/; "
           "each attack's column is its newest record, `rs before` / `paad before` the one it "
           "replaced, and the end-of-training evaluation's attacks count too), else the "
           "end-of-training evaluation (random, critic, MAD, SA-RL 200k).\n",
           "## The three methods at 1,998,848 steps: median natural / median worst case (seeds)\n",
           readme_table(runs)]
    timed = [r for r in runs if r["seconds"]]
    if timed:
        out += ["\n## What each attack costs: median seconds per agent (2-core CPU)\n", cost_table(timed)]
    for (budget, task), mine in groups(runs, "budget", "task").items():
        steps = sorted({r["steps"] for r in mine})
        out += [f"\n## {budget} / {task} (eps {mine[0]['eps']}, {', '.join(f'{s:,}' for s in steps)} steps)\n",
                summary_table(mine, zero[task]["mean"])]
        seeds = set.intersection(*({r["seed"] for r in v} for v in groups(mine, "variant").values()))
        if any(r["seed"] not in seeds for r in mine):   # compare the variants on the same seeds too
            out += [f"\nOn the seeds every variant has ({', '.join(map(str, sorted(seeds)))}):\n",
                    summary_table([r for r in mine if r["seed"] in seeds], zero[task]["mean"])]
        out += ["", per_seed_table(mine)]
    return "\n".join(out) + "\n"


def scatter_panel(ax, runs, title):
    """Natural against worst-case return: a marker per seed, a star per variant's median, and the
    diagonal where no attack costs anything. Up is robust, right is strong without attack."""
    spare = iter(["tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive"])
    for (variant,), seeds in groups(runs, "variant").items():
        color = COLORS.get(variant) or next(spare)
        ax.scatter([r["natural"] for r in seeds], [r["worst"] for r in seeds], color=color, alpha=0.55, s=28,
                   marker=MARKERS.get(variant, "o"))
        ax.scatter(statistics.median(r["natural"] for r in seeds), statistics.median(r["worst"] for r in seeds),
                   color=color, marker="*", s=260, edgecolor="black", label=LABELS.get(variant, variant))
    values = [v for r in runs for v in (r["natural"], r["worst"])]
    top, bottom = max(values) * 1.08, min(0.0, *values) - 0.03 * max(values)
    ax.plot([bottom, top], [bottom, top], ":", color="gray", lw=1)
    ax.set(title=title, xlabel="natural return", ylabel="worst-case return (lowest over the attacks)",
           xlim=(bottom, top), ylim=(bottom, top))


def figure(runs, path):
    """The README's figure: the three methods at the published budget, one panel per task."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    full = [r for r in runs if r["budget"] == "full" and r["variant"] in METHODS]
    tasks = [t for t in TASKS if any(r["task"] == t for r in full)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 4.0), constrained_layout=True)
    for ax, task in zip(axes, tasks):
        mine = [r for r in full if r["task"] == task]
        scatter_panel(ax, mine, f"{task}, eps {mine[0]['eps']} (earlier formulation)")
        if ax is not axes[0]:
            ax.set_ylabel("")
    axes[0].legend(loc="upper left", fontsize=8, title="star: median; dot: a seed", title_fontsize=8)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def commands(root=ROOT):
    """One line per run of the earlier formulation: the command that trains it into its folder
    with barpo_earlier.py (see above) and then evaluates it with that file's attack suite."""
    lines = []
    for folder in sorted(f for budget in EARLIER for f in Path(root).glob(f"{budget}/*/*/seed*")):
        budget, task, variant, seed = folder.relative_to(root).parts
        flags = {"spo": "--algo spo", "arpo": "--algo arpo"}.get(variant) or barpo_flags(variant)
        steps = " --total-steps 500000" if budget == "short" else ""
        lines.append(f"python barpo_earlier.py --env {task} {flags}{steps} --seed {seed[4:]} "
                     f"--out {folder.relative_to(root.parent)}")
    return lines


def barpo_flags(variant):
    """barpo-kappa0.1 -> --kappa 0.1; barpo-ramp -> --kappa-ramp 0.5; -g0.3 adds --spo-guidance 0.3."""
    name, _, guidance = variant.removeprefix("barpo-").partition("-g")
    flags = "--algo barpo " + ("--kappa-ramp 0.5" if name == "ramp" else f"--kappa {name.removeprefix('kappa')}")
    return flags + (f" --spo-guidance {guidance}" if guidance else "")


def actors_table(root=ROOT / "actors"):
    """results/actors: the natural return of SPO per task, number of environments and seed."""
    lines = ["| task | environments | seeds | natural return per seed | median | hours of training |",
             "|---|---|---|---|---|---|"]
    for task in TASKS:
        for folder in sorted((root / task).glob("envs*")):
            runs = sorted(p for p in folder.glob("seed*") if (p / "eval.json").exists())
            if not runs:
                continue
            natural = [read_record(p / "eval.json")["returns"]["none"]["mean"] for p in runs]
            hours = [float(list(csv.DictReader(open(p / "metrics.csv")))[-1]["wall_time_s"]) / 3600 for p in runs]
            lines.append(f"| {task} | {folder.name[4:]} | {', '.join(p.name[4:] for p in runs)} | "
                         f"{', '.join(f'{n:.0f}' for n in natural)} | {statistics.median(natural):.0f} | "
                         f"{', '.join(f'{h:.2f}' for h in hours)} |")
    return "\n".join(lines)


def finished_runs(root):
    """The finished runs of today's barpo.py under root/<task>/<variant>/seed<k>: natural return,
    worst case (the lowest return of any attack in eval.json) and whether all six attacks ran."""
    runs = []
    for path in sorted(Path(root).glob("*/*/seed*/eval.json")):
        record = read_record(path)
        if record.get("partial"):
            continue
        returns = {name: r["mean"] for name, r in record["returns"].items()}
        worst = min((a for a in returns if a != "none"), key=returns.get)
        task, variant, seed = path.parent.relative_to(root).parts
        runs.append({"task": task, "variant": variant, "seed": int(seed[4:]), "natural": returns["none"],
                     "worst": returns[worst], "worst_attack": worst, "six_attacks": set(SUITE) <= set(returns)})
    return runs


def kappa_choice(runs):
    """results/kappa/README.md's rule, applied: per task, among the values whose median natural
    return is at least 90% of the best, the highest median worst case, a tie (within 5%) going to
    the higher natural. Returns ({task: {kappa: (natural, worst, seeds)}}, {task: chosen kappa})."""
    medians, chosen = {}, {}
    for (task, variant), mine in groups(runs, "task", "variant").items():
        kappa = float(variant.removeprefix("barpo-kappa"))
        medians.setdefault(task, {})[kappa] = (statistics.median(r["natural"] for r in mine),
                                               statistics.median(r["worst"] for r in mine), len(mine))
    for task, by_kappa in medians.items():
        best_natural = max(n for n, _, _ in by_kappa.values())
        eligible = {k: v for k, v in by_kappa.items() if v[0] >= 0.9 * best_natural}
        best_worst = max(w for _, w, _ in eligible.values())
        tied = [k for k, (_, w, _) in eligible.items() if w >= best_worst - 0.05 * abs(best_worst)]
        chosen[task] = max(tied, key=lambda k: eligible[k][0])
    return medians, chosen


def kappa_for_every_task(medians, chosen):
    """One value for every task if the measured tasks chose the same; else each keeps its own,
    and the others take the value with the highest sum over those tasks of W / the task's best W."""
    if len(set(chosen.values())) == 1:
        return dict.fromkeys(TASKS, next(iter(chosen.values())))
    common = set.intersection(*(set(by_kappa) for by_kappa in medians.values()))
    score = {k: sum(medians[t][k][1] / max(w for _, w, _ in medians[t].values()) for t in medians)
             for k in common}
    rest = max(score, key=score.get)
    return {t: chosen.get(t, rest) for t in TASKS}


def kappa_table(root=ROOT / "kappa"):
    """results/kappa: the candidates' medians per task, and what the rule chooses from them."""
    runs = [r for r in finished_runs(root) if r["six_attacks"]]
    medians, chosen = kappa_choice(runs)
    done = len(runs) == KAPPA_RUNS
    lines = [f"| task | kappa | seeds | median natural | median worst case | {'chosen' if done else 'ahead so far'} |",
             "|---|---|---|---|---|---|"]
    for task in (t for t in TASKS if t in medians):
        for kappa, (natural, worst, seeds) in sorted(medians[task].items()):
            lines.append(f"| {task} | {kappa:g} | {seeds} | {natural:.0f} | {worst:.0f} | "
                         f"{'yes' if chosen[task] == kappa else ''} |")
    if done:
        every = kappa_for_every_task(medians, chosen)
        lines.append("\nBy the rule, every task: " + ", ".join(f"{t} {k:g}" for t, k in every.items()))
    else:
        lines.append(f"\n{len(runs)} of the {KAPPA_RUNS} runs have finished: nothing is chosen yet.")
    return "\n".join(lines)


# ---- today's formulation: the evidence beside the paper's table (results/evidence/README.md) ----

# The paper's main table, BAR-PPO (median of 17 agents), and the published PPO (the ATLA release's
# median agent under its strongest attack; gym v2 tasks): (natural, worst case).
PAPER_BARPPO = {"Hopper-v4": (3684, 1340), "Walker2d-v4": (4732, 2699), "HalfCheetah-v4": (4837, 3181),
                "Ant-v4": (5024, 2825)}
PUBLISHED_PPO = {"Hopper-v4": (3167.3, 636.4), "Walker2d-v4": (4471.7, 1085.5),
                 "HalfCheetah-v4": (7116.7, -660.5), "Ant-v4": (5687.0, -871.7)}


def agent_result(folder):
    """An agent's natural return and worst case from all its complete records (eval.json and
    every re-evaluation beside it): the worst case is the lowest mean return of any attack in any
    record. None unless the six attacks have all run."""
    records = [read_record(p) for p in sorted(folder.glob("eval*.json"))]
    records = [r for r in records if not r.get("partial")]
    measured = [(name, r["mean"]) for record in records for name, r in record["returns"].items()]
    if not set(SUITE) <= {name for name, _ in measured}:
        return None
    worst_attack, worst = min(((n, m) for n, m in measured if n != "none"), key=lambda t: t[1])
    natural = next(m for n, m in measured if n == "none")
    return {"natural": natural, "worst": worst, "worst_attack": worst_attack,
            "returns": {n: min(m for a, m in measured if a == n) for n, _ in measured}, "folder": folder}


def evidence_runs(root=ROOT):
    """Every finished agent of today's formulation that counts for the evidence: evidence/<task>/
    <variant>/seed<k>, and the runs made elsewhere with the same settings (SPO: actors/<task>/envs1;
    BARPO: kappa/<task>/barpo-kappa0; BARPO with guidance: kappa/<task>/barpo-kappa1). One dict
    per agent, its variant one of VARIANTS."""
    root = Path(root)
    places = [(p, p.parts[-3], p.parts[-2]) for p in sorted(root.glob("evidence/*/*/seed*"))]
    places += [(p, p.parts[-3], "spo") for p in sorted(root.glob("actors/*/envs1/seed*"))]
    places += [(p, p.parts[-3], KAPPA_RUN_VARIANTS[p.parts[-2]]) for p in sorted(root.glob("kappa/*/*/seed*"))
               if p.parts[-2] in KAPPA_RUN_VARIANTS]
    runs, seen = [], set()
    for folder, task, variant in places:
        key = (task, variant, int(folder.name[4:]))
        result = agent_result(folder)
        if result and key not in seen:
            seen.add(key)
            runs.append({"task": task, "variant": variant, "seed": key[2], **result})
    return runs


# The evidence's variants: the three methods at barpo.py's defaults (kappa 0, chosen by
# results/kappa), and the ablation's guided configurations at kappa 1 (CAR-PPO's Hopper weight).
GUIDED = "kappa1"
VARIANTS = {"spo": "SPO", "arpo": "ARPO", "barpo": "BARPO", f"arpo-{GUIDED}": "ARPO with guidance",
            f"barpo-{GUIDED}": "BARPO with guidance"}
KAPPA_RUN_VARIANTS = {f"barpo-kappa{barpo.Config.kappa:g}": "barpo", f"barpo-{GUIDED}": f"barpo-{GUIDED}"}


def cell(natural, worst, seeds=None):
    """natural / worst (robustness = worst / natural - 1), and the number of seeds."""
    text = f"{natural:.0f} / {worst:.0f} ({worst / natural - 1:+.2f})"
    return text + (f", {seeds}" if seeds is not None else "")


def medians(runs):
    return statistics.median(r["natural"] for r in runs), statistics.median(r["worst"] for r in runs)


def median_cell(runs):
    return cell(*medians(runs), len(runs)) if runs else "-"


def evidence_table(runs):
    """The README's table: medians over seeds of SPO, ARPO and BARPO, the paper's BAR-PPO and
    the published PPO beside them."""
    lines = [f"| task (eps) | SPO | ARPO | BARPO (kappa {barpo.Config.kappa:g}) | paper's BAR-PPO | published PPO |",
             "|---|---|---|---|---|---|"]
    for task in TASKS:
        mine = groups([r for r in runs if r["task"] == task], "variant")
        cells = [median_cell(mine.get((v,), [])) for v in ("spo", "arpo", "barpo")]
        lines.append(f"| {task} ({barpo.TASK_EPS[task.split('-')[0]]}) | " + " | ".join(cells)
                     + f" | {cell(*PAPER_BARPPO[task], 17)} | {cell(*PUBLISHED_PPO[task])} |")
    return "\n".join(lines)


def ablation_table(runs):
    """The paper's four configurations: ARPO, ARPO with guidance, BARPO without guidance (our
    BARPO), BARPO with guidance (the paper's BARPO)."""
    variants = ("arpo", f"arpo-{GUIDED}", "barpo", f"barpo-{GUIDED}")
    lines = ["| task | ARPO | ARPO with guidance | BARPO without guidance (our BARPO) | BARPO with guidance "
             "(the paper's BARPO) |", "|---|---|---|---|---|"]
    for task in TASKS:
        mine = groups([r for r in runs if r["task"] == task], "variant")
        if (variants[1],) in mine or (variants[3],) in mine:
            lines.append(f"| {task} | " + " | ".join(median_cell(mine.get((v,), [])) for v in variants) + " |")
    return "\n".join(lines)


def seed_by_seed(runs):
    """BARPO against ARPO on every seed both have: the paper's "consistently outperforms"."""
    lines = ["| task | seed | natural: BARPO / ARPO | worst case: BARPO / ARPO | BARPO above in both |",
             "|---|---|---|---|---|"]
    for task in TASKS:
        by = {(r["variant"], r["seed"]): r for r in runs if r["task"] == task}
        for seed in sorted({s for v, s in by if v == "arpo" and ("barpo", s) in by}):
            b, a = by[("barpo", seed)], by[("arpo", seed)]
            both = b["natural"] > a["natural"] and b["worst"] > a["worst"]
            lines.append(f"| {task} | {seed} | {b['natural']:.0f} / {a['natural']:.0f} | "
                         f"{b['worst']:.0f} / {a['worst']:.0f} | {'yes' if both else 'no'} |")
    return "\n".join(lines)


# The paper's ablation, as relative changes (natural, worst case): BARPO without guidance against
# ARPO, and BARPO against ARPO with guidance (None where the paper gives no number).
PAPER_BARE_VS_ARPO = {"Hopper-v4": (0.75, 0.04), "Walker2d-v4": (1.04, 1.73), "HalfCheetah-v4": (1.56, 2.09),
                      "Ant-v4": (1.13, 0.61)}
PAPER_BARPO_VS_GUIDED_ARPO = {"Hopper-v4": (3684 / 3699 - 1, 0.19), "HalfCheetah-v4": (4837 / 4997 - 1, 1.93),
                              "Ant-v4": (5024 / 5390 - 1, 1.38)}


def change(ours, theirs):
    """A relative change in whole percent, or to a tenth where it rounds to 0 (-0.2%, not -0%)."""
    if theirs <= 0:
        return "n/a (its base is not positive)"
    relative = ours / theirs - 1
    return f"{relative:+.1%}" if abs(relative) < 0.005 else f"{relative:+.0%}"


def against_barppo(who, ours, task):
    """Our medians (natural, worst) against the paper's BAR-PPO, and the issue's goal for them."""
    (n, w), (pn, pw) = ours, PAPER_BARPPO[task]
    near = "yes" if abs(n / pn - 1) <= 0.1 else "no, above it" if n > pn else "no, below it"
    return (f"{who} against the paper's BAR-PPO ({pn} / {pw}): natural {change(n, pn)}, worst case "
            f"{change(w, pw)} (the goal's natural within 10%: {near}; worst case at least the paper's: "
            f"{'yes' if w >= pw else 'no'})")


def verdict(runs):
    """The verdict's lines, made from the numbers: per task, BARPO against ARPO seed by seed and in
    the medians; BARPO against the paper's BAR-PPO; the ablation's two claims beside the paper's;
    our SPO beside the published PPO."""
    lines = []
    for task in TASKS:
        by = groups([r for r in runs if r["task"] == task], "variant")
        barpo_runs, arpo_runs = by.get(("barpo",), []), by.get(("arpo",), [])
        said = []
        if barpo_runs:
            bn, bw = medians(barpo_runs)
        if barpo_runs and arpo_runs:
            seeds = {r["seed"]: r for r in arpo_runs}
            both = [r["seed"] for r in barpo_runs if r["seed"] in seeds
                    and r["natural"] > seeds[r["seed"]]["natural"] and r["worst"] > seeds[r["seed"]]["worst"]]
            shared = [r["seed"] for r in barpo_runs if r["seed"] in seeds]
            (an, aw), paper = medians(arpo_runs), PAPER_BARE_VS_ARPO[task]
            said.append(f"BARPO above ARPO in natural and worst case on {len(both)} of {len(shared)} "
                        f"seed{'s' * (len(shared) > 1)}, so the paper's \"consistently outperforms\" "
                        f"{'holds' if both and len(both) == len(shared) else 'does not hold'} on "
                        f"{'this seed' if len(shared) == 1 else f'these {len(shared)} seeds'}; medians "
                        f"{bn:.0f} / {bw:.0f} against {an:.0f} / {aw:.0f}: natural {change(bn, an)}, worst "
                        f"case {change(bw, aw)} (the paper's BARPO without guidance against ARPO: "
                        f"{paper[0]:+.0%}, {paper[1]:+.0%})")
        if barpo_runs:
            said.append(against_barppo("BARPO's medians", (bn, bw), task))
        guided_barpo, guided_arpo = by.get((f"barpo-{GUIDED}",), []), by.get((f"arpo-{GUIDED}",), [])
        if guided_barpo and guided_arpo:
            (bn, bw), (gn, gw) = medians(guided_barpo), medians(guided_arpo)
            paper = PAPER_BARPO_VS_GUIDED_ARPO.get(task)
            said.append(f"BARPO with guidance against ARPO with guidance (medians; seeds: {len(guided_barpo)} "
                        f"and {len(guided_arpo)}): natural {change(bn, gn)}, worst case {change(bw, gw)}"
                        + (f" (the paper: {paper[0]:+.1%}, {paper[1]:+.0%})" if paper else ""))
            # the paper's BAR-PPO is guided: this is the like-for-like comparison
            said.append(against_barppo("BARPO with guidance", (bn, bw), task))
        if by.get(("spo",)):
            natural, published = medians(by[("spo",)])[0], PUBLISHED_PPO[task][0]
            said.append(f"our SPO's median natural return {natural:.0f} against the published PPO's "
                        f"{published:.0f} ({change(natural, published)})")
        if said:
            lines.append(f"- {task}: " + "; ".join(said) + ".")
    return "\n".join(lines) or "- No task has agents of both BARPO and ARPO yet: no verdict."


def agents_table(runs):
    lines = ["| task | variant | seed | natural | " + " | ".join(SUITE) + " | worst (attack) | folder |",
             "|---|---|---|---|" + "---|" * (len(SUITE) + 2)]
    order = lambda r: (TASKS.index(r["task"]), r["variant"], r["seed"])
    for r in sorted(runs, key=order):
        lines.append(f"| {r['task']} | {r['variant']} | {r['seed']} | {r['natural']:.0f} | "
                     + " | ".join(f"{r['returns'][a]:.0f}" for a in SUITE)
                     + f" | {r['worst']:.0f} ({r['worst_attack']}) | {r['folder'].relative_to(ROOT.parent)} |")
    return "\n".join(lines)


# Colour-blind-safe colours (Okabe and Ito) and a marker per method, the same in every figure.
STYLE = {"SPO": ("#0072B2", "o"), "ARPO": ("#E69F00", "s"), "BARPO": ("#009E73", "^"),
         "BARPO with guidance": ("#CC79A7", "v"), "ARPO with guidance": ("#D55E00", "D")}


def evidence_panel(ax, runs, task):
    """One task's natural against worst case: a small marker per agent, a large one per variant's
    median, the paper's BAR-PPO as a white star, and the dotted diagonal where no attack costs
    anything. Up is robust, right is strong without attack."""
    by_variant = groups([r for r in runs if r["task"] == task], "variant")
    for (variant,), seeds in sorted(by_variant.items(), key=lambda item: list(VARIANTS).index(item[0][0])):
        label = VARIANTS[variant]
        color, marker = STYLE[label]
        ax.scatter([r["natural"] for r in seeds], [r["worst"] for r in seeds], color=color,
                   marker=marker, alpha=0.5, s=30)
        ax.scatter(statistics.median(r["natural"] for r in seeds), statistics.median(r["worst"] for r in seeds),
                   color=color, marker=marker, s=170, edgecolor="black", label=f"{label}, {len(seeds)}")
    natural, worst = PAPER_BARPPO[task]
    ax.scatter(natural, worst, marker="*", s=260, color="white", edgecolor="black", label="paper's BAR-PPO")
    values = [v for r in runs if r["task"] == task for v in (r["natural"], r["worst"])] + [natural, worst]
    top, bottom = max(values) * 1.08, min(0.0, *values) - 0.03 * max(values)
    ax.plot([bottom, top], [bottom, top], ":", color="gray", lw=1)
    ax.set(title=task, xlabel="natural return", ylabel="worst case (lowest over six attacks)",
           xlim=(bottom, top), ylim=(bottom, top))


def evidence_figure(runs, path):
    """The README's figure: `evidence_panel` for each task with runs, two to a row."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tasks = [t for t in TASKS if any(r["task"] == t for r in runs)]
    columns = min(2, len(tasks))
    rows = (len(tasks) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 4.4 * rows), constrained_layout=True,
                             squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        evidence_panel(ax, runs, task)
        ax.legend(loc="upper left", fontsize=9, title="median, seeds", title_fontsize=9)
    for ax in axes.flat[len(tasks):]:
        ax.axis("off")
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def evidence_tables(runs):
    return "\n".join([
        "# SPO, ARPO and BARPO: the paper's formulation at the published settings\n",
        "Made by `python results/summarize.py` from the run folders (results/evidence/README.md "
        "says which count). Cells: median natural / median worst case (robustness = worst / "
        "natural - 1), seeds. The worst case of an agent is the lowest mean return of any attack "
        "in any of its records (50 episodes, deterministic actions). The paper's BAR-PPO: its "
        "main table, the median of 17 agents under the same six attacks; the published PPO: the "
        "ATLA release's median agent under its strongest attack (gym v2 tasks).\n",
        evidence_table(runs), "\n## What the numbers say\n", verdict(runs),
        "\n## The paper's ablation\n", ablation_table(runs),
        "\n## BARPO against ARPO, seed by seed\n", seed_by_seed(runs),
        "\n## Every agent, every attack\n", agents_table(runs)]) + "\n"


README_TABLE = ("<!-- results/summarize.py writes the table and verdict below -->",
                "<!-- end of what results/summarize.py writes -->")


def with_readme_table(readme, runs):
    """The README's text with its table and verdict (between the README_TABLE marks) made anew."""
    start, end = readme.index(README_TABLE[0]) + len(README_TABLE[0]), readme.index(README_TABLE[1])
    return readme[:start] + "\n" + evidence_table(runs) + "\n\n" + verdict(runs) + "\n" + readme[end:]


def write_all(root=ROOT):
    """TABLES.md, overview.png and the README's table (today's formulation); EARLIER.md and
    earlier.png (the earlier formulation's agents)."""
    runs = evidence_runs(root)
    (root / "TABLES.md").write_text(evidence_tables(runs))
    evidence_figure(runs, root / "overview.png")
    readme = root.parent / "README.md"
    readme.write_text(with_readme_table(readme.read_text(), runs))
    earlier, zero = load_runs(root), json.loads((root / "zero_action.json").read_text())
    (root / "EARLIER.md").write_text(tables(earlier, zero))
    figure(earlier, root / "earlier.png")
    print(evidence_table(runs))


if __name__ == "__main__":
    if sys.argv[1:] == ["commands"]:
        print("\n".join(commands()))
    elif sys.argv[1:] == ["actors"]:
        print(actors_table())
    elif sys.argv[1:] == ["kappa"]:
        print(kappa_table())
    else:
        write_all()
