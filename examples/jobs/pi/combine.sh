#!/bin/sh
# Sums the units' counts in DIR/*.out and prints the estimate of pi.
set -eu
cat "${1:?usage: combine.sh RESULTS_DIR}"/*.out |
    awk '{ inside += $2; total += $3 } END { printf "pi ~ %.6f from %d samples\n", 4 * inside / total, total }'
