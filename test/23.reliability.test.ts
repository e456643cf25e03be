// Reliability: the hostile-input corpus (test/reliability/corpus.ts) over the command, the library
// and the file readers, counted. Ends with one summary line:
// "reliability: N cases tried, N clean errors, N crashes, N partial outputs left, N kills survived".
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { writeJsonl } from '../lib/data/jsonl.js';
import { createRng } from '../lib/data/rng.js';
import { LOCK_FILE } from '../lib/util/files.js';
import { train, type TrainOptions } from '../lib/jfa/trainer.js';
import { createModel } from '../lib/model/create.js';
import { LlamaModel } from '../lib/model/llama.js';
import { emptyCpuCache, memoryStats } from '../lib/runtime.js';
import { Tokenizer } from '../lib/model/tokenizer.js';
import { CASES, type Ctx, type Fixtures, mounts } from './reliability/corpus.js';
import { root } from './helpers.js';

const tally = { tried: 0, clean: 0, crashes: 0, partial: 0, kills: 0, unclear: [] as string[] };
let fixtures: Fixtures;
let base: string;

/** Runs `jfa ...args` in `cwd`; resolves with its exit status, signal and stderr. */
function jfa(args: string[], cwd: string): Promise<{ status: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(root, 'dist', 'cli', 'main.js'), ...args], { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stderr });
    });
  });
}

/** The names in `dir`, or none while it does not exist (a run may be creating or removing it). */
function entries(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** Every path under `dir`, relative to it. */
function listing(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).sort();
}

/** The tiny jfa settings every training run of this file uses (a latent pool of 2 x 2 tasks). */
const TINY_JFA: TrainOptions = {
  method: 'jfa',
  microBatch: 2,
  accumulation: 2,
  maxTokens: 32,
  lora: { r: 2, loraAlpha: 4 },
  latentOptions: { groups: 2, perGroup: 2, k: 1, rank: 2 },
  seed: 1,
};

/** `n` new-task records over `tasks` tasks: repeat a word. */
const wordRecords = (n: number, tasks: number) =>
  Array.from({ length: n }, (_, i) => ({ task: `t${i % tasks}`, instruction: 'Repeat the word.', input: `w${i}`, output: `w${i} w${i}` }));
/** `n` flashback prompts over two old tasks. */
const questionFlashbacks = (n: number) => Array.from({ length: n }, (_, i) => ({ task: `old${i % 2}`, prompt: `Question ${i}?` }));

async function buildFixtures(dir: string): Promise<Fixtures> {
  const model = join(dir, 'model');
  const otherModel = join(dir, 'other-model');
  createModel(model, { hiddenSize: 32, numLayers: 1, numHeads: 2, seed: 1 });
  createModel(otherModel, { hiddenSize: 48, numLayers: 1, numHeads: 2, seed: 2 });
  const data = join(dir, 'new.jsonl');
  const flashbacks = join(dir, 'flashbacks.jsonl');
  const records = wordRecords(8, 2);
  writeJsonl(data, records);
  writeJsonl(flashbacks, questionFlashbacks(4));
  const options = TINY_JFA;
  const trainOn = async (dirOf: string, out: string, o: TrainOptions) => {
    using m = LlamaModel.load(dirOf);
    const r = await train(m, Tokenizer.fromDir(dirOf), { newTrain: records, flashbacks: [{ task: 'old', prompt: 'Why?' }, { task: 'old', prompt: 'How?' }] }, { ...o, outDir: out });
    r.pool?.dispose();
  };
  await trainOn(model, join(dir, 'run'), options);
  await trainOn(otherModel, join(dir, 'other-run'), options);
  // An sft run stopped after one step: its folder holds a checkpoint to (wrongly) resume a jfa run from.
  await trainOn(model, join(dir, 'stopped'), { ...options, method: 'sft', pauseAfter: 1 });
  return {
    model,
    otherModel,
    data,
    flashbacks,
    adapter: join(dir, 'run', 'adapter'),
    otherAdapter: join(dir, 'other-run', 'adapter'),
    otherRun: join(dir, 'stopped'),
  };
}

beforeAll(async () => {
  base = mkdtempSync(join(tmpdir(), 'jfa-reliability-'));
  fixtures = await buildFixtures(join(base, 'fixtures'));
});

