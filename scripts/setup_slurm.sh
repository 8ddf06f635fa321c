#!/usr/bin/env bash
# Installs (never starts) what the real-Slurm tests need: Debian's Slurm 22.05 daemons and clients, munge, slurmdbd
# and MariaDB. The tests start their own private daemons under a temp folder (tests/slurm_cluster.py). A no-op when
# everything is present; without root it only says what to install, and those tests skip.
set -euo pipefail
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
BINARIES=(slurmctld slurmd slurmdbd sbatch sacct sacctmgr munged mariadb-install-db mariadbd)

log() { echo "setup_slurm: $*" >&2; }

missing=()
for b in "${BINARIES[@]}"; do
  command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || missing+=("$b")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
  log "missing ${missing[*]}: run 'sudo apt-get install --no-install-recommends ${PACKAGES[*]}' (the Slurm tests skip)"
  exit 0
fi

log "installing ${PACKAGES[*]}"
# Debian's postinst scripts start the services they install; policy-rc.d exit 101 forbids that (we want no system
# daemons, only the tests' private ones). Keep an existing policy file and restore it afterwards.
POLICY=/usr/sbin/policy-rc.d
backup=""
if [ -e "$POLICY" ]; then backup=$(mktemp); cp -p "$POLICY" "$backup"; fi
restore() {
  if [ -n "$backup" ]; then mv -f "$backup" "$POLICY"; else rm -f "$POLICY"; fi
}
trap restore EXIT
printf '#!/bin/sh\nexit 101\n' >"$POLICY"
chmod 755 "$POLICY"

export DEBIAN_FRONTEND=noninteractive
install() { apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >&2; }
# Refresh the package lists only when they are absent or the first try fails (stale lists).
if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1 || ! install; then
  apt-get update -qq >&2
  install
fi
log "installed"
