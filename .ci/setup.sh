#!/usr/bin/env bash
# Idempotent set-up: Debian audio packages (the bundled real-audio corpus: espeak-ng, alsa words,
# freedesktop sounds, fluidsynth music, asterisk recorded speech decoded by ffmpeg; the codec2 and
# opus-tools baselines) and .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS="alsa-utils sound-theme-freedesktop espeak-ng sox fluidsynth timgm6mb-soundfont libsndfile1 ffmpeg codec2 opus-tools"
for lang in en es it ru; do PKGS="$PKGS asterisk-core-sounds-$lang asterisk-core-sounds-$lang-g722"; done  # not fr: held out
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ] && command -v apt-get >/dev/null 2>&1; then
  echo "[setup] apt-get install$missing"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing) >/dev/null \
    || echo "[setup] warning: could not install$missing (tests that need them will skip)"
fi
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import cat_jax, torch, pytest" >/dev/null 2>&1 || [ pyproject.toml -nt .venv/.installed ]; then
  echo "[setup] pip install -e .[test] (CPU torch 2.13.0)"
  .venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
  if ! .venv/bin/pip install -q -e ".[test]" > .venv/pip-install.log 2>&1; then
    grep -v "^WARNING: Location" .venv/pip-install.log | tail -30
    echo "[setup] pip install failed (full log: .venv/pip-install.log)"
    exit 1
  fi
  .venv/bin/python -c "import cat_jax, torch, pytest"
  touch .venv/.installed
fi
