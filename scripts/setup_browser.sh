#!/usr/bin/env bash
# Headless Chromium + chromedriver for the leaderboard site's browser tests (tests/test_site.py). Idempotent.
# Not root: says what to install and exits 0; those tests then skip with that reason.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

log() { echo "setup_browser: $*" >&2; }

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  log "chromium and chromedriver present"; exit 0
fi
if [ "$(id -u)" != 0 ]; then
  log "not root: install them with 'sudo apt-get install -y --no-install-recommends chromium chromium-driver'"
  exit 0
fi
install() { apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2; }
# Refresh the package lists only when they are absent or the first try fails (stale lists).
if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1 || ! install; then
  apt-get update -qq >&2
  install
fi
log "installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