afterAll(() => {
  console.log(
    `reliability: ${tally.tried} cases tried, ${tally.clean} clean errors, ${tally.crashes} crashes, ${tally.partial} partial outputs left, ${tally.kills} kills survived` +
      (tally.unclear.length ? `; not clean: ${tally.unclear.join(', ')}` : ''),
  );
  if (base) rmSync(base, { recursive: true, force: true });
});

describe('hostile inputs: every case fails with a clear error, no crash, nothing left behind', () => {
  it('the corpus has unique ids and covers the command, the library and the readers', () => {
    expect(new Set(CASES.map((c) => c.id)).size).toBe(CASES.length);
    expect(CASES.filter((c) => c.argv).length).toBeGreaterThan(30);
    expect(CASES.filter((c) => c.call).length).toBeGreaterThan(30);
  });

  for (const k of CASES) {
    it(k.id, async () => {
      const dir = join(base, 'cases', k.id.replace(/[^\w.-]+/g, '_'));
      mkdirSync(dir, { recursive: true });
      const c: Ctx = { ...fixtures, dir };
      tally.tried += 1;
      let message = '';
      let crashed = false;
      let before: string[] = [];
      try {
        if (k.argv) {
          const args = k.argv(c);
          before = listing(dir);
          const r = await jfa(args, dir);
          message = r.stderr;
          crashed = r.signal !== null || (r.status !== 0 && r.status !== 1);
          expect(r.status, `${k.id}: exit status (stderr: ${r.stderr})`).toBe(1);
          expect(r.stderr, 'no stack trace').not.toMatch(/^\s+at /m);
          expect(r.stderr.startsWith('jfa: ') || r.stderr.startsWith('error: '), r.stderr).toBe(true);
        } else {
          let thrown: unknown;
          try {
            await k.call!(c);
          } catch (e) {
            thrown = e;
          }
          before = listing(dir).filter((p) => !p.startsWith('run'));
          expect(thrown, `${k.id}: expected an error`).toBeInstanceOf(Error);
          message = (thrown as Error).message;
        }
        const after = listing(dir);
        const left = after.filter((p) => !before.includes(p));
        if (left.length) tally.partial += 1;
        expect(left, 'partial output left behind').toEqual([]);
        expect(message, message).toContain(k.names(c));
        expect(message, message).toMatch(k.says);
        tally.clean += 1;
      } catch (e) {
        if (crashed) tally.crashes += 1;
        tally.unclear.push(k.id);
        throw e;
      } finally {
        while (mounts.length) spawnSync('umount', [mounts.pop()!]);
        if (existsSync(dir)) rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});

// --- runs that are interrupted: a second run, a full disk, kills -------------------------------

interface Scenario {
  dir: string;
  args: (out: string) => string[];
}
let scenario: Scenario;

/** A tiny jfa run through the command: 18 steps of 2 records, a checkpoint after every step. */
function makeScenario(dir: string): Scenario {
  mkdirSync(dir, { recursive: true });
  const data = join(dir, 'new.jsonl');
  const flashbacks = join(dir, 'flashbacks.jsonl');
  writeJsonl(data, wordRecords(36, 4));
  writeJsonl(flashbacks, questionFlashbacks(8));
  return {
    dir,
    args: (out) => [
      'train', '--model', fixtures.model, '--data', data, '--flashbacks', flashbacks, '--method', 'jfa', '--out', out,
      '--micro-batch', '2', '--accumulation', '1', '--max-tokens', '32', '--r', '2', '--checkpoint-every', '1', '--seed', '1', '--json',
    ],
  };
}

/** Starts `jfa ...args`; `done` resolves with how it ended and its stderr. */
function start(args: string[]) {
  const child = spawn(process.execPath, [join(root, 'dist', 'cli', 'main.js'), ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<{ status: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) =>
    child.on('close', (status, signal) => resolve({ status, signal, stderr })),
  );
  return { child, done };
}

/** The trained result of a run folder: the adapter's weights and its latent pool, as bytes. */
function result(out: string): { adapter: Buffer; pool: Buffer } {
  return { adapter: readFileSync(join(out, 'adapter', 'adapter_model.safetensors')), pool: readFileSync(join(out, 'adapter', 'latent_pool.safetensors')) };
}

let reference: { adapter: Buffer; pool: Buffer };
/** How long the uninterrupted run took, start to exit: random kills fall within it, whatever the machine's speed. */
let referenceMs = 0;

describe('runs that are interrupted', () => {
  beforeAll(async () => {
    scenario = makeScenario(join(base, 'scenario'));
    const t0 = performance.now();
    const r = await start(scenario.args(join(scenario.dir, 'reference'))).done;
    referenceMs = performance.now() - t0;
    expect(r.status, r.stderr).toBe(0);
    reference = result(join(scenario.dir, 'reference'));
  });

  it('a second run on a folder in use is refused; a lock left by a dead process is taken over', async () => {
    const out = join(scenario.dir, 'locked');
    const first = start(scenario.args(out));
    // Wait until the first run holds the folder (its lock file written), then start the second. The
    // first is stopped (SIGSTOP) meanwhile: alive and holding the lock, it cannot finish before the
    // second looks, however slowly the second starts on a loaded machine.
    const held = () => existsSync(join(out, LOCK_FILE)) && readFileSync(join(out, LOCK_FILE), 'utf8').includes('"pid"');
    while (!held()) await new Promise((r) => setTimeout(r, 20));
    process.kill(first.child.pid!, 'SIGSTOP');
    const second = await start(scenario.args(out)).done.finally(() => process.kill(first.child.pid!, 'SIGCONT'));
    expect(second.status).toBe(1);
    expect(second.stderr).toMatch(new RegExp(`jfa: train: the output folder .*locked is in use by another run \\(pid ${first.child.pid} `));
    const a = await first.done;
    expect(a.status, a.stderr).toBe(0);
    expect(existsSync(join(out, LOCK_FILE)), 'the lock is released at the end').toBe(false);
    expect(result(out)).toEqual(reference);

    // A lock whose process is gone (a pid that has exited) is stale: the next run takes it over.
    const gone = spawnSync(process.execPath, ['-e', 'process.pid']).pid!;
    writeFileSync(join(out, LOCK_FILE), `${JSON.stringify({ pid: gone, host: hostname(), since: new Date().toISOString(), command: 'jfa train' })}\n`);
    rmSync(join(out, 'adapter'), { recursive: true });
    const third = await start(scenario.args(out)).done;
    expect(third.status, third.stderr).toBe(0);
    expect(result(out)).toEqual(reference);
    // So is a lock file cut short by a crash (empty, and not fresh).
    writeFileSync(join(out, LOCK_FILE), '');
    utimesSync(join(out, LOCK_FILE), new Date(Date.now() - 60_000), new Date(Date.now() - 60_000));
    const fourth = await start(scenario.args(out)).done;
    expect(fourth.status, fourth.stderr).toBe(0);
  }, 600_000);

  it('a full disk while a checkpoint is written: a clear error, the previous checkpoint intact, and the run resumes to the same adapter', async () => {
    // Size a tmpfs to hold one checkpoint, the metrics and the lock, but not a second checkpoint beside the first.
    const page = 4096;
    const pages = (dir: string): number =>
      listing(dir).reduce((n, p) => (statSync(join(dir, p)).isFile() ? n + Math.ceil(statSync(join(dir, p)).size / page) : n), 0);
    // A run stopped as soon as its first checkpoint exists tells the checkpoint's size.
    const killer = start([...scenario.args(join(scenario.dir, 'sizing')), '--epochs', '3']);
    while (!existsSync(join(scenario.dir, 'sizing', 'checkpoint', 'state.json'))) await new Promise((r) => setTimeout(r, 5));
    killer.child.kill('SIGKILL');
    await killer.done;
    const checkpointPages = pages(join(scenario.dir, 'sizing', 'checkpoint'));
    const sizeKiB = Math.ceil((checkpointPages * 1.5 + 4) * (page / 1024));

    const out = join(scenario.dir, 'full');
    const copy = join(scenario.dir, 'after-full');
    mkdirSync(out);
    // A mount namespace of its own (unshare): the tmpfs exists only for this run, whatever happens to the test.
    const node = [process.execPath, join(root, 'dist', 'cli', 'main.js'), ...scenario.args(out)].map((a) => `'${a}'`).join(' ');
    const script = `mount -t tmpfs -o size=${sizeKiB}k tmpfs '${out}' || exit 99; ${node}; echo "exit $?" >&2; cp -a '${out}/.' '${copy}/'`;
    mkdirSync(copy);
    const r = spawnSync('unshare', [...(process.getuid?.() === 0 ? [] : ['-r']), '-m', 'sh', '-c', script], { encoding: 'utf8', timeout: 300_000 });
    expect(r.stderr, 'the tmpfs could be mounted').not.toMatch(/exit 99|Operation not permitted/);
    expect(r.stderr).toMatch(/exit 1\n/);
    const message = r.stderr.split('\n').find((l) => l.startsWith('jfa: ')) ?? '';
    expect(message).toMatch(/^jfa: train: cannot write (the checkpoint of step \d+|the adapter|.*metrics\.jsonl).*(ENOSPC|No space left on device)/);
    expect(message).toMatch(/the checkpoint of step \d+ in .* is intact: fix the cause and rerun with --resume/);
    const left = listing(copy);
    expect(left.filter((p) => /\.tmp-\d+/.test(p)), 'no temporary folder left').toEqual([]);
    expect(left).not.toContain(LOCK_FILE);
    const step = (JSON.parse(readFileSync(join(copy, 'checkpoint', 'state.json'), 'utf8')) as { step: number }).step;
    expect(step).toBeGreaterThan(0);
    // The disk has room again: the run resumes from that checkpoint and ends where the uninterrupted one did.
    const resumed = await start([...scenario.args(copy), '--resume']).done;
    expect(resumed.status, resumed.stderr).toBe(0);
    expect(result(copy)).toEqual(reference);
  }, 600_000);

  it('20 kills (-9) at random moments and during checkpoint writes: every resume finishes, bit-identical to the uninterrupted run', async () => {
    const out = join(scenario.dir, 'killed');
    const rng = createRng(20);
    let kills = 0;
    let duringWrites = 0;
    let completed = 0;
    for (let attempt = 0; kills < 20; attempt++) {
      expect(attempt, 'too many runs that ended before they could be killed').toBeLessThan(60);
      const resume = existsSync(join(out, 'checkpoint')) || existsSync(join(out, 'checkpoint.old'));
      const run = start([...scenario.args(out), ...(resume ? ['--resume'] : [])]);
      let killed = false;
      const kill = () => {
        if (!killed && run.child.exitCode === null) {
          killed = run.child.kill('SIGKILL');
          // What the kill interrupted: a checkpoint or the adapter half-written beside the last one.
          if (killed && entries(out).some((p) => /^(checkpoint|adapter)\.(tmp-\d+|old)$/.test(p))) duringWrites += 1;
        }
      };
      if (kills % 2 === 0) {
        setTimeout(kill, referenceMs * (0.1 + 0.85 * rng.next()));
      } else {
        // As soon as a checkpoint is being written.
        void (async () => {
          while (!killed && run.child.exitCode === null) {
            if (entries(out).some((p) => /^checkpoint\.tmp-\d+$/.test(p))) kill();
            else await new Promise((r) => setTimeout(r, 1));
          }
        })();
      }
      const r = await run.done;
      if (killed && r.signal === 'SIGKILL') {
        kills += 1;
        continue;
      }
      // It finished before the kill came: it must have finished well, with the reference's adapter.
      expect(r.status, r.stderr).toBe(0);
      expect(result(out)).toEqual(reference);
      completed += 1;
      rmSync(out, { recursive: true, force: true });
    }
    // The last killed run, resumed to the end.
    const resume = existsSync(join(out, 'checkpoint')) || existsSync(join(out, 'checkpoint.old'));
    const last = await start([...scenario.args(out), ...(resume ? ['--resume'] : [])]).done;
    expect(last.status, last.stderr).toBe(0);
    expect(result(out)).toEqual(reference);
    // Nothing a kill interrupted is left: no temporary, half-deleted or old folder, no checkpoint.
    expect(entries(out).filter((p) => /^checkpoint|\.(tmp|trash)-\d+$|\.old$/.test(p))).toEqual([]);
    tally.kills = kills;
    console.log(`kills: ${kills} survived (${duringWrites} during a checkpoint write), ${completed + 1} runs completed, every adapter and pool bit-identical`);
    expect(duringWrites).toBeGreaterThan(0);
  }, 900_000);
});

// --- a long run ----------------------------------------------------------------------------------

describe('a long run', () => {
  // 10,000 steps, or as many as fit in JFA_LONG_RUN_SECONDS (default 300 s), but at least 4,000.
  // Memory is measured after the first 2,000 (malloc's arenas and libtorch's caches warm up first:
  // RSS rises by a few MiB over them, then stays).
  const budget = Number(process.env.JFA_LONG_RUN_SECONDS ?? 300);
  const warmUp = 2000;

  it('trains for thousands of steps with flat memory and a responsive event loop', async () => {
    const records = wordRecords(64, 4);
    const flashbacks = questionFlashbacks(8);
    const options: TrainOptions = { ...TINY_JFA, accumulation: 1, checkpointEvery: 1000, outDir: join(base, 'long') };
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    using model = LlamaModel.load(fixtures.model);
    const tokenizer = Tokenizer.fromDir(fixtures.model);
    // Time 100 steps, then plan the run: 10,000 steps or what fits in the budget.
    const t0 = performance.now();
    const probe = await train(model, tokenizer, { newTrain: records, flashbacks }, { ...options, outDir: undefined, maxSteps: 100, epochs: 1000 });
    probe.pool?.dispose();
    const perStep = (performance.now() - t0) / 100;
    const steps = Math.max(2 * warmUp, Math.min(10_000, Math.floor((budget * 1000) / perStep)));
    const epochs = Math.ceil(steps / (records.length / 2));

    using fresh = LlamaModel.load(fixtures.model);
    const lag = monitorEventLoopDelay({ resolution: 10 });
    const rss: Array<[number, number]> = [];
    const heap: Array<[number, number]> = [];
    const net: Array<[number, number]> = [];
    const allocated: Array<[number, number]> = [];
    const live: Array<[number, number]> = [];
    lag.enable();
    const r = await train(fresh, tokenizer, { newTrain: records, flashbacks }, {
      ...options,
      epochs,
      maxSteps: steps,
      onStep: (p) => {
        if (p.step % 250 === 0) {
          // Collected and trimmed first (gc, then the allocator's cache and malloc's free memory handed
          // back), so that garbage not yet collected and free heap pages do not read as growth.
          gc();
          emptyCpuCache();
          const m = process.memoryUsage();
          const n = memoryStats();
          rss.push([p.step, m.rss]);
          heap.push([p.step, m.heapUsed + m.external]);
          net.push([p.step, m.rss - n.cpuCachedBytes]);
          allocated.push([p.step, n.cpuAllocatedBytes]);
          live.push([p.step, n.liveTensors]);
        }
      },
    });
    lag.disable();
    r.pool?.dispose();
    expect(r.steps).toBe(steps);
    // Slopes over the steps after the warm-up, by least squares, in KiB per 1000 steps: of the process's RSS, and of the JavaScript heap (with external memory).
    const slope = (samples: Array<[number, number]>) => {
      const tail = samples.filter(([s]) => s > warmUp);
      const mx = tail.reduce((a, [s]) => a + s, 0) / tail.length;
      const my = tail.reduce((a, [, m]) => a + m, 0) / tail.length;
      return ((tail.reduce((a, [s, m]) => a + (s - mx) * (m - my), 0) / tail.reduce((a, [s]) => a + (s - mx) ** 2, 0)) * 1000) / 1024;
    };
    const tail = rss.filter(([s]) => s > warmUp);
    const kibPer1000 = slope(rss);
    const p99 = lag.percentile(99) / 1e6;
    const growth = { rss: kibPer1000, net: slope(net), heap: slope(heap), tensors: slope(allocated) };
    console.log(
      `long run: ${steps} steps in ${(r.elapsedMs / 1000).toFixed(1)} s (${(r.elapsedMs / steps).toFixed(1)} ms/step), ` +
        `RSS ${(tail[0]![1] / 2 ** 20).toFixed(0)} -> ${(tail.at(-1)![1] / 2 ** 20).toFixed(0)} MiB; growth in KiB per 1000 steps: ` +
        `RSS ${growth.rss.toFixed(1)}, RSS without the allocator's reuse cache ${growth.net.toFixed(1)}, JS heap ${growth.heap.toFixed(1)}, ` +
        `bytes in live tensors ${growth.tensors.toFixed(1)}; live tensors ${live.filter(([s]) => s > warmUp)[0]![1]} -> ${live.at(-1)![1]}; ` +
        `event-loop lag p99 ${p99.toFixed(1)} ms, max ${(lag.max / 1e6).toFixed(1)} ms`,
    );
    expect(p99).toBeLessThan(50);
    // No tensor is left behind per step, and nothing else grows: a leak of one small tensor per step
    // would add 1 to the live count per step and 1+ MiB per 1000 steps.
    expect(live.at(-1)![1]).toBeLessThanOrEqual(live.filter(([s]) => s > warmUp)[0]![1]);
    expect(growth.tensors).toBeLessThan(64);
    expect(growth.heap).toBeLessThan(256);
    expect(growth.net).toBeLessThan(1024);
  }, 900_000);
});
