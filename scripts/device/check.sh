#!/usr/bin/env bash
# The GPU check (issue 14), for a machine with an NVIDIA GPU, PyTorch, nvcc, CMake and ninja but no
# Node: unpacks .device/ (scripts/device/prepare.sh made it), builds the addon against that
# machine's torch, runs the device parity tests on CUDA (test/29: fp32 and bf16 against the CPU;
# test/41: the model families, Qwen2, Qwen3, Mistral and Phi-3, against transformers; test/44:
# data-parallel training over NCCL, world size 1, against one process; the build has NCCL where
# this torch brings its headers), then bench:step (preset 1b-bf16: a ~1.1B Llama in bf16) and bench:ops (fp32 and bf16) on the GPU
# against the PyTorch references on the same GPU, then test/29's CUDA tests on libtorch's path.
# Everything it prints goes to $OUT/check.log too, each step's output to $OUT/<step>.log, the
# benchmarks' results to $OUT/bench-ops.json and $OUT/bench-step.json: 8 files in all (the device
# runner returns at most 8). Exit 2 when there is no GPU, 1 when a step failed.
# Budget: 10 minutes in all. Each step has its own timeout, cut to what is left of JFA_CHECK_BUDGET_S
# (default 570 s from the start), so the script ends, with its logs, before a 600 s limit kills it.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/device-out}
mkdir -p "$OUT"
log() { echo "check.sh: $*" | tee -a "$OUT/check.log" >&2; }
# Not inside another check: test/29 runs this script (its no-GPU path), and a check runs test/29.
if [ -n "${JFA_CHECK_RUNNING:-}" ]; then
  log "already inside a GPU check (JFA_CHECK_RUNNING=$JFA_CHECK_RUNNING): not starting another"
  exit 2
fi
export JFA_CHECK_RUNNING=$$
started=$(date +%s)
deadline=$(( started + ${JFA_CHECK_BUDGET_S:-570} ))
scratch=$(mktemp -d)  # what need not come back: the runner returns at most 8 files from $OUT
trap 'rm -rf "$scratch"' EXIT

# 1. A GPU, or stop here. JFA_CHECK_DRY_RUN=cpu runs every step on the CPU instead (the CUDA tests
# skip, the benchmarks take their tiny presets on the CPU): the script's own plumbing, checked on a
# machine without a GPU (unpacking .device/, the build against PYTHON's torch, the tests' Python).
smi=${JFA_CHECK_NVIDIA_SMI:-nvidia-smi}
python=${PYTHON:-python3}
dry=${JFA_CHECK_DRY_RUN:-}
[ -z "$dry" ] || [ "$dry" = cpu ] || { log "JFA_CHECK_DRY_RUN must be 'cpu' or unset, got '$dry'"; exit 2; }
if [ "$dry" = cpu ]; then
  bench_device=cpu ops_presets=tiny,tiny-bf16 step_preset=tiny-bf16
  log "dry run on the CPU (JFA_CHECK_DRY_RUN=cpu): no GPU is used; torch $("$python" -c 'import torch; print(torch.__version__)')"
else
  bench_device=cuda ops_presets=fp32,bf16 step_preset=1b-bf16
  if ! command -v "$smi" >/dev/null 2>&1 || ! "$smi" -L >"$scratch/gpus.txt" 2>/dev/null || ! grep -q GPU "$scratch/gpus.txt"; then
    log "no NVIDIA GPU ($smi missing or lists none): nothing to check on this machine; run it where nvidia-smi lists a GPU"
    exit 2
  fi
  if ! "$python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>>"$OUT/check.log"; then
    log "no NVIDIA GPU usable by $python's torch (torch.cuda.is_available() is False, or no torch)"
    exit 2
  fi
  log "GPU: $(head -1 "$scratch/gpus.txt"); torch $("$python" -c 'import torch; print(torch.__version__, torch.version.cuda)')"
fi

