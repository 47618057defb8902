#!/usr/bin/env bash
# bench/service/skynet/run.sh SKYNET_DIR [msgs] [calls]: the Skynet reference for
# bench/service/bench.lua (Skynet built with `make linux`, e.g. from a checkout).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SKYNET=$(cd "$1" && pwd)
cfg=$(mktemp)
trap 'rm -f "$cfg"' EXIT
sed -e "s|SKYNET|$SKYNET|g" -e "s|HERE|$HERE|g" "$HERE/config.in" > "$cfg"
echo "bench_msgs = ${2:-1000000}" >> "$cfg"
echo "bench_calls = ${3:-200000}" >> "$cfg"
timeout 300 "$SKYNET/skynet" "$cfg" 2>&1 | grep "skynet oneway\|skynet call\|rror" || true
