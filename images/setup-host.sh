#!/bin/sh
# Installs what the harness needs on a Debian 12 (bookworm) or 13 (trixie) host; fast and silent
# when all is there. Idempotent: refreshes the host's apt lists only when a package is missing,
# then installs the missing ones. Kernels and the arm64 guest user space do not come through the
# host's apt: the harness has its own apt configuration under its cache (harness/debian/apt.py).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
packages=$(grep -v '^#' "$here/host-packages.txt" | tr -s ' \n' ' ')
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

need_update=0
installed=$(dpkg-query -W -f='${Package} ${Status}\n' $packages 2>/dev/null \
  | awk '$4 == "installed" { print $1 }')
missing=""
for p in $packages; do
  echo "$installed" | grep -qx "$p" || missing="$missing $p"
done
[ -n "$missing" ] && need_update=1
if [ "$need_update" -eq 1 ]; then
  echo "setup-host: apt-get update"
  $SUDO apt-get update -q >/dev/null
fi
if [ -n "$missing" ]; then
  echo "setup-host: installing$missing"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing \
    >/dev/null
fi
