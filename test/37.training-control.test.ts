// The training loop as a TypeScript caller drives it: cancelled by an AbortSignal and resumed,
// async callbacks awaited (and their failures reported, not crashing the process), the model used
// between steps without changing the run, maxSteps ending a run with its adapter, a model trained
// twice, input checked with coded errors, and memory handed back after a run.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { ProcessGroup } from '../lib/distributed.js';
import { AbortError, CallbackError, CheckpointError, DataError, DistributedError, isJfaError, ModelFormatError, OptionError } from '../lib/errors.js';
import { evaluateNew } from '../lib/jfa/evaluate.js';
import { loadRun } from '../lib/jfa/run.js';
import { type StepProgress, train, type TrainOptions } from '../lib/jfa/trainer.js';
import { createModel } from '../lib/model/create.js';
import { generateStream, generateText } from '../lib/model/generate.js';
import { LlamaModel } from '../lib/model/llama.js';
import { Tokenizer } from '../lib/model/tokenizer.js';
import { node, root, tinyJfaRun } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'jfa-control-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const modelDir = join(dir, 'base');
const { suite, options: tiny } = tinyJfaRun();
const data = { newTrain: suite.newTrain.slice(0, 24), flashbacks: suite.flashbacks.slice(0, 8) };
// 6 steps a run (24 records, 2 x 2 per step).
const options: TrainOptions = { ...tiny, checkpointEvery: 4 };

beforeAll(() => createModel(modelDir, { hiddenSize: 32, intermediateSize: 64, numLayers: 2, numHeads: 2, seed: 1 }));

const load = () => LlamaModel.load(modelDir);
const tokenizer = () => Tokenizer.fromDir(modelDir);
const adapterOf = (out: string) => readFileSync(join(out, 'adapter', 'adapter_model.safetensors'));
const poolOf = (out: string) => readFileSync(join(out, 'adapter', 'latent_pool.safetensors'));
/** The error a promise rejects with. */
const rejection = async (p: Promise<unknown>): Promise<unknown> => p.then(() => expect.fail('expected a rejection'), (e: unknown) => e);

let whole: string;
beforeAll(async () => {
  whole = join(dir, 'whole');
  using model = load();
  (await train(model, tokenizer(), data, { ...options, outDir: whole })).pool?.dispose();
});

describe('cancelling a run', () => {
  it('an aborted signal stops at a step boundary with a checkpoint (ABORT_ERR); resume ends bit-identical', async () => {
    const out = join(dir, 'aborted');
    const controller = new AbortController();
    const seen: number[] = [];
    using model = load();
    const e = await rejection(train(model, tokenizer(), data, {
      ...options,
      outDir: out,
      signal: controller.signal,
      onStep: (p) => {
        seen.push(p.step);
        if (p.step === 3) controller.abort(new Error('user pressed stop'));
      },
    }));
    expect(e).toBeInstanceOf(AbortError);
    expect((e as AbortError).code).toBe('ABORT_ERR');
    expect((e as AbortError).name).toBe('AbortError');
    expect(((e as AbortError).cause as Error).message).toBe('user pressed stop');
    expect(seen).toEqual([1, 2, 3]);
    expect(JSON.parse(readFileSync(join(out, 'checkpoint', 'state.json'), 'utf8')).step).toBe(3);
    expect(existsSync(join(out, 'adapter'))).toBe(false);
    using again = load();
    (await train(again, tokenizer(), data, { ...options, outDir: out, resume: true })).pool?.dispose();
    expect(adapterOf(out).equals(adapterOf(whole))).toBe(true);
    expect(poolOf(out).equals(poolOf(whole))).toBe(true);
  });

  it('a signal aborted before the first step rejects at once and leaves nothing behind', async () => {
    const out = join(dir, 'pre-aborted');
    using model = load();
    const e = await rejection(train(model, tokenizer(), data, { ...options, outDir: out, signal: AbortSignal.abort() }));
    expect(isJfaError(e, 'ABORT_ERR')).toBe(true);
    expect(existsSync(out)).toBe(false);
  });

  it('jfa train maps SIGINT to the abort: exit 130, a checkpoint, and --resume finishes the run', async () => {
    const out = join(dir, 'sigint');
    const script = `
      import { spawn } from 'node:child_process';
      import { writeFileSync } from 'node:fs';
      const data = ${JSON.stringify(data)};
      writeFileSync(${JSON.stringify(join(dir, 'new.jsonl'))}, data.newTrain.map((r) => JSON.stringify(r)).join('\\n'));
      const child = spawn(process.execPath, ['dist/cli/main.js', 'train', '--model', ${JSON.stringify(modelDir)}, '--data', ${JSON.stringify(join(dir, 'new.jsonl'))},
        '--method', 'sft', '--out', ${JSON.stringify(out)}, '--epochs', '400', '--micro-batch', '2', '--max-tokens', '64', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let err = '';
      child.stderr.on('data', (d) => (err += d));
      // Interrupted once it has trained a few steps (metrics.jsonl exists).
      const timer = setInterval(async () => {
        const { existsSync } = await import('node:fs');
        if (existsSync(${JSON.stringify(join(out, 'metrics.jsonl'))})) { clearInterval(timer); child.kill('SIGINT'); }
      }, 50);
      child.on('exit', (code) => { console.log(JSON.stringify({ code, err })); });
    `;
    const r = node(script);
    const { code, err } = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { code: number; err: string };
    expect(code, err).toBe(130);
    expect(err).toContain('--resume');
    const step = JSON.parse(readFileSync(join(out, 'checkpoint', 'state.json'), 'utf8')).step as number;
    expect(step).toBeGreaterThan(0);
    expect(existsSync(join(out, 'adapter'))).toBe(false);
  });
});

