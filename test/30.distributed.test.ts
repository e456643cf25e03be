// Data-parallel training on c10d (Gloo over loopback): 2 ranks x 1 thread train what 1 process
// trains at the same global batch; a rank killed mid-run stops the other naming it, and the run
// resumes at another world size to the same adapter; bad launches fail in one line.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { freePort } from '../lib/bench/launch.js';
import { generateSuite, writeJsonl } from '../lib/data/index.js';
import { checkDistributed, distributedFromEnv } from '../lib/distributed.js';
import { createModel } from '../lib/model/create.js';
import { loadSafetensors } from '../lib/model/safetensors.js';
import { collectRun, maxSafetensorsDiff, root, type WorkerRun } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'jfa-dist-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const model = join(dir, 'base');
const worker = join(root, 'test', 'distributed', 'worker.mjs');
const TOLERANCE = 1e-5;

beforeAll(() => createModel(model, { hiddenSize: 32, intermediateSize: 64, numLayers: 2, numHeads: 2, seed: 1 }));

type Run = WorkerRun;

/** One worker process (test/distributed/worker.mjs); `onLine` sees its stdout lines as they come. */
function runWorker(args: Record<string, unknown>, onLine?: (line: string, pid: number) => void): Promise<Run> {
  const child = spawn(process.execPath, [worker, JSON.stringify({ model, ...args })], {
    cwd: root,
    env: { ...process.env, OMP_NUM_THREADS: '1', RANK: undefined, WORLD_SIZE: undefined },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return collectRun(child, onLine);
}

/** Both ranks of a 2-process run on a fresh port. */
async function twoRanks(args: Record<string, unknown>, perRank: Record<string, unknown>[] = [{}, {}]): Promise<Run[]> {
  const port = await freePort();
  return Promise.all([0, 1].map((rank) => runWorker({ ...args, rank, world: 2, port, ...perRank[rank] })));
}

const maxDiff = maxSafetensorsDiff;

const lastLine = (s: string) => s.trim().split('\n').filter((l) => !/Warning|trace-warnings/.test(l)).pop() ?? '';
// 40 records in micro-batches of 2, 2 per step, 2 epochs: 20 steps of JFA (PCGrad, latent tasks, a flashback micro-batch).
const RUN = { extra: { epochs: 2 } };

describe('data-parallel training (c10d, Gloo on loopback)', () => {
  const one = join(dir, 'one');
  const two = join(dir, 'two');

  it('2 ranks x 1 thread train the same adapter and latent pool as 1 process over 20 steps of JFA with PCGrad', async () => {
    const [single, ranks] = await Promise.all([runWorker({ ...RUN, out: one }), twoRanks({ ...RUN, out: two })]);
    for (const r of [single, ...ranks!]) expect(r.code, r.stderr).toBe(0);
    expect(ranks!.map((r) => lastLine(r.stdout))).toEqual(['done 20', 'done 20']);
    for (const file of ['adapter_model.safetensors', 'latent_pool.safetensors']) {
      const d = maxDiff(join(one, 'adapter', file), join(two, 'adapter', file));
      expect(d, file).toBeLessThan(TOLERANCE);
    }
    // The run really trained: PCGrad projected, the divergence and the pool moved, and the logged losses agree.
    const log = (d: string) => readFileSync(join(d, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { sft: number; divergence: number; conflicts: number });
    const [a, b] = [log(one), log(two)];
    expect(b).toHaveLength(20);
    expect(b.some((l) => l.conflicts > 0)).toBe(true);
    expect(b.some((l) => l.divergence > 0)).toBe(true);
    a.forEach((l, i) => expect(Math.abs(l.sft - b[i]!.sft)).toBeLessThan(1e-4));
    const pool = loadSafetensors(join(two, 'adapter', 'latent_pool.safetensors')).tensors;
    const B = Object.entries(pool).find(([k]) => /(^|\.)B$/.test(k))?.[1]?.toTypedArray() as Float32Array | undefined;
    expect(B && B.some((v) => v !== 0)).toBe(true);
  });

  it('uneven and empty shards (micro-batches of 3, the last of 1) still sum to the single-process gradients', async () => {
    const extra = { microBatch: 3 };
    const [single, ranks] = await Promise.all([runWorker({ out: join(dir, 'one-3'), extra }), twoRanks({ out: join(dir, 'two-3'), extra })]);
    for (const r of [single, ...ranks!]) expect(r.code, r.stderr).toBe(0);
    for (const file of ['adapter_model.safetensors', 'latent_pool.safetensors'])
      expect(maxDiff(join(dir, 'one-3', 'adapter', file), join(dir, 'two-3', 'adapter', file)), file).toBeLessThan(TOLERANCE);
  });

  it('a streamed run shards each micro-batch as an array run: 2 ranks end at the 1-process adapter', async () => {
    // 40 records in windows of 7 (dividing neither the records nor a step's 4), across an epoch's end.
    const args = { stream: true, extra: { method: 'jfa-no-latent', maxSteps: 14, streamWindow: 7 } };
    const [single, ranks] = await Promise.all([runWorker({ ...args, out: join(dir, 'one-stream') }), twoRanks({ ...args, out: join(dir, 'two-stream') })]);
    for (const r of [single, ...ranks!]) expect(r.code, r.stderr).toBe(0);
    expect(ranks!.map((r) => lastLine(r.stdout))).toEqual(['done 14', 'done 14']);
    const file = 'adapter_model.safetensors';
    expect(maxDiff(join(dir, 'one-stream', 'adapter', file), join(dir, 'two-stream', 'adapter', file))).toBeLessThan(TOLERANCE);
  });

  it('kill -9 of one rank: the other exits non-zero within the timeout naming it; a resume at world size 1 ends at the 2-rank adapter', async () => {
    const out = join(dir, 'killed');
    const timeoutMs = 10_000;
    const port = await freePort();
    const args = { ...RUN, out, checkpointEvery: 2, timeoutMs, world: 2, port };
    let killedAt = 0;
    const [r0, r1] = await Promise.all([
      runWorker({ ...args, rank: 0 }),
      // Rank 1 hangs after step 9 and is killed there: rank 0 is then inside step 10's all-reduce.
      runWorker({ ...args, rank: 1, stallAfter: 9 }, (line, pid) => {
        if (line !== 'stalled') return;
        killedAt = performance.now();
        process.kill(pid, 'SIGKILL');
      }),
    ]);
    expect(r1!.signal).toBe('SIGKILL');
    expect(r0!.code).toBe(1);
    expect(r0!.stderr.trim().split('\n')).toHaveLength(1);
    expect(r0!.stderr).toMatch(/^distributed \(rank 0 of 2, 127\.0\.0\.1:\d+\): the all-reduce of micro-batch \d+ failed: rank 1 stopped responding/);
    expect(r0!.endedAt - killedAt).toBeLessThan(timeoutMs);
    // Rank 0's last checkpoint (step 8) is intact and the run resumes from it in one process.
    expect(JSON.parse(readFileSync(join(out, 'checkpoint', 'state.json'), 'utf8')).step).toBe(8);
    const resumed = await runWorker({ ...RUN, out, checkpointEvery: 2, resume: true });
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(lastLine(resumed.stdout)).toBe('done 20');
    for (const file of ['adapter_model.safetensors', 'latent_pool.safetensors'])
      expect(maxDiff(join(out, 'adapter', file), join(two, 'adapter', file)), file).toBeLessThan(TOLERANCE);
  });
});

describe('jfa train --nproc', () => {
  it('starts the workers with rank-prefixed output and trains the adapter; a bad --rank is one line', async () => {
    const out = join(dir, 'cli');
    const suite = generateSuite({ seed: 5, oldTrainPerSuite: 4, oldEvalPerSuite: 2, instancesPerTask: 1 });
    writeJsonl(join(dir, 'new.jsonl'), suite.newTrain.slice(0, 16));
    writeJsonl(join(dir, 'fb.jsonl'), suite.flashbacks.slice(0, 4));
    const cli = (...args: string[]) =>
      new Promise<Run>((resolve) => {
        const child = spawn(process.execPath, [join(root, 'dist', 'cli', 'main.js'), ...args], { cwd: root, env: { ...process.env, RANK: undefined, WORLD_SIZE: undefined }, stdio: ['ignore', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
        child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr, endedAt: performance.now() }));
      });
    const common = ['--model', model, '--data', join(dir, 'new.jsonl'), '--flashbacks', join(dir, 'fb.jsonl'), '--method', 'jfa', '--micro-batch', '2', '--accumulation', '2', '--max-tokens', '64'];
    const r = await cli('train', ...common, '--out', out, '--nproc', '2', '--json');
    expect(r.code, r.stderr).toBe(0);
    const summary = r.stdout.trim().split('\n').find((l) => l.startsWith('[rank 0] {'));
    expect(summary && JSON.parse(summary.slice('[rank 0] '.length)).steps).toBe(4);
    expect(r.stdout.split('\n').filter((l) => l && !l.startsWith('[rank ')).length).toBe(0);
    expect(loadSafetensors(join(out, 'adapter', 'adapter_model.safetensors')).names.length).toBeGreaterThan(0);
    const bad = await cli('train', ...common, '--out', join(dir, 'cli-bad'), '--rank', '2', '--world-size', '2', '--master-port', String(await freePort()));
    expect(bad.code).toBe(1);
    expect(bad.stderr.trim()).toBe('jfa: distributed: RANK 2 is out of range for WORLD_SIZE 2 (ranks are 0..1)');
  });
});

describe('bad launches: one-line errors', () => {
  it('a port already in use', async () => {
    const port = await freePort();
    const server: Server = createServer();
    await new Promise<void>((resolve) => server.listen(port, '0.0.0.0', resolve));
    try {
      const r = await runWorker({ rank: 0, world: 2, port, timeoutMs: 5000 });
      expect(r.code).toBe(1);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toContain(`cannot listen on MASTER_PORT ${port} (the port is already in use`);
      expect(r.stderr).toContain('rank 0 of 2');
    } finally {
      server.close();
    }
  });

  it('a WORLD_SIZE the ranks disagree on', async () => {
    const [r0, r1] = await twoRanks({ timeoutMs: 10_000 }, [{}, { world: 3 }]);
    expect(r0!.code).toBe(1);
    expect(r1!.code).toBe(1);
    expect(lastLine(r0!.stderr)).toContain('WORLD_SIZE differs between ranks: rank 1 has 3, this rank 2');
    expect(lastLine(r1!.stderr)).toContain('WORLD_SIZE differs between ranks: rank 0 has 2, this rank 3');
    expect(r0!.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('ranks with different configs', async () => {
    const [r0, r1] = await twoRanks({ timeoutMs: 10_000 }, [{}, { extra: { lr: 1e-3 } }]);
    for (const r of [r0!, r1!]) {
      expect(r.code).toBe(1);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toContain("rank 1's config differs from rank 0's (lr 0.005 vs 0.001)");
    }
  });

  it('a rank outside the world, and bad variables', async () => {
    const r = await runWorker({ rank: 2, world: 2, port: await freePort() });
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe('distributed: RANK 2 is out of range for WORLD_SIZE 2 (ranks are 0..1)');
    expect(() => distributedFromEnv({ RANK: '0', WORLD_SIZE: 'two' })).toThrow("distributed: WORLD_SIZE must be an integer >= 1, got 'two'");
    expect(() => distributedFromEnv({ RANK: '1' })).toThrow('WORLD_SIZE is not set');
    expect(distributedFromEnv({ RANK: '1', WORLD_SIZE: '4', MASTER_ADDR: 'h', MASTER_PORT: '1234' })).toEqual({ rank: 1, worldSize: 4, masterAddr: 'h', masterPort: 1234 });
    expect(distributedFromEnv({})).toBeUndefined();
    expect(() => checkDistributed({ rank: 0, worldSize: 2, masterPort: 70000 })).toThrow('masterPort must be an integer in 1..65535, got 70000');
  });
});
