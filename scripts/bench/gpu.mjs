// What bench:ops and bench:step share for their device mode: the device and preset from a flag or
// the environment (JFA_BENCH_DEVICE, JFA_BENCH_PRESET), checked before anything runs; the GPU's
// dense bf16 peak for MFU; timing and peak-memory readings that synchronise on CUDA; the JSON file.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

/** An error in what the user asked for (flag, variable, value): printed without a stack, exit 2. */
export class BenchUsageError extends Error {}

const DEVICE = /^(cpu|cuda(:(0|[1-9]\d*))?)$/;

/**
 * The device and preset(s) of a benchmark run: `--device`/`--preset` win over JFA_BENCH_DEVICE /
 * JFA_BENCH_PRESET, the default is cpu and `defaultPreset`. Several presets may be given as a
 * comma list when `several` is true.
 * @param {string} bench - 'bench:ops' or 'bench:step', for the messages.
 * @param {{device?: string, preset?: string}} values - the parsed flags.
 * @param {Record<string, unknown>} presets - the known presets by name.
 * @param {{env?: Record<string, string | undefined>, defaultPreset: string, several?: boolean}} options
 * @returns {{device: string, presets: string[]}} the device ('cpu', 'cuda' or 'cuda:N') and the presets.
 * @throws BenchUsageError naming the flag or variable and the value, for a bad device or an unknown preset.
 */
export function benchTarget(bench, values, presets, { env = process.env, defaultPreset, several = false }) {
  const pick = (flag, variable) =>
    values[flag] !== undefined ? { value: values[flag], from: `--${flag}` } : env[variable] ? { value: env[variable], from: variable } : undefined;
  const device = pick('device', 'JFA_BENCH_DEVICE') ?? { value: 'cpu', from: 'default' };
  if (!DEVICE.test(device.value)) throw new BenchUsageError(`${bench}: ${device.from} '${device.value}' is not a device: use cpu, cuda or cuda:N`);
  const preset = pick('preset', 'JFA_BENCH_PRESET') ?? { value: defaultPreset, from: 'default' };
  const names = preset.value.split(',').map((s) => s.trim());
  if (names.length > 1 && !several) throw new BenchUsageError(`${bench}: ${preset.from} '${preset.value}': one preset at a time (known: ${Object.keys(presets).join(', ')})`);
  for (const name of names)
    if (!Object.hasOwn(presets, name)) throw new BenchUsageError(`${bench}: ${preset.from} '${name}' is not a preset; known: ${Object.keys(presets).join(', ')}`);
  return { device: device.value, presets: names };
}

/**
 * A positive integer from a flag's text.
 * @param {string} bench - the benchmark's name for the message.
 * @param {string} flag - the flag's name.
 * @param {string} text - its value.
 * @returns {number} the integer.
 * @throws BenchUsageError for anything else.
 */
export function positiveInt(bench, flag, text) {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new BenchUsageError(`${bench}: --${flag} must be a positive integer, got '${text}'`);
  return n;
}

/**
 * Runs `main`, printing a BenchUsageError as one line and exiting 2 (anything else is rethrown).
 * @param {() => Promise<void>} main - the benchmark.
 */
export async function runBench(main) {
  try {
    await main();
  } catch (e) {
    if (!(e instanceof BenchUsageError)) throw e;
    console.error(e.message);
    process.exitCode = 2;
  }
}

// Dense (not sparse) bf16 tensor-core peaks by the vendor's datasheets, TFLOP/s; first match wins.
const PEAKS = [
  [/H100.*PCIe/i, 756],
  [/H200|H100/i, 989],
  [/A100/i, 312],
  [/\bL4\b/i, 121],
];

/**
 * The dense bf16 peak of a GPU for MFU: JFA_PEAK_TFLOPS when set, else by name (H200, H100 SXM 989,
 * H100 PCIe 756, A100 312, L4 121 TFLOP/s), else unknown.
 * @param {string | undefined} name - the GPU's name (torch.cuda.get_device_name()); undefined on the CPU.
 * @param {Record<string, string | undefined>} [env]
 * @returns {{tflops: number | null, source: string}} the peak and where it came from.
 * @throws BenchUsageError for a JFA_PEAK_TFLOPS that is not a positive number.
 */
export function peakTflops(name, env = process.env) {
  if (env.JFA_PEAK_TFLOPS !== undefined && env.JFA_PEAK_TFLOPS !== '') {
    const v = Number(env.JFA_PEAK_TFLOPS);
    if (!(v > 0)) throw new BenchUsageError(`JFA_PEAK_TFLOPS must be a positive number of TFLOP/s, got '${env.JFA_PEAK_TFLOPS}'`);
    return { tflops: v, source: 'JFA_PEAK_TFLOPS' };
  }
  if (!name) return { tflops: null, source: 'none (not a GPU)' };
  const hit = PEAKS.find(([re]) => re.test(name));
  return hit ? { tflops: hit[1], source: `${name}: dense bf16 datasheet peak` } : { tflops: null, source: `unknown for '${name}' (set JFA_PEAK_TFLOPS)` };
}

/** The index of a CUDA device name ('cuda' -> 0, 'cuda:3' -> 3), or -1 for 'cpu'. */
export function gpuIndex(device) {
  if (device === 'cpu') return -1;
  return device === 'cuda' ? 0 : Number(device.slice(5));
}

/** 'cuda' -> 'cuda:0'; other names unchanged: how tensors report their device. */
export function canonicalDevice(device) {
  return device === 'cuda' ? 'cuda:0' : device;
}

/**
 * Our side's GPU memory readings on `device` (the CUDA caching allocator), through the library.
 * @param {typeof import('../../dist/index.js')} jfa - the library.
 * @param {string} device - a CUDA device name.
 * @returns {{name: string, reset(): void, allocatedMiB(): number, peakMiB(): number}}
 * @throws Error when memoryStats() lists no such GPU.
 */
export function gpuMemory(jfa, device) {
  const index = gpuIndex(device);
  const gpu = () => {
    const g = jfa.memoryStats().gpus.find((x) => x.index === index);
    if (!g) throw new Error(`memoryStats() lists no GPU ${index} (${jfa.memoryStats().gpus.length} listed)`);
    return g;
  };
  return {
    name: gpu().name,
    reset: () => {
      jfa.cudaSynchronize();
      jfa.resetPeakMemory();
    },
    allocatedMiB: () => gpu().allocatedBytes / 2 ** 20,
    peakMiB: () => {
      jfa.cudaSynchronize();
      return gpu().peakAllocatedBytes / 2 ** 20;
    },
  };
}

/**
 * Where the JSON of a run goes: `--json-out FILE`, else $OUT/NAME.json when OUT is set, else nowhere.
 * @param {string | undefined} flag - the --json-out value.
 * @param {string} name - the file's stem ('bench-step').
 * @param {Record<string, string | undefined>} [env]
 * @returns {string | undefined} the path.
 */
export function jsonTarget(flag, name, env = process.env) {
  if (flag) return resolve(flag);
  return env.OUT ? join(env.OUT, `${name}.json`) : undefined;
}

/** Writes `data` as indented JSON to `file` (its folder created), when a file is given. */
export function writeJson(file, data) {
  if (!file) return;
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify(data, null, 2)}\n`);
}
