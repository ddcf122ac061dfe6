#!/bin/bash
# Install the Debian packages named as arguments that are not installed
# yet (apt-get update first; sudo when not root).  Does nothing on systems
# without apt-get.
#
#   scripts/deps.sh nginx nginx-dev ...
set -euo pipefail

command -v apt-get >/dev/null 2>&1 || exit 0

missing=()
for pkg in "$@"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [ "$status" != "install ok installed" ]; then
        missing+=("$pkg")
    fi
done

[ ${#missing[@]} -gt 0 ] || exit 0

sudo=
if [ "$(id -u)" -ne 0 ]; then
    sudo=sudo
fi

echo "installing ${missing[*]}"
$sudo apt-get update
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
