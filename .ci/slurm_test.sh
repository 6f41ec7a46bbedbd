#!/usr/bin/env bash
# Single-node SLURM test: run the Snakemake workflow through snakemake-executor-plugin-slurm on a
# throwaway one-node cluster on this machine, and check it produces the same tables as a local run.
#
#   sudo bash .ci/slurm_test.sh            # as root (CI: CI=true, no stdin); ~4-8 min on 2 busy cores
#   SLURM_TEST_STAGE=cluster bash .ci/slurm_test.sh    # only bring the cluster up and run srun/sbatch
#
# Steps: install Debian's slurmctld, slurmd, slurm-client and munge if missing (apt-get); write a
# slurm.conf for this machine's cores and memory (from `slurmd -C`) into a temporary folder; start
# munged (with a freshly generated key and its own socket), slurmctld and slurmd on localhost (no
# systemd, no cgroups: SlurmUser=root, proctrack/linuxproc, task/none, select/cons_tres); wait for the
# node to be idle; `srun hostname` and an `sbatch --wait` job; then
#   snakemake --executor slurm --workflow-profile profiles/slurm --configfile config/ci.yaml
# with CPU-only resources overridden on the command line (partition, threads, memory; no account, no
# GPU), and compare the tables with a local run of the same config (the set of files, the run list;
# the numbers differ since budgets are wall-clock). Every daemon it started is stopped and every
# temporary file removed on exit, also on failure or interruption. Nothing outside its temporary
# folder is configured: the daemons use their own ports, socket, key, state and spool folders, and
# no system service is started or touched, so it is safe to run repeatedly.
#
# Environment: SLURM_TEST_STAGE=cluster|all (default all); SLURM_TEST_CONFIG (default config/ci.yaml);
# SLURM_TEST_LOCAL_DIR: a finished local run of the same config to compare with (default: run one);
# SLURM_TEST_KEEP=1 keeps the temporary folder (logs) for inspection; SLURM_TEST_REQUIRED=1 fails
# instead of skipping when not root / no apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
STAGE=${SLURM_TEST_STAGE:-all}
CONFIG=${SLURM_TEST_CONFIG:-config/ci.yaml}
SNAKEMAKE=${SNAKEMAKE:-$REPO/.venv/bin/snakemake}
start=$(date +%s)
say() { echo "[slurm-test $(( $(date +%s) - start ))s] $*"; }
skip() {
  if [ "${SLURM_TEST_REQUIRED:-0}" = 1 ]; then echo "slurm-test: $*" >&2; exit 1; fi
  echo "slurm-test: SKIPPED: $*"; exit 0
}

[ "$(id -u)" = 0 ] || skip "needs root (installs packages, runs slurmd as root)"
[ "$(uname -s)" = Linux ] || skip "needs Linux"
[ -x "$SNAKEMAKE" ] || { echo "slurm-test: $SNAKEMAKE not found (pip install -e .[workflow])" >&2; exit 1; }

# -- 1. packages ---------------------------------------------------------------------------------------
need=()
for cmd in slurmctld slurmd sinfo srun sbatch squeue scontrol munged mungekey; do
  command -v "$cmd" >/dev/null || need+=("$cmd")
