#!/usr/bin/env bash
# Choosing the offline schedules of ADAM and LAE on validation data (issue "Reproduce the papers by default",
# item 2). On the offline WordNet stream (MiniLM-L6, 5 experiences of 9 classes) ADAM with APER's schedule equals
# SimpleCIL to the digit and LAE trails it (experiments/results/offline_cil.md). Here Hydra's Optuna sweeper (TPE,
# sampler seed 0) searches each method's schedule with 20% of every class's training samples held out
# (scenario.val_fraction=0.2, objective: validation A_last); the test split is never read. Then the best trial's
# values run on the test split (val_fraction 0) with seeds 0-2, beside the current defaults and SimpleCIL.
#
#   bash experiments/tuning/offline_defaults.sh [search|test|summary|all]     (about 45 minutes on 2 CPU cores)
#
# Sweeps go to runs/tuning/<method>_wordnet/ (optimization_results.yaml holds the best values); the test runs to
# experiments/runs/tuning/<label>/seed<k>. experiments/tuning/summarise.py then writes
# experiments/results/offline_tuning.md from both (trials, chosen values, test table, machine, commit).
set -euo pipefail
cd "$(dirname "$0")/../.."
WHICH="${1:-all}"
# CLPET, QUIET (preset=none: the searches and the default runs start from methods/*.yaml, not from the presets
# they produced, presets/adam/wordnet.yaml and presets/lae/wordnet.yaml) and search()
source experiments/tuning/search.sh

if [[ "$WHICH" == search || "$WHICH" == all ]]; then
  # ADAM: the first-experience adaptation (APER: SGD lr 0.01, 20 epochs, batch 48); the lr sets how far it moves
  search adam wordnet 10 scenario.val_fraction=0.2 method.pet=adapter 'method.optim.lr=tag(log, interval(0.01, 0.5))' \
    'method.optim.epochs=choice(20, 40)'
  # LAE: lr and epochs per experience (the calibration epoch stays 1)
  search lae wordnet 10 scenario.val_fraction=0.2 method.pet=adapter 'method.optim.lr=tag(log, interval(0.0003, 0.03))' \
    'method.optim.epochs=choice(2, 4)'
fi

best() {  # method -> the best trial's overrides, one per line
  .venv/bin/python - "$1" <<'EOF'
import sys, yaml
doc = yaml.safe_load(open(f"runs/tuning/{sys.argv[1]}_wordnet/optimization_results.yaml"))
print("\n".join(f"{k}={v}" for k, v in doc["best_params"].items()))
EOF
}

if [[ "$WHICH" == test || "$WHICH" == all ]]; then
  mapfile -t ADAM_BEST < <(best adam)
  mapfile -t LAE_BEST < <(best lae)
  test_run() {  # label, overrides...
    local label="$1"; shift
    local out="experiments/runs/tuning/$label/seed$seed"
    if .venv/bin/python -c "import sys; from clpet.results import load_metrics, run_finished; \
sys.exit(0 if run_finished(load_metrics(sys.argv[1])) else 1)" "$out" 2>/dev/null; then return 0; fi
    rm -rf "$out"  # a killed run (checkpoint=false): start it again
    $CLPET run scenario=wordnet "$@" "seed=$seed" "${QUIET[@]}" "out_dir=$out"
  }
  for seed in 0 1 2; do
    test_run simplecil method=simplecil
    test_run adam-default method=adam method.pet=adapter
    test_run lae-default method=lae method.pet=adapter
    test_run adam-validated method=adam method.pet=adapter "${ADAM_BEST[@]}"
    test_run lae-validated method=lae method.pet=adapter "${LAE_BEST[@]}"
  done
fi

if [[ "$WHICH" == summary || "$WHICH" == all ]]; then
  .venv/bin/python experiments/tuning/summarise.py
fi
