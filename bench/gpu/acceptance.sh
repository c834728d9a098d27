#!/usr/bin/env bash
# The first device minutes as one command: build, pytest -m gpu, compute-sanitizer
# (memcheck, racecheck, initcheck), a non-default stream and cuda:1, the benchmark table with a
# per-kernel breakdown; results under bench/results/<device name>/. Under 8 minutes on an
# H100/H200. Options are bench/gpu/acceptance.py's (--dry-run, --steps, --budget, --out).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec "${PYTHON:-python3}" bench/gpu/acceptance.py "$@"
