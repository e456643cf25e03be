#!/usr/bin/env bash
# Prepares .device/ (git-ignored) for scripts/device/check.sh on a GPU machine that has PyTorch,
# nvcc, CMake and ninja but no Node, no FAISS and no network: this machine's node binary, the npm
# packages the build and the tests need, FAISS (static library, headers, CMake package) and the
# nlohmann-json headers, each xz-compressed. The working tree plus .device/ must stay under 64 MiB
# (the device runner's limit): the script prints the total and fails above it.
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=.device
rm -rf "$dest" && mkdir -p "$dest"
node_bin=$(command -v node)
tar -C "$(dirname "$node_bin")" -cJf "$dest/node.tar.xz" "$(basename "$node_bin")"
# The npm packages the build (cmake-js, node-addon-api, node-api-headers) and the tests (vitest,
# typescript and their dependencies) need; the rest of node_modules stays behind.
tar -cJf "$dest/node_modules.tar.xz" --exclude='node_modules/.cache' --exclude='*.map' --exclude='node_modules/typedoc*' \
  --exclude='node_modules/playwright*' --exclude='node_modules/@huggingface/transformers' node_modules
# FAISS, nlohmann-json and gloo's headers (c10d's ProcessGroupGloo.hpp includes them; compile only)
# as Debian installs them (the addon links FAISS statically).
tar -cJf "$dest/deps.tar.xz" -C / usr/include/faiss usr/include/nlohmann usr/include/gloo \
  usr/lib/x86_64-linux-gnu/libfaiss.a usr/lib/x86_64-linux-gnu/cmake/faiss \
  $(ls -d /usr/share/cmake/nlohmann_json /usr/lib/x86_64-linux-gnu/cmake/nlohmann_json 2>/dev/null | sed 's|^/||')
[ -d dist ] || npx tsc -p tsconfig.json
tar -cJf "$dest/dist.tar.xz" dist
total=$(( $(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1) + $(du -cb "$dest" | tail -1 | cut -f1) ))
echo "prepare.sh: $(du -sh "$dest" | cut -f1) in $dest; working tree + $dest = $((total / 1048576)) MiB (limit 64)"
[ "$total" -lt $((64 * 1048576)) ] || { echo "prepare.sh: over 64 MiB: trim node_modules.tar.xz" >&2; exit 1; }
