# Sourced by the validation search scripts (offline_defaults.sh, replay_defaults.sh): one Optuna search of a
# method's schedule on a scenario, its trials in runs/tuning/<method>_<scenario>/, and keep_sweep, which copies a
# finished search's records to $RECORDS (experiments/tuning/summarise.py reads either folder, --sweeps). The caller
# passes the validation split (scenario.val_fraction) and the search space.
CLPET="${CLPET:-.venv/bin/clpet}"
# preset=none: the searches start from methods/*.yaml, not from the presets they produced
QUIET=(plots=false checkpoint=false progress=false preset=none)
RECORDS=experiments/results/records/tuning

search() {  # method, scenario, trials, fixed and search-space overrides...
  local method="$1" scenario="$2" trials="$3"; shift 3
  $CLPET run -m "scenario=$scenario" "method=$method" hydra/sweeper=optuna "hydra.sweeper.n_trials=$trials" \
    hydra.sweeper.sampler.seed=0 "hydra.sweep.dir=runs/tuning/${method}_${scenario}" "${QUIET[@]}" "$@"
}

keep_sweep() {  # <method>_<scenario>: copy the finished search's result and each finished trial's config, metrics
  # and provenance to $RECORDS/<method>_<scenario>/ (committed, so the summary can be rebuilt without runs/)
  .venv/bin/python experiments/tuning/summarise.py --sweeps runs/tuning --searches "$1" --keep "$RECORDS" >/dev/null
}
