#!/bin/sh
# Word count over the texts in data/: map units, then one reduce unit over
# their concatenated outputs. Needs a node: CAIRN_API or --api as usual.
#   examples/jobs/wordcount/run.sh [CAIRN]   (CAIRN: the cairn binary)
set -eu
cairn=${1:-cairn}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
map=$("$cairn" job submit "$here/map.toml")
"$cairn" job status "$map" --watch >/dev/null
"$cairn" job results "$map" -o "$work/map"
cat "$work"/map/*.out > "$work/pairs.txt"
cp "$here/wordcount.wasm" "$work/"
cat > "$work/reduce.toml" <<TOML
module = "wordcount.wasm"
quorum = 2
deadline = "5m"
memory = "64MiB"
[[unit]]
name = "total"
args = ["reduce"]
stdin = "pairs.txt"
TOML
reduce=$("$cairn" job submit "$work/reduce.toml")
"$cairn" job status "$reduce" --watch >/dev/null
"$cairn" job results "$reduce" -o "$work/reduce"
sort -k2,2nr -k1,1 "$work/reduce/total.out" | head -20
