#!/bin/sh
# Builds the C examples to WebAssembly (WASI preview 1). The .wasm files are
# committed, so running the examples and the tests needs no C toolchain.
# Debian: apt install clang lld wasi-libc libclang-rt-14-dev-wasm32
set -eu
cd "$(dirname "$0")"
for src in pi/pi.c wordcount/wordcount.c primes/primes.c; do
    clang --target=wasm32-wasi -O2 -Wall -Wextra -Werror -Wl,--strip-debug -o "${src%.c}.wasm" "$src"
    echo "built ${src%.c}.wasm"
done