# 2. Node and what the build needs, from .device/.
tools=$(mktemp -d)
if ! command -v node >/dev/null 2>&1; then
  [ -f .device/node.tar.xz ] || { log "no node and no .device/node.tar.xz: run scripts/device/prepare.sh on a machine with Node first"; exit 1; }
  mkdir -p "$tools/bin" && tar -xJf .device/node.tar.xz -C "$tools/bin"
  export PATH="$tools/bin:$PATH"
fi
[ -d node_modules ] || tar -xJf .device/node_modules.tar.xz
[ -d dist ] || tar -xJf .device/dist.tar.xz
if [ -f .device/deps.tar.xz ] && { [ ! -d /usr/include/faiss ] || [ ! -f /usr/include/gloo/context.h ]; }; then
  tar -xJf .device/deps.tar.xz -C "$tools"
  [ -d /usr/include/faiss ] || export FAISS_DIR="$tools/usr/lib/x86_64-linux-gnu/cmake/faiss"
  export CMAKE_PREFIX_PATH="$tools/usr:${CMAKE_PREFIX_PATH:-}"
  export nlohmann_json_ROOT="$tools/usr"
  [ -f /usr/include/gloo/context.h ] || export JFA_GLOO_INCLUDE_DIR="$tools/usr/include"
fi

step() {  # step NAME SECONDS COMMAND...: runs it with a timeout (cut to the time left), output to $OUT/NAME.log
  local name=$1 limit=$2; shift 2
  local left=$(( deadline - $(date +%s) - 10 ))
  if [ "$left" -lt 20 ]; then
    log "$name: not run: ${left} s left of the check's budget"
    return 1
  fi
  [ "$left" -lt "$limit" ] && { log "$name: limit cut from $limit to $left s (the check's budget)"; limit=$left; }
  local t0=$(date +%s)
  timeout -k 10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  log "$name: exit $rc in $(( $(date +%s) - t0 )) s$([ $rc = 124 ] && echo ", timed out at $limit s") (log: $name.log)"
  return $rc
}

# dist/ compiled from this tree's lib/ (the one in .device/ may predate it), when TypeScript is here.
if [ -f node_modules/typescript/bin/tsc ]; then
  t0=$(date +%s)
  if timeout 120 node node_modules/typescript/bin/tsc -p tsconfig.json >"$scratch/compile.log" 2>&1; then
    log "compile: dist/ from lib/ in $(( $(date +%s) - t0 )) s"
  else
    log "compile failed, running on the dist/ that was there: $(tail -5 "$scratch/compile.log")"
  fi
fi

# 3. Build against this machine's torch (found through PYTHON), for this GPU's architecture only.
torch_dir=$("$python" -c 'import torch, os; print(os.path.dirname(torch.__file__))')
arch=$([ "$dry" = cpu ] || "$python" -c 'import torch; m, n = torch.cuda.get_device_capability(); print(f"{m}{n}")')
failed=0
# NCCL where this torch has its headers (JFA_NCCL=auto: the pip wheels of nvidia-nccl, -cublas,
# -cusparse and -cusolver beside torch, or a CUDA toolkit's); without them the build goes on without
# it and test/44's NCCL tests skip, saying so.
build() {  # build JFA_NCCL
  LIBTORCH=$torch_dir JFA_CMAKE_DIR=build-device/cmake JFA_BUILD_TESTS=OFF JFA_NCCL=$1 ${arch:+JFA_CUDA_ARCHITECTURES=$arch} \
    step build "${JFA_CHECK_BUILD_S:-300}" node scripts/build-native.mjs build-device/Release
}
if ! build auto; then
  grep -q 'jfa: c10d NCCL backend on' "$OUT/build.log" || { log "the build failed: see $OUT/build.log"; exit 1; }
  # An NCCL path this torch's headers do not compile must not cost the other steps: its errors go
  # to check.log (build.log is rewritten), and the tree is rebuilt without it (cmake-js passes its
  # -D flags to new trees only), the check counted as failed.
  log "the build with NCCL failed; its error lines, then a build without NCCL:"
  grep -E 'error|Error' "$OUT/build.log" | head -20 >>"$OUT/check.log"
  failed=1
  cmake -DJFA_NCCL=OFF build-device/cmake >/dev/null 2>&1
  build 0 || { log "the build failed: see $OUT/build.log"; exit 1; }
