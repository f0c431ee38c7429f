"""Training speed of barpo.py, measured in one sitting: the README's Speed tables.

    python results/speed.py                                  # the CPU table (about 4 minutes)
    python results/speed.py --devices cuda cpu               # CUDA and CPU side by side
    python results/speed.py --cleanrl "PYTHON PATH/ppo_continuous_action.py"  # CleanRL's PPO too

Raw stepping is the vector env alone with random actions. Each training row is one
`python barpo.py ... --total-steps STEPS --attacks none --episodes 1` run; its speed is the median
steps/s of metrics.csv over iterations 2 and later (the first one also compiles). Runs of one row
on different devices run at the same time, each in its own process. Peak memory is the largest
resident set of any run so far (getrusage of the children).
"""

import argparse
import csv
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def raw_stepping(env_id, num_envs, vectorization, steps=20480):
    code = (f"import gymnasium as gym, time, warnings; warnings.simplefilter('ignore');"
            f"e = gym.make_vec({env_id!r}, {num_envs}, {vectorization!r}, vector_kwargs="
            f"{{'autoreset_mode': gym.vector.AutoresetMode.SAME_STEP}}); e.reset(seed=0);"
            f"[e.step(e.action_space.sample()) for _ in range(50)]; t = time.perf_counter();"
            f"[e.step(e.action_space.sample()) for _ in range({steps // num_envs})];"
            f"print({steps} / (time.perf_counter() - t)); e.close()")
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout)


def median_sps(folder):
    rows = list(csv.DictReader(open(folder / "metrics.csv")))
    return statistics.median(float(r["sps"]) for r in rows[1:])


def run_side_by_side(commands):
    """Start every command at once, wait for all; returns their exit codes and the peak RSS (MB)."""
    procs = [subprocess.Popen(c, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for c in commands]
    outputs = [p.communicate() for p in procs]
    for p, (out, err) in zip(procs, outputs):
        if p.returncode:
            print(f"failed ({p.returncode}): {shlex.join(p.args)}\n{err[-2000:]}", file=sys.stderr)
        for line in out.splitlines():
            if "torch.compile is unavailable" in line:  # it fell back to eager: say so
                print(f"{shlex.join(p.args[-8:])}: {line}", file=sys.stderr)
    return [p.returncode for p in procs], resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="Hopper-v4")
    p.add_argument("--steps", type=int, default=40960, help="training steps per run (default %(default)s)")
    p.add_argument("--algos", nargs="+", default=["spo", "arpo", "barpo"])
    p.add_argument("--devices", nargs="+", default=["cpu"], help="run side by side (default cpu)")
    p.add_argument("--compile", nargs="+", default=["on", "off"], help="--compile values to measure")
    p.add_argument("--extra", default="", help="more barpo.py flags for every run, e.g. '--num-envs 16'")
    p.add_argument("--cleanrl", default=None, metavar="COMMAND",
                   help="how to run CleanRL's ppo_continuous_action.py (a Python with tyro and "
                        "tensorboard, then the file), run with its defaults on the same steps")
    args = p.parse_args()
    extra = shlex.split(args.extra)
    num_envs = int(extra[extra.index("--num-envs") + 1]) if "--num-envs" in extra else 8
    vector = extra[extra.index("--vector-env") + 1] if "--vector-env" in extra else "sync"
    started = time.time()
    raw = raw_stepping(args.env, num_envs, vector)
    print(f"| what | compile | " + " | ".join(f"{d} steps/s" for d in args.devices) + " | ratio | peak RSS so far |")
    print("|---|---|" + "---|" * len(args.devices) + "---|---|")
    print(f"| raw stepping, {num_envs} {vector} envs, random actions | | "
          + " | ".join(f"{raw:,.0f}" for _ in args.devices) + " | 1 | |")
    spo = {}
    with tempfile.TemporaryDirectory() as tmp:
        for compile_mode in args.compile:
            for algo in args.algos:
                folders = [Path(tmp) / f"{algo}-{compile_mode}-{d}" for d in args.devices]
                commands = [[sys.executable, "-W", "ignore", "barpo.py", "--env", args.env, "--algo", algo,
                             "--total-steps", str(args.steps), "--attacks", "none", "--episodes", "1",
                             "--compile", compile_mode, "--device", d, "--out", str(f), *extra]
                            for d, f in zip(args.devices, folders)]
                codes, peak = run_side_by_side(commands)
                sps = [median_sps(f) if code == 0 else float("nan") for f, code in zip(folders, codes)]
                if algo == "spo":
                    spo[compile_mode] = sps[0]
                ratio = (f"{sps[0] / raw:.2f} of raw" if algo == "spo" else
                         f"{sps[0] / spo[compile_mode]:.2f} of SPO" if compile_mode in spo else "")
                print(f"| {algo} | {compile_mode} | " + " | ".join(f"{s:,.0f}" for s in sps)
                      + f" | {ratio} | {peak:.0f} MB |", flush=True)
    if args.cleanrl:
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run([*shlex.split(args.cleanrl), "--env-id", args.env,
                                  "--total-timesteps", str(args.steps)],
                                 cwd=tmp, capture_output=True, text=True, check=True).stdout
        cleanrl = float([line for line in out.splitlines() if line.startswith("SPS:")][-1].split()[1])
        print(f"| CleanRL ppo_continuous_action, its defaults (1 env) | | {cleanrl:,.0f} | "
              f"SPO (compile {args.compile[0]}) is {spo.get(args.compile[0], float('nan')) / cleanrl:.1f}x | |")
    print(f"\n{args.steps:,} training steps per run, {args.env}, `{' '.join(sys.argv[1:])}`, "
          f"{time.time() - started:.0f} s in all")


if __name__ == "__main__":
    main()
