#!/bin/sh
# Thin wrapper: see run.py --help and README.md.
exec python3 "$(dirname "$0")/run.py" "$@"
