#!/usr/bin/env bash
# One speed sitting: the background runs paused, then new and before side by side, alternately.
pids=$(pgrep -f "barpo.py --" | tr '\n' ' ')
echo "pausing: $pids"; kill -STOP $pids
trap 'kill -CONT $pids' EXIT
cd /work/main && . .venv/bin/activate
date; lscpu | grep "Model name"
echo "== after, round 1 (this commit), 8 envs"; python results/speed.py --compile on off
echo "== before, round 1 (c9caa60), 8 envs"; (cd /work/before && python results/speed.py --compile on off)
echo "== after, round 2, 8 envs"; python results/speed.py --compile on
echo "== before, round 2"; (cd /work/before && python results/speed.py --compile on)
echo "== after, 1 env"; python results/speed.py --compile on off --extra "--num-envs 1"
date
