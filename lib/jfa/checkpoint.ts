// Checkpoint I/O shared by train() and pretrain(): a checkpoint is a folder written whole beside
// the current one and swapped in, so a run killed at any moment leaves `checkpoint` (or, between the
// two renames, `checkpoint.old`) loadable; it holds the trained tensors, the optimizer's moments
// and a state.json that a resumed run must match.
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

import { CheckpointError } from '../errors.js';
import { loadSafetensors, saveSafetensors } from '../model/safetensors.js';
import { type AdamW } from '../optim.js';
import { type Tensor } from '../tensor.js';
import { readJson, removeDir, replaceDir, writeFileAtomic } from '../util/files.js';

/** The checkpoint folder's name inside a run's folder. */
export const CHECKPOINT = 'checkpoint';
const OPTIMIZER_FILE = 'optimizer.safetensors';
/** The run's state in a checkpoint folder: its step and identity. */
export const STATE_FILE = 'state.json';

/**
 * The checkpoint in `outDir` to resume from (`checkpoint`, or `checkpoint.old` left by a kill
 * mid-swap), checked against this run's `state` (everything but the step and the position in a
 * streamed source must be equal).
 * @returns its folder, step, and the position a streamed run saved (unchecked: its reader checks it).
 * @throws Error when there is none, it is incomplete, from another run or its step is out of range.
 */
export function findCheckpoint(who: string, outDir: string, state: Record<string, unknown>, totalSteps: number): { dir: string; step: number; position?: unknown } {
  const dir = [join(outDir, CHECKPOINT), join(outDir, `${CHECKPOINT}.old`)].find((d) => existsSync(d));
  if (!dir) throw new CheckpointError(`${who}: nothing to resume in ${outDir}`);
  const stateFile = join(dir, STATE_FILE);
  if (!existsSync(stateFile)) throw new CheckpointError(`${who}: ${dir} is not a complete checkpoint (${STATE_FILE} is missing)`);
  const { step, position, ...saved } = readJson<{ step: number; position?: unknown } & Record<string, unknown>>(stateFile);
  if (JSON.stringify(saved) !== JSON.stringify(state))
    throw new CheckpointError(`${who}: ${dir} is from another run (${JSON.stringify(saved)}; now ${JSON.stringify(state)})`);
  if (!Number.isInteger(step) || step < 0 || step > totalSteps) throw new CheckpointError(`${who}: ${stateFile} has no valid step (${JSON.stringify(step)})`);
  return { dir, step, ...(position === undefined ? {} : { position }) };
}

/** A checkpoint file's tensors, every one of `names` present, or an error naming what is missing. */
export function checkpointTensors(who: string, file: string, names: string[]): Record<string, Tensor> {
  if (!existsSync(file)) throw new CheckpointError(`${who}: the checkpoint is incomplete: ${file} is missing`);
  const { tensors } = loadSafetensors(file);
  const missing = names.filter((n) => !tensors[n]);
  if (missing.length) {
    Object.values(tensors).forEach((t) => t.dispose());
    throw new CheckpointError(`${who}: the checkpoint is incomplete: ${file} has no ${missing.slice(0, 3).map((n) => `'${n}'`).join(', ')}${missing.length > 3 ? ` (and ${missing.length - 3} more)` : ''}`);
  }
  return tensors;
}

/** Writes the optimizer's moments and counts into a checkpoint folder being filled. */
export function saveOptimizer(dir: string, optimizer: AdamW): void {
  const moments: Record<string, Tensor> = { steps: optimizer.steps };
  optimizer.expAvg.forEach((t, i) => (moments[`exp_avg.${i}`] = t));
  optimizer.expAvgSq.forEach((t, i) => (moments[`exp_avg_sq.${i}`] = t));
  saveSafetensors(join(dir, OPTIMIZER_FILE), moments);
}

/** The optimizer's moments and counts from a checkpoint, into `optimizer`'s state in place. */
export function restoreOptimizer(who: string, optimizer: AdamW, dir: string, step: number): void {
  const n = optimizer.params.length;
  const names = ['steps', ...Array.from({ length: n }, (_, i) => [`exp_avg.${i}`, `exp_avg_sq.${i}`]).flat()];
  const saved = checkpointTensors(who, join(dir, OPTIMIZER_FILE), names);
  try {
    optimizer.expAvg.forEach((t, i) => t.copyFrom(saved[`exp_avg.${i}`]!));
    optimizer.expAvgSq.forEach((t, i) => t.copyFrom(saved[`exp_avg_sq.${i}`]!));
    optimizer.steps.copyFrom(saved.steps!);
  } catch (e) {
    throw new CheckpointError(`${who}: ${join(dir, OPTIMIZER_FILE)} does not fit this run's parameters (${(e as Error).message})`);
  } finally {
    Object.values(saved).forEach((t) => t.dispose());
  }
  optimizer.stepCount = step;
}

/** Writes a checkpoint folder (`fill` adds the run's tensors), its state last. */
export function saveCheckpoint(who: string, outDir: string, state: { step: number } & Record<string, unknown>, fill: (tmp: string) => void): void {
  writeFolder(who, join(outDir, CHECKPOINT), `the checkpoint of step ${state.step}`, outDir, (tmp) => {
    fill(tmp);
    // state.json last: a folder without it is never resumed from
    writeFileAtomic(join(tmp, STATE_FILE), `${JSON.stringify(state)}\n`);
  });
}


/** Removes a finished run's checkpoint and any temporary folders of killed writes. */
export function removeCheckpoint(outDir: string): void {
  removeDir(join(outDir, CHECKPOINT));
  removeDir(join(outDir, `${CHECKPOINT}.old`));
  for (const name of readdirSync(outDir)) if (name.startsWith(`${CHECKPOINT}.tmp-`)) rmSync(join(outDir, name), { recursive: true, force: true });
}

/**
 * Writes a folder whole under a temporary name (`fill`), then swaps it in for `dir`. If writing
 * fails (a full disk, say), the temporary folder is removed and the error says what is still there.
 */
export function writeFolder(who: string, dir: string, what: string, outDir: string, fill: (tmp: string) => void): void {
  const tmp = `${dir}.tmp-${process.pid}`;
  try {
    // Temporary folders of runs killed while writing (the run holds the folder's lock: no other writes here).
    for (const name of readdirSync(join(dir, '..'))) if (name.startsWith(`${basename(dir)}.tmp-`)) rmSync(join(dir, '..', name), { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true });
    fill(tmp);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw new Error(`${who}: cannot write ${what} to ${dir} (${(e as Error).message})${lastCheckpoint(outDir)}`);
  }
  replaceDir(tmp, dir);
}

/** `file` of the checkpoint in `outDir` (`checkpoint`, or `checkpoint.old` left by a kill mid-swap), or undefined when neither has it. */
export function checkpointFile(outDir: string, file: string): string | undefined {
  return [join(outDir, CHECKPOINT, file), join(outDir, `${CHECKPOINT}.old`, file)].find((f) => existsSync(f));
}

/** "; the checkpoint of step N in DIR is intact ..." for an error that stops a run, or '' when there is none. */
export function lastCheckpoint(outDir: string): string {
  const state = checkpointFile(outDir, STATE_FILE);
  if (!state) return '';
  const dir = dirname(state);
  try {
    const { step } = readJson<{ step: number }>(state);
    return `; the checkpoint of step ${step} in ${dir} is intact: fix the cause and rerun with --resume`;
  } catch {
    return '';
  }
}
