#!/usr/bin/env bash
# cofloor.sh: Lua's own instructions per message for the coroutine echo's body (see
# cofloor.c), under callgrind, for both modes of cofloor.lua, on each interpreter given
# (default lua5.4).
#   bench/floor/cofloor.sh [--small N] [--large N] [--size BYTES] [interpreter...]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SMALL=20000 LARGE=60000 SIZE=64
while [ $# -gt 0 ]; do
    case "$1" in
        --small) SMALL=$2; shift 2 ;;
        --large) LARGE=$2; shift 2 ;;
        --size) SIZE=$2; shift 2 ;;
        *) break ;;
    esac
done
INTERPRETERS=("${@:-lua5.4}")
mkdir -p "$HERE/../build"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
echo "| interpreter | C resumes (Ir/message, $SIZE B) | Lua loop resumes (Ir/message) |"
echo "|---|---:|---:|"
for lua in "${INTERPRETERS[@]}"; do
    inc=$(pkg-config --cflags "$lua" 2>/dev/null || echo "-I/usr/include/$lua")
    gcc -O2 -shared -fPIC $inc -o "$HERE/../build/cofloor.so" "$HERE/cofloor.c"
    ir() {
        valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.$1.$2" "$lua" "$HERE/cofloor.lua" "$1" "$2" "$SIZE" \
            2> "$OUT/log.$1.$2"
        grep -E "^(summary|totals):" "$OUT/cg.$1.$2" | head -1 | awk '{print $2}'
    }
    row="| $lua |"
    for mode in c lua; do
        a=$(ir "$mode" "$SMALL"); b=$(ir "$mode" "$LARGE")
        row="$row $(( (b - a) / (LARGE - SMALL) )) |"
    done
    echo "$row"
done
