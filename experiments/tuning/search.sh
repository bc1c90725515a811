# Sourced by the validation search scripts (offline_defaults.sh, replay_defaults.sh): one Optuna search of a
# method's schedule on a scenario, its trials in runs/tuning/<method>_<scenario>/ (experiments/tuning/summarise.py
# reads them there). The caller passes the validation split (scenario.val_fraction) and the search space.
CLPET="${CLPET:-.venv/bin/clpet}"
# preset=none: the searches start from methods/*.yaml, not from the presets they produced
QUIET=(plots=false checkpoint=false progress=false preset=none)

search() {  # method, scenario, trials, fixed and search-space overrides...
  local method="$1" scenario="$2" trials="$3"; shift 3
  $CLPET run -m "scenario=$scenario" "method=$method" hydra/sweeper=optuna "hydra.sweeper.n_trials=$trials" \
    hydra.sweeper.sampler.seed=0 "hydra.sweep.dir=runs/tuning/${method}_${scenario}" "${QUIET[@]}" "$@"
}