describe('callbacks', () => {
  it('an async onStep is awaited before the next step', async () => {
    const events: string[] = [];
    using model = load();
    await train(model, tokenizer(), { newTrain: data.newTrain.slice(0, 12) }, {
      ...options,
      method: 'sft',
      onStep: async (p) => {
        events.push(`start ${p.step}`);
        await sleep(20);
        events.push(`end ${p.step}`);
      },
    });
    expect(events).toEqual([1, 2, 3].flatMap((s) => [`start ${s}`, `end ${s}`]));
  });

  it('a rejecting onStep stops the run cleanly: a CallbackError with the cause, a checkpoint, no unhandled rejection', async () => {
    const out = join(dir, 'callback-fails');
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    try {
      using model = load();
      const cause = new Error('the dashboard is down');
      const e = await rejection(train(model, tokenizer(), data, {
        ...options,
        outDir: out,
        onStep: async (p) => {
          await sleep(1);
          if (p.step === 2) throw cause;
        },
      }));
      expect(e).toBeInstanceOf(CallbackError);
      expect((e as CallbackError).code).toBe('ERR_JFA_CALLBACK');
      expect((e as CallbackError).cause).toBe(cause);
      expect((e as CallbackError).step).toBe(2);
      expect(JSON.parse(readFileSync(join(out, 'checkpoint', 'state.json'), 'utf8')).step).toBe(2);
      // The model is free again: it can generate at once.
      const [g] = await generateText(model, tokenizer(), ['hello'], { maxNewTokens: 2 });
      expect(g!.tokens).toBeGreaterThan(0);
      await sleep(20);
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it('generate(), logits() and evaluation on the training model between steps change nothing in the run', async () => {
    const out = join(dir, 'used-between');
    using model = load();
    const tok = tokenizer();
    const generated: string[] = [];
    const r = await train(model, tok, data, {
      ...options,
      outDir: out,
      onStep: async (p: StepProgress) => {
        if (p.step % 2 !== 0) return;
        const [g] = await generateText(model, tok, [data.newTrain[0]!.input], { maxNewTokens: 4 });
        generated.push(g!.text);
        const { ids } = tok.batch(['a b c']);
        model.logits(ids).dispose();
        ids.dispose();
        const scores = await evaluateNew(model, tok, data.newTrain.slice(0, 2), { maxNewTokens: 3 });
        expect(scores.predictions).toHaveLength(2);
      },
    });
    r.pool?.dispose();
    expect(generated).toHaveLength(3);
    expect(adapterOf(out).equals(adapterOf(whole))).toBe(true);
    expect(poolOf(out).equals(poolOf(whole))).toBe(true);
  });
});

describe('maxSteps, pauseAfter and a second run', () => {
  it('maxSteps ends the run with its final adapter and a schedule over those steps', async () => {
    const out = join(dir, 'max-steps');
    const lrs: number[] = [];
    using model = load();
    const r = await train(model, tokenizer(), data, { ...options, method: 'sft', epochs: 50, outDir: out, maxSteps: 4, onStep: (p) => void lrs.push(p.lr) });
    expect(r.steps).toBe(4);
    expect(r.totalSteps).toBe(4);
    expect(r.stoppedEarly).toBe(false);
    expect(existsSync(join(out, 'adapter', 'adapter_model.safetensors'))).toBe(true);
    expect(existsSync(join(out, 'checkpoint'))).toBe(false);
    // The cosine decay reaches its end at step 4: the last step's rate is the smallest.
    expect(Math.min(...lrs)).toBe(lrs.at(-1));
  });

  it('pauseAfter pauses resumably (no adapter yet)', async () => {
    const out = join(dir, 'paused');
    using model = load();
    const r = await train(model, tokenizer(), data, { ...options, outDir: out, pauseAfter: 2 });
    r.pool?.dispose();
    expect(r.stoppedEarly).toBe(true);
    expect(existsSync(join(out, 'adapter'))).toBe(false);
    expect(existsSync(join(out, 'checkpoint', 'state.json'))).toBe(true);
  });

  it('a second train() on the same model: refused with a hint, then works after removeLora() or with replaceAdapter', async () => {
    const sft: TrainOptions = { ...options, method: 'sft' };
    using model = load();
    await train(model, tokenizer(), data, { ...sft, outDir: join(dir, 'first') });
    expect(model.hasLora).toBe(true);
    const e = await rejection(train(model, tokenizer(), data, { ...sft, outDir: join(dir, 'second') }));
    expect(e).toBeInstanceOf(OptionError);
    expect((e as Error).message).toContain('removeLora()');
    expect(model.removeLora()).toBe(true);
    expect(model.hasLora).toBe(false);
    expect(model.removeLora()).toBe(false);
    await train(model, tokenizer(), data, { ...sft, outDir: join(dir, 'second') });
    await train(model, tokenizer(), data, { ...sft, outDir: join(dir, 'third'), replaceAdapter: true });
    // Each run started from the base: the same adapter as the first.
    expect(adapterOf(join(dir, 'second')).equals(adapterOf(join(dir, 'first')))).toBe(true);
    expect(adapterOf(join(dir, 'third')).equals(adapterOf(join(dir, 'first')))).toBe(true);
  });
});

describe('checked input with codes', () => {
  const refused = async (d: unknown, o: unknown) => {
    using model = load();
    return rejection(train(model, tokenizer(), d as never, o as never));
  };

  it('records with a null output or a missing field are a DataError naming the item', async () => {
    const bad = [...data.newTrain.slice(0, 2), { ...data.newTrain[2]!, output: null }, { task: 't', instruction: 'x' }];
    const e = await refused({ newTrain: bad }, { ...options, method: 'sft' });
    expect(e).toBeInstanceOf(DataError);
    expect((e as DataError).code).toBe('ERR_JFA_DATA');
    expect((e as DataError).problems).toEqual([
      "train: data.newTrain[2]: field 'output' must be a string, got null",
      "train: data.newTrain[3]: missing field 'input'; missing field 'output'",
    ]);
    const f = await refused({ newTrain: data.newTrain, flashbacks: [{ task: 'x', prompt: 42 }] }, { ...options, method: 'flashback' });
    expect((f as DataError).problems).toEqual(["train: data.flashbacks[0]: field 'prompt' must be a string, got number"]);
  });

  it('unknown option keys are refused with the nearest valid name, at the top and nested', async () => {
    const e = await refused(data, { ...options, method: 'sft', epoch: 2 });
    expect(e).toBeInstanceOf(OptionError);
    expect(e).toBeInstanceOf(RangeError);
    expect((e as OptionError).code).toBe('ERR_JFA_OPTION');
    expect((e as Error).message).toBe("train: unknown option 'epoch' (did you mean 'epochs'?)");
    expect(((await refused(data, { ...options, lora: { rank: 4 } })) as Error).message).toBe("train: lora: unknown option 'rank'");
    expect(((await refused(data, { ...options, latentOptions: { group: 2 } })) as Error).message).toBe("train: latentOptions: unknown option 'group' (did you mean 'groups'?)");
  });

  it('NaN, Infinity and null are named as what they are', async () => {
    expect(((await refused(data, { ...options, lr: Number.NaN })) as Error).message).toBe('train: lr must be a finite number > 0, got NaN');
    expect(((await refused(data, { ...options, alpha: Infinity })) as Error).message).toBe('train: alpha must be a finite number >= 0, got Infinity');
    expect(((await refused(data, { ...options, epochs: null })) as Error).message).toBe('train: epochs must be a positive integer, got null');
    expect(((await refused(data, { ...options, onStep: 'log' })) as Error).message).toBe('train: onStep must be a function, got "log"');
  });

  it('a bad model folder, a missing checkpoint and a group that never forms have their own codes', async () => {
    writeFileSync(join(dir, 'broken-config.json'), '{');
    mkdirSync(join(dir, 'broken'), { recursive: true });
    renameSync(join(dir, 'broken-config.json'), join(dir, 'broken', 'config.json'));
    expect(() => LlamaModel.load(join(dir, 'broken'))).toThrow(ModelFormatError);
    expect(isJfaError(await rejection(LlamaModel.loadAsync(join(dir, 'nowhere'))), 'ERR_JFA_MODEL_FORMAT')).toBe(true);
    using model = load();
    const c = await rejection(train(model, tokenizer(), data, { ...options, outDir: join(dir, 'never-ran'), resume: true }));
    expect(c).toBeInstanceOf(CheckpointError);
    expect((c as CheckpointError).code).toBe('ERR_JFA_CHECKPOINT');
    const g = await rejection(ProcessGroup.connect({ rank: 1, worldSize: 2, masterPort: 29000 + (process.pid % 900), timeoutMs: 300 }));
    expect(g).toBeInstanceOf(DistributedError);
    expect((g as DistributedError).code).toBe('ERR_JFA_DISTRIBUTED');
  });

  it('evaluate*(), generateText() and generateStream() check their options and records the same way', async () => {
    using model = load();
    const tok = tokenizer();
    const e = await rejection(evaluateNew(model, tok, data.newTrain.slice(0, 2), { batchSize: 2 } as never));
    expect((e as Error).message).toBe("evaluate: unknown option 'batchSize' (did you mean 'batch'?)");
    const d = await rejection(evaluateNew(model, tok, [{ ...data.newTrain[0]!, output: undefined }] as never));
    expect(isJfaError(d, 'ERR_JFA_DATA')).toBe(true);
    const a = await rejection(evaluateNew(model, tok, data.newTrain.slice(0, 4), { batch: 1, signal: AbortSignal.abort() }));
    expect(isJfaError(a, 'ABORT_ERR')).toBe(true);
    const g = await rejection(generateText(model, tok, ['x'], { maxTokens: 3 } as never));
    expect(g).toBeInstanceOf(OptionError);
    expect((g as Error).message).toBe("generateText: unknown option 'maxTokens' (did you mean 'maxNewTokens'?)");
    expect(() => generateStream(model, tok, 'x', { topk: 3 } as never)).toThrow("generateStream: unknown option 'topk' (did you mean 'topK'?)");
  });
});

describe('loadRun', () => {
  it('loads a finished jfa run with its base, adapter and retrieve pool, ready to generate; no process warning', async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    try {
      const out = join(dir, 'served');
      using model = load();
      (await train(model, tokenizer(), data, { ...options, outDir: out })).pool?.dispose();
      using run = await loadRun(out);
      expect(run.base).toBe(modelDir);
      expect(run.pool?.mode).toBe('retrieve');
      expect(run.model.hasLora).toBe(true);
      const answers = await run.generate([data.newTrain[0]!.input, data.newTrain[1]!.input], { maxNewTokens: 4 });
      expect(answers).toHaveLength(2);
      // The pool changes what the run generates: the adapter alone (latent: false) is another model.
      using plain = await loadRun(join(out, 'adapter'), { latent: false });
      expect(plain.pool).toBeUndefined();
      const { ids } = run.tokenizer.batch([data.newTrain[0]!.input]);
      const retrieval = run.pool!.retrieve(run.model, run.tokenizer, [{ task: '', prompt: data.newTrain[0]!.input }]);
      const withPool = run.model.logits(ids, { latent: retrieval });
      const alone = plain.model.logits(ids);
      const [a, b] = [withPool.toTypedArray(), alone.toTypedArray()];
      expect(a.some((v, i) => v !== b[i])).toBe(true);
      for (const t of [ids, withPool, alone, retrieval.indices, retrieval.weights]) t.dispose();
      await new Promise((r) => setImmediate(r));
      expect(warnings.map((w) => w.message)).toEqual([]);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('a folder that is not a finished run is a ModelFormatError', async () => {
    const e = await rejection(loadRun(join(dir, 'paused')));
    expect(e).toBeInstanceOf(ModelFormatError);
    expect((e as ModelFormatError).code).toBe('ERR_JFA_MODEL_FORMAT');
    expect((e as Error).message).toContain('not a finished run');
  });
});

describe('memory', () => {
  it('after train() the allocator cache is handed back: RSS within 64 MiB of the loaded model', () => {
    // A fresh process, so that RSS counts this run alone.
    const r = node(`
      import { createModel, LlamaModel, Tokenizer, train, generateSuite, memoryStats } from './dist/index.js';
      const dir = ${JSON.stringify(join(dir, 'mem-model'))};
      createModel(dir, { hiddenSize: 256, intermediateSize: 688, numLayers: 4, numHeads: 8, seed: 1 });
      const suite = generateSuite({ seed: 5, oldTrainPerSuite: 4, oldEvalPerSuite: 2, instancesPerTask: 2 });
      const model = LlamaModel.load(dir);
      const tokenizer = Tokenizer.fromDir(dir);
      const loaded = process.memoryUsage().rss;
      const r = await train(model, tokenizer, { newTrain: suite.newTrain.slice(0, 40) }, { method: 'sft', microBatch: 4, accumulation: 1, maxSteps: 10, maxTokens: 128 });
      const after = process.memoryUsage().rss;
      const cached = memoryStats().cpuCachedBytes;
      // The same run with keepCache: the cache this measurement would otherwise see.
      await train(model, tokenizer, { newTrain: suite.newTrain.slice(0, 40) }, { method: 'sft', microBatch: 4, accumulation: 1, maxSteps: 10, maxTokens: 128, keepCache: true, replaceAdapter: true });
      console.log(JSON.stringify({ steps: r.steps, loaded, after, cached, kept: memoryStats().cpuCachedBytes }));
    `);
    expect(r.status, r.stderr).toBe(0);
    const m = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { steps: number; loaded: number; after: number; cached: number; kept: number };
    const mib = (b: number) => (b / 2 ** 20).toFixed(0);
    console.log(`memory: RSS ${mib(m.loaded)} MiB loaded, ${mib(m.after)} MiB after 10 steps (cache ${mib(m.cached)} MiB; ${mib(m.kept)} MiB with keepCache)`);
    expect(m.steps).toBe(10);
    expect(m.cached).toBe(0);
    expect(m.kept).toBeGreaterThan(16 * 2 ** 20);
    expect(m.after - m.loaded).toBeLessThan(64 * 2 ** 20);
  });
});

describe('examples/pipeline: every piece as a user writes it', () => {
  const example = join(root, 'examples', 'pipeline');
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');

  it('type-checks under strict, exactOptionalPropertyTypes and noUncheckedIndexedAccess, and runs', () => {
    const link = join(example, 'node_modules', 'jfa-torch');
    if (!existsSync(link)) {
      mkdirSync(join(example, 'node_modules'), { recursive: true });
      symlinkSync(join('..', '..', '..'), link);
    }
    const built = spawnSync(process.execPath, [tsc, '-p', join(example, 'tsconfig.json')], { encoding: 'utf8', timeout: 120_000 });
    expect(built.status, built.stdout + built.stderr).toBe(0);
    const out = join(dir, 'pipeline');
    const r = spawnSync(process.execPath, [join(example, 'dist', 'main.js'), modelDir, out], { encoding: 'utf8', timeout: 300_000, env: { ...process.env, OMP_WAIT_POLICY: 'passive' } });
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toBe("options: train: unknown option 'epoch' (did you mean 'epochs'?)");
    expect(lines).toContain('cancelled: train: stopped at step 8 of 20: aborted (deadline)');
    expect(lines.filter((l) => /^step (12|18)\/20: held-out ROUGE-L \d/.test(l))).toHaveLength(2);
    expect(lines).toContain('trained: 20/20 steps (maxSteps ends the run with its adapter)');
    expect(lines).toContain('sft baseline: 20 steps');
    expect(lines.some((l) => l.startsWith("data: train: data.newTrain[0]: field 'output' must be a string, got null"))).toBe(true);
    expect(lines.some((l) => /^served: ".*" \(finish: (eos|length|stop); latent pool: yes\)$/.test(l))).toBe(true);
    expect(JSON.parse(lines.at(-1)!)).toEqual({ steps: 20, totalSteps: 20, sftSteps: 20 });
  });
});