fi
export JFA_ADDON=$PWD/build-device/Release/jfa_torch.node LIBTORCH=$torch_dir
log "build: $(grep -o 'jfa: c10d NCCL backend.*' "$OUT/build.log" | tail -1 || echo 'jfa: c10d NCCL backend off (JFA_NCCL=0)')"
# The tests' PyTorch references run in this machine's python (there is no .venv here).
export JFA_TEST_PYTHON
JFA_TEST_PYTHON=$(command -v "$python")

# 4. Parity on CUDA: the device suite (fp32 1e-4 and bf16 against the CPU: tensors, logits with
# and without padding and GQA, generation, JFA training, the divergence kernel), and the families'
# parity (test/41 with JFA_TEST_DEVICE: our side on the GPU against transformers' references computed
# by this machine's python on the CPU: logits, greedy tokens, adapters, a training step, bf16), and
# test/44: data-parallel training over NCCL, a world of one on this GPU against one process on it
# (NCCL's collectives at world size 1, the adapters within test/30's bound). One step, one log: the
# runner returns at most 8 files. In a dry run JFA_TEST_DEVICE is cpu.
JFA_TEST_DEVICE=$bench_device step parity 300 node node_modules/vitest/vitest.mjs run test/29.device.test.ts test/41.families.test.ts test/45.nccl.test.ts \
  --reporter=default --reporter=json --outputFile.json="$scratch/parity.json" || failed=1
[ -f "$scratch/parity.json" ] && log "parity: $(node -e 'const r = require(process.argv[1]); console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests} skipped of ${r.numTotalTests}`)' "$scratch/parity.json" 2>&1)"

# 5. Benchmarks on the GPU against PyTorch (transformers + PEFT) on the same GPU, run by this
# machine's python: bench:step at preset 1b-bf16 first (a ~1.1B Llama, TinyLlama's shape, random
# bf16 weights; tokens/s, the ratio, peak GPU memory and MFU on both sides), then bench:ops in fp32
# and bf16 (time and the allocator's peak per op). Results: $OUT/bench-step.json and $OUT/bench-ops.json.
export JFA_BENCH_PYTHON
JFA_BENCH_PYTHON=$(command -v "$python")
if refs=$("$python" -c 'import transformers, peft; print("transformers", transformers.__version__, "peft", peft.__version__)' 2>&1); then
  log "references: $refs"
  JFA_BENCH_DEVICE=$bench_device JFA_BENCH_PRESET=$step_preset step bench-step 210 node scripts/bench/step.mjs --json-out "$OUT/bench-step.json" || failed=1
  JFA_BENCH_DEVICE=$bench_device step bench-ops 90 node scripts/bench/ops.mjs --preset "$ops_presets" --repeats 10 --json-out "$OUT/bench-ops.json" || failed=1
else
  log "bench: $python cannot import transformers and peft (the references need them): $(echo "$refs" | tail -1); bench:ops and bench:step not run"
  failed=1
fi

# 6. With what time is left: the CUDA tests again on libtorch's divergence path (JFA_CUDA_KERNELS=0),
# the reference for our kernel on the same GPU.
JFA_CUDA_KERNELS=0 step parity-libtorch-path 90 node node_modules/vitest/vitest.mjs run test/29.device.test.ts -t CUDA || failed=1
[ "$dry" = cpu ] || { echo "--- nvidia-smi at the end"; "$smi" 2>&1; } >>"$OUT/check.log"
log "done in $(( $(date +%s) - started )) s, $([ $failed = 0 ] && echo 'every step passed' || echo 'some steps failed'); outputs in $OUT"
exit $failed
