import { type ChildProcessByStdio, spawnSync } from 'node:child_process';
import { type Readable } from 'node:stream';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { expect } from 'vitest';

import { generateSuite, type Suite } from '../lib/data/suite.js';
import { type TrainOptions } from '../lib/jfa/trainer.js';
import { packageRoot } from '../lib/locate.js';
import { type InstanceRecord } from '../lib/data/records.js';
import { learnMerges } from '../lib/model/bpe.js';
import { createModel } from '../lib/model/create.js';
import { loadSafetensors } from '../lib/model/safetensors.js';

export const root = packageRoot;
// The Python with the PyTorch references: the project's .venv, or JFA_TEST_PYTHON (the GPU check
// sets it to the GPU machine's own python, which has torch, transformers and peft but no .venv).
export const venvPython = process.env.JFA_TEST_PYTHON || join(root, '.venv', 'bin', 'python');

/** Runs Python code in the project's .venv (the PyTorch reference); it must print one JSON value. */
export function python<T>(code: string): T {
  if (!existsSync(venvPython)) throw new Error(`${venvPython} is missing: run \`npm run setup\` (or set JFA_TEST_PYTHON)`);
  const r = spawnSync(venvPython, ['-c', code], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`python failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

/** Runs the built `jfa` command from the package root; returns its exit code and output. */
export function jfa(...args: string[]) {
  return spawnSync(process.execPath, [join(root, 'dist', 'cli', 'main.js'), ...args], { encoding: 'utf8', cwd: root, timeout: 300_000 });
}

/** Runs an ES module snippet in a fresh Node process from the package root; returns its exit code and output. */
export function node(code: string, env: NodeJS.ProcessEnv = {}, args: string[] = []) {
  const r = spawnSync(process.execPath, [...args, '--input-type=module', '-e', code], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, ...env },
    timeout: 120_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Asserts fn throws an instance of `type` whose message contains every `parts`. */
export function expectError(fn: () => unknown, type: ErrorConstructor, ...parts: string[]): void {
  let thrown: unknown;
  try {
    fn();
  } catch (e) {
    thrown = e;
  }
  expect(thrown, `expected ${type.name}`).toBeInstanceOf(type);
  for (const p of parts) expect((thrown as Error).message).toContain(p);
}

/** The tiny jfa run the trainer tests share: a small generated suite and settings that train in seconds. */
export function tinyJfaRun(): { suite: Suite; options: TrainOptions } {
  const suite = generateSuite({ seed: 5, oldTrainPerSuite: 4, oldEvalPerSuite: 2, instancesPerTask: 1 });
  const options: TrainOptions = {
    method: 'jfa',
    microBatch: 2,
    accumulation: 2,
    maxTokens: 160,
    lr: 5e-3,
    lora: { r: 4, loraAlpha: 8 },
    latentOptions: { groups: 2, perGroup: 3, k: 2, rank: 2 },
    seed: 3,
  };
  return { suite, options };
}

/** max |a - b| / max |b| over a tensor pair of the same length (the parity tests' relative difference). */
export function relDiff(a: Float32Array, b: Float32Array): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return diff / Math.max(scale, 1e-12);
}

/**
 * The largest absolute difference between the float32 tensors of two safetensors files (the same
 * tensor names required): how an adapter or pool of one run is compared with another's.
 */
export function maxSafetensorsDiff(a: string, b: string): number {
  const x = loadSafetensors(a).tensors;
  const y = loadSafetensors(b).tensors;
  expect(Object.keys(x).sort()).toEqual(Object.keys(y).sort());
  let worst = 0;
  for (const [name, t] of Object.entries(x)) {
    const u = t.toTypedArray();
    const v = y[name]!.toTypedArray();
    if (!(u instanceof Float32Array)) continue;
    for (let i = 0; i < u.length; i++) worst = Math.max(worst, Math.abs(u[i]! - (v as Float32Array)[i]!));
  }
  return worst;
}

/** How a worker process ended, with its whole output: what {@link collectRun} resolves to. */
export interface WorkerRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** performance.now() when it closed */
  endedAt: number;
}

/**
 * Collects a spawned worker's stdout and stderr until it closes, passing each stdout line to
 * `onLine` as it arrives (the distributed tests watch ranks' progress lines this way).
 */
export function collectRun(child: ChildProcessByStdio<null, Readable, Readable>, onLine?: (line: string, pid: number) => void, onClose?: () => void): Promise<WorkerRun> {
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => {
    const text = d.toString();
    stdout += text;
    for (const line of text.split('\n')) if (line) onLine?.(line, child.pid!);
  });
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) =>
    child.on('close', (code, signal) => {
      onClose?.();
      resolve({ code, signal, stdout, stderr, endedAt: performance.now() });
    }),
  );
}

/**
 * The two models the methods' tests (test/46, test/47) train: a tiny one for runs, and for the
 * reference comparisons test/20's shape, wide enough that no gradient element sits so near zero that
 * Adam's division by its root moment magnifies float rounding past the step's tolerance, with a
 * tokenizer learned from the first 200 of `records`.
 */
export function createMethodModels(modelDir: string, refDir: string, records: readonly InstanceRecord[]): void {
  createModel(modelDir, { hiddenSize: 32, intermediateSize: 64, numLayers: 2, numHeads: 2, seed: 1 });
  const merges = learnMerges(records.slice(0, 200).flatMap((r) => [r.instruction, r.input, r.output]), 40);
  createModel(refDir, { hiddenSize: 64, intermediateSize: 128, numLayers: 2, numHeads: 4, merges, seed: 2 });
}
