#!/usr/bin/env bash
# Install what diffuspeech needs on a fresh Debian or Ubuntu machine:
# the flite speech synthesizer (system package) and the Python package with
# its development tools. Safe to run again: it skips what is present.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v flite >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing flite with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq flite >/dev/null
  else
    echo "setup: flite is missing. Install it as root with 'apt-get install flite'" \
         "(Debian/Ubuntu) or from your distribution, then run this script again." >&2
    exit 1
  fi
fi

python3 -m pip install --quiet --disable-pip-version-check -e ".[dev]"
echo "setup: done (flite at $(command -v flite))"
