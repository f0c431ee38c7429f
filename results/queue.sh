#!/usr/bin/env bash
# Run the barpo.py commands of a list, JOBS at a time (default 2, one per core), each in its own
# process. A training command whose --out folder holds a checkpoint is resumed (python barpo.py
# --resume), so the same line continues a list that a stopped session cut short; a finished run is
# left as it is. An --eval command runs as it is: it completes a record that was cut short. Logs
# go to runs/logs/, one per run; runs/logs/done.txt gets a line as each run ends.
#
#     bash results/queue.sh results/kappa/commands.txt
#
# Run it from a checkout whose barpo.py nobody edits while the list runs (a git worktree), and
# copy finished runs into the checkout that commits them. Where the machine will not outlive the
# list, stop it with kill -TERM -- -<its process group> (each training run checkpoints the iteration
# in progress) and commit the unfinished folders too: a checkout of that commit resumes them.
set -u
cd "$(dirname "$0")/.."
[ -f .venv/bin/activate ] && . .venv/bin/activate
mkdir -p runs/logs
export PYTHONWARNINGS=ignore
xargs -P "${2:-2}" -d '\n' -I{} sh -c '
  cmd="{}"; out=${cmd##*--out }; log=runs/logs/$(echo "$out" | tr / _).log
  if [ -e "$out/checkpoint.pt" ] && [ "${cmd#*--eval }" = "$cmd" ]; then python barpo.py --resume "$out" >>"$log" 2>&1; else $cmd >>"$log" 2>&1; fi
  echo "$(date +%H:%M) exit $? $out" >> runs/logs/done.txt' < "$1"