done
if [ ${#need[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || skip "missing ${need[*]} and no apt-get to install them"
  say "installing slurmctld slurmd slurm-client munge (missing: ${need[*]})"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq </dev/null
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge </dev/null >/dev/null
fi
say "$(slurmd -V), $(munged -V 2>&1 | awk '{print $1; exit}')"

# -- 2. a private cluster configuration ----------------------------------------------------------------
# One instance at a time on a machine; a folder left by an instance that was killed (SIGKILL: no
# trap) is cleaned up here: its daemons, found by their pid files and checked against their command
# line, are stopped, then the folder is removed.
exec 9>/tmp/ngp-slurm.lock
flock -w 1800 9 || { echo "slurm-test: another instance holds /tmp/ngp-slurm.lock" >&2; exit 1; }
for stale in /tmp/ngp-slurm.*/; do
  [ -d "$stale" ] || continue
  owner=$(cat "$stale/owner.pid" 2>/dev/null || true)
  if [ -n "$owner" ] && kill -0 "$owner" 2>/dev/null; then continue; fi
  for pidfile in "$stale"/slurmd.pid "$stale"/slurmctld.pid "$stale"/munge/munged.pid; do
    pid=$(cat "$pidfile" 2>/dev/null || true)
    if [ -n "$pid" ] && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF "${stale%/}"; then
      echo "slurm-test: stopping stale daemon $pid of $stale"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$stale"
done
TMP=$(mktemp -d /tmp/ngp-slurm.XXXXXX)
chmod 700 "$TMP"
echo $$ > "$TMP/owner.pid"
PIDS=()
cleanup() {
  rc=$?
  trap - EXIT INT TERM
  set +e
  if [ "${SLURM_CONF:-}" = "$TMP/slurm.conf" ] && [ -n "${SLURMCTLD_UP:-}" ]; then
    scancel --quiet --user=root 2>/dev/null  # jobs of this cluster only (SLURM_CONF is ours)
  fi
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do  # slurmd, slurmctld, munged: reverse start order
    kill -TERM "${PIDS[i]}" 2>/dev/null
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  if [ $rc -ne 0 ]; then
    for log in "$TMP"/*.log; do [ -f "$log" ] && { echo "--- tail $log"; tail -n 30 "$log"; }; done
  fi
  if [ "${SLURM_TEST_KEEP:-0}" = 1 ]; then echo "slurm-test: kept $TMP"; else rm -rf "$TMP"; fi
  say "cleaned up (exit $rc)"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PY=$REPO/.venv/bin/python
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
CTLD_PORT=$(free_port)
D_PORT=$(free_port)
while [ "$D_PORT" = "$CTLD_PORT" ]; do D_PORT=$(free_port); done
HOST=$(hostname -s)
# This machine as slurmd sees it; leave ~10% of the memory (at least 512 MB) to the OS and daemons.
read -r CPUS SOCKETS CORES THREADS MEM < <(slurmd -C | awk '/^NodeName/ {
  for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
  print v["CPUs"], v["SocketsPerBoard"] * v["Boards"], v["CoresPerSocket"], v["ThreadsPerCore"], v["RealMemory"] }')
MEM=$(( MEM - (MEM / 10 > 512 ? MEM / 10 : 512) ))
mkdir -p "$TMP/state" "$TMP/spool" "$TMP/munge" "$TMP/work" "$TMP/logs"
cat > "$TMP/slurm.conf" <<EOF
# Generated by .ci/slurm_test.sh: a one-node cluster on $HOST, torn down after the test.
ClusterName=ngpci
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$D_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$TMP/munge/munge.socket
StateSaveLocation=$TMP/state
SlurmdSpoolDir=$TMP/spool/%n
SlurmctldPidFile=$TMP/slurmctld.pid
SlurmdPidFile=$TMP/slurmd.pid
SlurmctldLogFile=$TMP/slurmctld.log
SlurmdLogFile=$TMP/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$(( MEM / CPUS ))
SchedulerType=sched/backfill
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$TMP/jobcomp.txt
# Finished jobs stay visible to squeue for 10 min (the executor polls squeue: no slurmdbd here).
MinJobAge=600
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
KillWait=30
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS Sockets=$SOCKETS CoresPerSocket=$CORES ThreadsPerCore=$THREADS RealMemory=$MEM State=UNKNOWN
PartitionName=ci Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$TMP/slurm.conf
say "slurm.conf: node $HOST CPUs=$CPUS RealMemory=${MEM}MB, ports $CTLD_PORT/$D_PORT, state in $TMP"

# -- 3. daemons ----------------------------------------------------------------------------------------
mungekey --create --keyfile="$TMP/munge/munge.key" --bits=1024 2>/dev/null \
  || dd if=/dev/urandom of="$TMP/munge/munge.key" bs=128 count=1 status=none
chmod 400 "$TMP/munge/munge.key"
munged --foreground --force --key-file="$TMP/munge/munge.key" --socket="$TMP/munge/munge.socket" \
  --pid-file="$TMP/munge/munged.pid" --seed-file="$TMP/munge/munged.seed" --log-file="$TMP/munged.log" \
  </dev/null >>"$TMP/munged.log" 2>&1 9>&- &
PIDS+=($!)
for _ in $(seq 100); do [ -S "$TMP/munge/munge.socket" ] && break; sleep 0.1; done
munge --socket="$TMP/munge/munge.socket" -n </dev/null | unmunge --socket="$TMP/munge/munge.socket" >/dev/null \
  || { echo "slurm-test: munge round trip failed" >&2; exit 1; }
say "munged up (pid ${PIDS[0]})"

slurmctld -D -i -f "$SLURM_CONF" </dev/null >>"$TMP/slurmctld.out.log" 2>&1 9>&- &
PIDS+=($!)
SLURMCTLD_UP=1
slurmd -D -f "$SLURM_CONF" -N "$HOST" </dev/null >>"$TMP/slurmd.out.log" 2>&1 9>&- &
PIDS+=($!)

state=""
for _ in $(seq 120); do
  state=$(sinfo -h -n "$HOST" -o %T 2>/dev/null || true)
  [ "$state" = idle ] && break
  for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null || { echo "slurm-test: a daemon died" >&2; exit 1; }; done
  sleep 0.5
done
[ "$state" = idle ] || { echo "slurm-test: node not idle after 60 s (state '$state')" >&2; exit 1; }
say "cluster up: slurmctld pid ${PIDS[1]}, slurmd pid ${PIDS[2]}"
echo "\$ sinfo"
sinfo
echo "\$ sinfo -N -o '%N %c %m %T'"
sinfo -N -o '%N %c %m %T'

# -- 4. the cluster runs jobs ----------------------------------------------------------------------------
echo "\$ srun -N1 -n1 hostname"
out=$(timeout 60 srun -N1 -n1 hostname </dev/null)
echo "$out"
[ "$out" = "$(hostname)" ] || { echo "slurm-test: srun printed '$out'" >&2; exit 1; }
echo "\$ sbatch --wait --wrap 'echo sbatch ok on \$(hostname), \$SLURM_CPUS_ON_NODE cpus'"
jobid=$(timeout 120 sbatch --parsable --wait -o "$TMP/logs/sbatch-%j.out" \
  --wrap 'echo sbatch ok on $(hostname), $SLURM_CPUS_ON_NODE cpus' </dev/null)
cat "$TMP/logs/sbatch-$jobid.out"
grep -q "sbatch ok on" "$TMP/logs/sbatch-$jobid.out" || { echo "slurm-test: sbatch job $jobid printed nothing" >&2; exit 1; }
echo "\$ sbatch --wait --wrap 'srun hostname'   (a job step inside a batch job, as the Snakemake jobstep executor runs)"
jobid=$(timeout 120 sbatch --parsable --wait -o "$TMP/logs/sbatch-%j.out" --wrap 'env | grep ^SLURM_CONF; srun hostname' </dev/null) \
  || { cat "$TMP/logs/sbatch-$jobid.out" >&2; echo "slurm-test: srun inside sbatch failed" >&2; exit 1; }
cat "$TMP/logs/sbatch-$jobid.out"
say "srun and sbatch work"

# -- 4b. preemption: SIGTERM to a training job step checkpoints; the resubmitted job resumes --------------
# What SLURM does on preemption (PreemptMode=CANCEL/REQUEUE) or at the time limit: SIGTERM to every
# job step, SIGKILL after KillWait (30 s here). `ngp-ohem train` writes a checkpoint and exits 143.
export OMP_NUM_THREADS=1
NGP=$REPO/.venv/bin/ngp-ohem
"$NGP" make-scene --kind blender --size 32 --out "$TMP/scene" >/dev/null
RUN=$TMP/preempt-run
train=("$NGP" train --data "$TMP/scene" --out "$RUN" --budget 6 --preset cpu --device cpu --backend torch
  --threads 1 --quiet --set field.log2_table_size=12 --set render.target_samples=2048
  --set render.grid_resolution=16 --set render.max_steps=256 --set eval.subset_views=1
  --set eval.final_views=2 --set eval.n_evals=3 --set checkpoint_every_s=0.5)
jobid=$(sbatch --parsable -J preempt-test -o "$TMP/logs/preempt-%j.out" --wrap "srun ${train[*]}" </dev/null)
for _ in $(seq 240); do [ -f "$RUN/checkpoint.pt" ] && break; sleep 0.5; done
[ -f "$RUN/checkpoint.pt" ] || { cat "$TMP/logs/preempt-$jobid.out" >&2; echo "slurm-test: no checkpoint" >&2; exit 1; }
sleep 1
echo "\$ scancel --signal=TERM $jobid   (job $jobid is training; it has a checkpoint)"
scancel --signal=TERM "$jobid"
for _ in $(seq 120); do
  st=$(squeue -h -j "$jobid" --states=all -o %T 2>/dev/null || true)
  case "$st" in RUNNING | COMPLETING | PENDING | CONFIGURING) sleep 0.5 ;; *) break ;; esac
done
echo "job $jobid: state $st; $(grep -E "exit code|error" "$TMP/logs/preempt-$jobid.out" | head -n 2 | tr '\n' ' ')"
[ "$st" = FAILED ] && grep -q "exit code 143" "$TMP/logs/preempt-$jobid.out" && [ ! -f "$RUN/summary.json" ] \
  || { cat "$TMP/logs/preempt-$jobid.out" >&2; echo "slurm-test: SIGTERM did not stop the run with 143" >&2; exit 1; }
clock=$("$PY" -c "import sys, torch; s = torch.load(sys.argv[1], weights_only=False); print(f\"step {s['step']}, {s['clock_seconds']:.2f} s\")" "$RUN/checkpoint.pt")
echo "checkpoint after SIGTERM: $clock"
jobid=$(timeout 300 sbatch --parsable --wait -J preempt-test -o "$TMP/logs/preempt-%j.out" --wrap "srun ${train[*]}" </dev/null) \
  || { cat "$TMP/logs/preempt-$jobid.out" >&2; echo "slurm-test: the resubmitted run failed" >&2; exit 1; }
"$PY" - "$RUN/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
assert s["status"] == "complete" and s["resumed"] is True, s
assert 6.0 <= s["train_seconds"] < 6.5, s["train_seconds"]
print(f"resubmitted job: resumed={s['resumed']}, {s['steps']} steps, {s['train_seconds']:.2f} training seconds (budget 6)")
PY
say "preemption: checkpointed on SIGTERM, resumed by the next job"
[ "$STAGE" = cluster ] && exit 0
jobcomp_before=$(wc -l < "$TMP/jobcomp.txt")

# -- 5. the workflow through the SLURM executor -------------------------------------------------------------
[ -f Snakefile ] && [ -f "$CONFIG" ] || { echo "slurm-test: no Snakefile / $CONFIG in $REPO" >&2; exit 1; }
[ -d profiles/slurm ] || { echo "slurm-test: no profiles/slurm in $REPO" >&2; exit 1; }
# The jobstep executor inside each job runs the rule through a nested `srun` with every SLURM_* variable
# removed, SLURM_CONF included; on a real cluster srun then reads /etc/slurm/slurm.conf, here that
# would find nothing (this cluster's config lives in $TMP). A wrapper first on PATH (sbatch exports
# PATH to the job) puts SLURM_CONF back for srun only, and nothing under /etc is touched.
mkdir -p "$TMP/bin"
printf '#!/bin/sh\nSLURM_CONF=%s exec %s "$@"\n' "$SLURM_CONF" "$(command -v srun)" > "$TMP/bin/srun"
chmod +x "$TMP/bin/srun"
export PATH=$TMP/bin:$REPO/.venv/bin:$PATH  # the jobs run `ngp-ohem` and `snakemake` (the jobstep) from here
export CI=true OMP_NUM_THREADS=1
WORK=$TMP/work
# profiles/slurm is written for a GPU site (partitions cpu/gpu, an A100, 8 CPUs per run, 32 GB); here
# the same profile runs with this node's CPU-only resources. set-threads / set-resources /
# default-resources given on the command line replace the profile's values.
slurm_args=(
  --executor slurm --workflow-profile "$REPO/profiles/slurm" --snakefile "$REPO/Snakefile"
  --configfile "$REPO/$CONFIG" --directory "$WORK" --jobs "$CPUS"
  # --cores: workflow/rules/common.smk reads workflow.cores (train_threads), which raises a
  # WorkflowError under a cluster executor unless --cores is given. Harmless with set-threads below.
  --cores "$CPUS"
  --slurm-no-account --slurm-status-command squeue --slurm-init-seconds-before-status-checks 5
  --slurm-logdir "$TMP/logs/slurm" --slurm-keep-successful-logs
  --default-resources slurm_partition=ci "mem_mb=$(( MEM / CPUS ))" runtime=30 cpus_per_task=1
  --set-threads train=1
  --set-resources train:slurm_partition=ci train:cpus_per_task=1 "train:mem_mb=$(( MEM / CPUS ))" train:runtime=30
  --latency-wait 10
)
say "snakemake ${slurm_args[*]}"
t0=$(date +%s)
set +e
timeout "${SLURM_TEST_TIMEOUT:-1800}" "$SNAKEMAKE" "${slurm_args[@]}" </dev/null 2>&1 | tee "$TMP/snakemake-slurm.log" \
  | grep --line-buffered -E "^(Job [0-9]+ has been submitted|Finished jobid|[0-9]+ of [0-9]+ steps|Complete log|.*Error)"
rc=${PIPESTATUS[0]}
set -e
slurm_wall=$(( $(date +%s) - t0 ))
[ "$rc" = 0 ] || { echo "slurm-test: snakemake --executor slurm failed ($rc)" >&2; tail -n 60 "$TMP/snakemake-slurm.log" >&2; exit 1; }
say "workflow through SLURM finished in ${slurm_wall}s"

# No slurmdbd here, so no sacct: squeue --states=all lists finished jobs for MinJobAge, and the
# jobcomp/filetxt log keeps every job's final state.
echo "\$ squeue --states=all -o '%.5i %.9P %.52k %.10T %.8M %.4C %.8m'   (comment = the Snakemake rule and wildcards)"
squeue --states=all -o '%.5i %.9P %.52k %.10T %.8M %.4C %.8m'
tail -n +"$(( jobcomp_before + 1 ))" "$TMP/jobcomp.txt" > "$TMP/jobcomp-workflow.txt"
njobs=$(grep -c "JobState=COMPLETED" "$TMP/jobcomp-workflow.txt" || true)
nfailed=$(grep -vc "JobState=COMPLETED" "$TMP/jobcomp-workflow.txt" || true)
[ "$nfailed" = 0 ] || { grep -v "JobState=COMPLETED" "$TMP/jobcomp-workflow.txt" >&2; echo "slurm-test: $nfailed SLURM jobs did not complete" >&2; exit 1; }
nsub=$(grep -c "has been submitted with SLURM jobid" "$TMP/snakemake-slurm.log" || true)
ntrain=$(grep -c "(Rule: train)" "$TMP/snakemake-slurm.log" || true)
[ "$ntrain" -gt 0 ] || { echo "slurm-test: no train job ran through SLURM" >&2; exit 1; }
say "$njobs SLURM jobs completed (jobcomp log), $nsub of them submitted by Snakemake, $ntrain rule train"

# -- 6. same tables as a local run ---------------------------------------------------------------------------
tables() { (cd "$1" && find results/tables results/runs.csv results/traces.csv figures -type f 2>/dev/null | sort); }
tables "$WORK" > "$TMP/slurm-files.txt"
[ -s "$TMP/slurm-files.txt" ] || { echo "slurm-test: the SLURM run produced no tables" >&2; exit 1; }
LOCAL=${SLURM_TEST_LOCAL_DIR:-}
if [ -z "$LOCAL" ]; then
  LOCAL=$TMP/local
  say "local run of the same config for comparison: snakemake --cores $CPUS --workflow-profile profiles/default"
  t0=$(date +%s)
  timeout "${SLURM_TEST_TIMEOUT:-1800}" "$SNAKEMAKE" --cores "$CPUS" --workflow-profile "$REPO/profiles/default" --snakefile "$REPO/Snakefile" \
    --configfile "$REPO/$CONFIG" --directory "$LOCAL" --quiet rules </dev/null >"$TMP/snakemake-local.log" 2>&1 \
    || { tail -n 60 "$TMP/snakemake-local.log" >&2; echo "slurm-test: local run failed" >&2; exit 1; }
  say "local run finished in $(( $(date +%s) - t0 ))s"
fi
tables "$LOCAL" > "$TMP/local-files.txt"
echo "tables and figures (SLURM run):"
sed 's/^/  /' "$TMP/slurm-files.txt"
if ! diff -u "$TMP/local-files.txt" "$TMP/slurm-files.txt"; then
  echo "slurm-test: the SLURM run and the local run produced different files" >&2; exit 1
fi
for f in $(cat "$TMP/slurm-files.txt"); do
  [ -s "$WORK/$f" ] || { echo "slurm-test: empty $f" >&2; exit 1; }
done
# Same runs (dataset, scene, method, seed) and same table rows; the numbers differ (wall-clock budgets).
key_cols() { "$PY" - "$1" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1], newline="")))
keys = [k for k in ("dataset", "scene", "method", "seed") if rows and k in rows[0]]
print("\n".join(sorted(",".join(r[k] for k in keys) for r in rows)))
PY
}
diff <(key_cols "$LOCAL/results/runs.csv") <(key_cols "$WORK/results/runs.csv") \
  || { echo "slurm-test: results/runs.csv lists different runs" >&2; exit 1; }
for t in "$WORK"/results/tables/*.md; do
  name=results/tables/$(basename "$t")
  diff <(cut -d'|' -f1-3 "$LOCAL/$name") <(cut -d'|' -f1-3 "$t") >/dev/null \
    || { echo "slurm-test: $name has different rows than the local run" >&2; exit 1; }
done
echo "results/runs.csv (SLURM run):"
"$PY" - "$WORK/results/runs.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1], newline="")))
cols = [c for c in ("dataset", "scene", "method", "seed", "budget_s", "train_seconds", "steps", "psnr", "ssim") if c in rows[0]]
print("  " + "  ".join(f"{c:>13}" for c in cols))
for r in rows:
    print("  " + "  ".join(f"{r[c][:13]:>13}" for c in cols))
PY
echo "results/tables/quality.md (SLURM run):"
sed 's/^/  /' "$WORK/results/tables/quality.md" | head -20
say "PASS: the workflow ran through SLURM ($njobs jobs, ${slurm_wall}s) and produced the same $(wc -l < "$TMP/slurm-files.txt") tables/figures as a local run"
