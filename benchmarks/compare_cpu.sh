#!/usr/bin/env bash
# Compare fum with Brian2 (C++ standalone) and NEST on the Vogels-Abbott CUBA and COBA networks.
#
#   benchmarks/compare_cpu.sh [THREADS] [REPEATS] [extra compare.py options...]
#
# THREADS defaults to 1, REPEATS to 3. Extra options go to benchmarks/peers/compare.py, e.g.
# --duration-ms 200 (peers only), --models cuba, --peers fum nest, --json-out runs.json.
# Set PYTHON to the interpreter that has benchmarks/requirements.txt installed (default python3).
# fum is run from target/release/fum (cargo build --release); it is skipped when missing.
set -euo pipefail

THREADS="${1:-1}"
REPEATS="${2:-3}"
shift $(( $# < 2 ? $# : 2 ))

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
exec "$PYTHON" benchmarks/peers/compare.py --threads "$THREADS" --repeats "$REPEATS" --python "$PYTHON" "$@"
