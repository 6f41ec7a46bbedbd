#!/bin/bash
# Real-lego step cost of two source trees, alternated: baseline then hsm, each tree in turn, 2 threads,
# --profile, evaluations at half and full budget; prints steps, PSNR, b/B, second-half ms per step and
# the per-phase ms per step. Run it alone on the machine, e.g. old tree from `git worktree add /tmp/old HEAD~1`:
#   bash benchmarks/adhoc/lego_pair.sh 90 old:/tmp/old new:$PWD
# Another scene of ../shared/data: SCENE=nerf_llff_data/fern bash benchmarks/adhoc/lego_pair.sh 300 new:$PWD
# Each tree builds its kernels in its own extension folder (/tmp/x/ext-<label>), before any clock starts.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
B=$1; shift
SCENE=${SCENE:-nerf_synthetic/lego}
mkdir -p /tmp/x
cd /tmp  # so that `python -m` imports the tree on PYTHONPATH, not the working directory
for lt in "$@"; do l=${lt%%:*}; t=${lt#*:}; rm -rf /tmp/x/warm-$l  # build each tree's kernels first
TORCH_EXTENSIONS_DIR=/tmp/x/ext-$l PYTHONPATH=$t $REPO/.venv/bin/python -m ngp_ohem.cli train --data $REPO/../shared/data/$SCENE --method hsm --budget 2 --out /tmp/x/warm-$l --quiet --threads 2 --set eval.final_views=1 >/dev/null 2>&1
done
for m in baseline hsm; do for lt in "$@"; do l=${lt%%:*}; t=${lt#*:}; rm -rf /tmp/x/p-$l-$m
TORCH_EXTENSIONS_DIR=/tmp/x/ext-$l PYTHONPATH=$t $REPO/.venv/bin/python -m ngp_ohem.cli train --data $REPO/../shared/data/$SCENE --method $m --budget $B --seed 0 --out /tmp/x/p-$l-$m --quiet --threads 2 --profile --set eval.n_evals=2 --set eval.first_fraction=0.5 --set eval.final_views=4 --set eval.subset_views=2 >/dev/null 2>&1
python3 - "$l" "$m" <<'PY'
import json,csv,sys
l,m=sys.argv[1:]
s=json.load(open(f'/tmp/x/p-{l}-{m}/summary.json')); r=list(csv.DictReader(open(f'/tmp/x/p-{l}-{m}/trace.csv')))
a,b=r[-2],r[-1]; ms=1000*(float(b['train_seconds'])-float(a['train_seconds']))/(int(b['step'])-int(a['step']))
n=s['steps']; ph={k: round(1000*v/n,1) for k,v in sorted(s['phase_seconds'].items())}
print(l, m, 'steps', n, 'psnr', b['psnr'], 'bB', b['hard_fraction'], '2nd-half ms/step %.1f'%ms, 'contended', s['clock_contended'], ph)
PY
done; done
