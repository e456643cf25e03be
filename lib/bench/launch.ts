// `jfa train --nproc N`: starts N local workers of the same command with torchrun's environment
// (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), forwards their output line by line with
// a rank prefix, and when one fails stops the others and exits non-zero naming it.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/** How long the other workers get to stop (SIGTERM) before SIGKILL, once one has failed. */
const GRACE_MS = 5000;

/** A free TCP port on this host for MASTER_PORT (the OS picks it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no free port'))));
    });
  });
}

/** The command line without `--nproc N` (or `--nproc=N`): what each worker runs. */
export function withoutNproc(args: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--nproc') i += 1;
    else if (!args[i]!.startsWith('--nproc=')) out.push(args[i]!);
  }
  return out;
}

/**
 * Runs `args` (a jfa command line) as `nproc` local workers and waits for them.
 * @param nproc - workers to start (ranks 0..nproc-1 of a world of nproc).
 * @param args - the command line each worker runs (without --nproc).
 * @param o - master address and port (default 127.0.0.1 and a free port), and where output goes.
 * @returns a promise that resolves when all exit 0.
 * @throws (rejects with) an Error naming the first rank that failed and how (exit code or signal); the others are stopped.
 * @example
 * ```ts
 * await launchWorkers(2, ['train', '--model', 'm', '--data', 'd.jsonl', '--method', 'jfa', '--out', 'runs/x']);
 * ```
 */
export async function launchWorkers(
  nproc: number,
  args: string[],
  o: { masterAddr?: string; masterPort?: number; write?: (line: string, stream: 'stdout' | 'stderr') => void } = {},
): Promise<void> {
  const masterAddr = o.masterAddr ?? '127.0.0.1';
  const masterPort = o.masterPort ?? (await freePort());
  const write = o.write ?? ((line, stream) => (stream === 'stdout' ? process.stdout : process.stderr).write(`${line}\n`));
  // As torchrun: the cores are shared between the workers unless OMP_NUM_THREADS says otherwise.
  const threads = process.env.OMP_NUM_THREADS ?? String(Math.max(1, Math.floor(availableParallelism() / nproc)));
  const children: ChildProcess[] = [];
  let failure: string | undefined;
  let killTimer: NodeJS.Timeout | undefined;
  const stopOthers = () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
    killTimer ??= setTimeout(() => children.forEach((c) => c.exitCode === null && c.signalCode === null && c.kill('SIGKILL')), GRACE_MS);
  };
  const onSignal = (signal: NodeJS.Signals) => {
    failure ??= `interrupted by ${signal}`;
    stopOthers();
  };
  process.on('SIGINT', onSignal).on('SIGTERM', onSignal);
  try {
    await Promise.all(
      Array.from({ length: nproc }, (_, rank) => {
        const child = spawn(process.execPath, [...process.execArgv, process.argv[1]!, ...args], {
          env: { ...process.env, RANK: String(rank), WORLD_SIZE: String(nproc), LOCAL_RANK: String(rank), LOCAL_WORLD_SIZE: String(nproc), MASTER_ADDR: masterAddr, MASTER_PORT: String(masterPort), OMP_NUM_THREADS: threads },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        children.push(child);
        for (const stream of ['stdout', 'stderr'] as const) createInterface({ input: child[stream]! }).on('line', (line) => write(`[rank ${rank}] ${line}`, stream));
        return new Promise<void>((resolve) => {
          child.on('error', (e) => {
            failure ??= `rank ${rank} could not start (${e.message})`;
            stopOthers();
            resolve();
          });
          child.on('close', (code, signal) => {
            if (code !== 0) {
              failure ??= `rank ${rank} ${signal ? `was killed by ${signal}` : `exited with code ${code}`}; the other ranks were stopped`;
              stopOthers();
            }
            resolve();
          });
        });
      }),
    );
  } finally {
    if (killTimer) clearTimeout(killTimer);
    process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
  }
  if (failure) throw new Error(failure);
}

/** What ranks 1..N-1 of an in-process run (rank 0 is the caller) need to train alongside it. */
export interface PeerSpec {
  /** the base model directory */
  model: string;
  /** the data train() gets */
  data: unknown;
  /** train()'s options, as JSON (no callbacks) */
  options: Record<string, unknown>;
  worldSize: number;
  masterAddr?: string;
  masterPort: number;
  timeoutMs?: number;
}

/**
 * Starts ranks 1..worldSize-1 of a data-parallel train() whose rank 0 is this process (the demo's
 * runs with --nproc): each a `train-peer` process with the same model, data and options.
 * @param spec - model, data, options and where rank 0's store listens.
 * @param dir - a folder for the spec file.
 * @returns `done` (resolves when all exit 0; rejects naming the first rank that failed) and `stop` (kills them).
 * @example
 * ```ts
 * const data = { newTrain: records, flashbacks }, options = { method: 'jfa', outDir: 'runs/x' } satisfies TrainOptions;
 * const port = await freePort();
 * const peers = startPeers({ model: 'models/jfa-base', data, options, worldSize: 2, masterPort: port }, 'runs/x/peers');
 * await train(model, tokenizer, data, { ...options, distributed: { rank: 0, worldSize: 2, masterPort: port } });
 * await peers.done;
 * ```
 */
export function startPeers(spec: PeerSpec, dir: string): { done: Promise<void>; stop: () => void } {
  const file = join(dir, `peers-${process.pid}.json`);
  mkdirSync(dir, { recursive: true });
  writeFileSync(file, JSON.stringify(spec));
  const entry = join(dirname(fileURLToPath(import.meta.url)), 'train-peer.js');
  const threads = process.env.OMP_NUM_THREADS ?? String(Math.max(1, Math.floor(availableParallelism() / spec.worldSize)));
  const children = Array.from({ length: spec.worldSize - 1 }, (_, i) =>
    spawn(process.execPath, [entry, file, String(i + 1)], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, OMP_NUM_THREADS: threads } }),
  );
  const done = Promise.all(
    children.map(
      (child, i) =>
        new Promise<void>((resolve, reject) => {
          let err = '';
          child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
          child.on('error', (e) => reject(new Error(`rank ${i + 1} could not start (${e.message})`)));
          child.on('close', (code, signal) =>
            code === 0 ? resolve() : reject(new Error(`rank ${i + 1} ${signal ? `was killed by ${signal}` : `exited with code ${code}`}${err.trim() ? `: ${err.trim().split('\n').pop()}` : ''}`)),
          );
        }),
    ),
  ).then(() => undefined).finally(() => rmSync(file, { force: true }));
  done.catch(() => undefined); // the caller awaits it; a failure before that is not unhandled
  return { done, stop: () => children.forEach((c) => c.exitCode === null && c.signalCode === null && c.kill('SIGKILL')) };
}
