#!/bin/bash
# Run every test: installs what is missing (Debian 12), builds the module
# and runs the prove suite in t/.
#
#   ./test.sh                 all tests
#   ./test.sh t/llm_openai.t  some
set -euo pipefail

top=$(cd "$(dirname "$0")" && pwd)
cd "$top"

pkgs=(nginx nginx-dev libjansson-dev libhiredis-dev redis-server gcc make
      perl curl prometheus chromium)
if ! command -v node >/dev/null 2>&1; then
    pkgs+=(nodejs npm)
fi

scripts/deps.sh "${pkgs[@]}"

env -u BUILD_DIR ./build.sh

if [ $# -eq 0 ]; then
    set -- -r t/
fi

exec prove -j2 "$@"
