#!/bin/sh
# Installs what the harness needs on a Debian bookworm host; fast and silent when all is there.
# Idempotent: adds the arm64 architecture (for arm64 kernel packages), refreshes the apt lists
# only when a package is missing or the lists cannot name the kernels, installs the missing.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
packages=$(grep -v '^#' "$here/host-packages.txt" | tr -s ' \n' ' ')
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

need_update=0
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  echo "setup-host: adding the arm64 architecture"
  $SUDO dpkg --add-architecture arm64
  need_update=1
fi
installed=$(dpkg-query -W -f='${Package} ${Status}\n' $packages 2>/dev/null \
  | awk '$4 == "installed" { print $1 }')
missing=""
for p in $packages; do
  echo "$installed" | grep -qx "$p" || missing="$missing $p"
done
[ -n "$missing" ] && need_update=1
# The harness asks apt which Debian kernels exist: the lists (amd64 and arm64) must be there.
ls /var/lib/apt/lists/*_binary-amd64_Packages* >/dev/null 2>&1 || need_update=1
ls /var/lib/apt/lists/*_binary-arm64_Packages* >/dev/null 2>&1 || need_update=1
if [ "$need_update" -eq 1 ]; then
  echo "setup-host: apt-get update"
  $SUDO apt-get update -q >/dev/null
fi
if [ -n "$missing" ]; then
  echo "setup-host: installing$missing"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing \
    >/dev/null
fi
