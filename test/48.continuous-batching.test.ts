// Continuous batching (core/continuous_session.h, lib/model/continuous.ts): a slot whose prompt ended
// is refilled with the next, and every prompt still gets exactly the tokens it gets alone (batch 1):
// mixed prompt lengths and output lengths (some end at once, some run to maxNewTokens), prompts that
// share an instruction, with a LoRA adapter, with a latent pool through evaluation, and abort part-way.
//
// That the comparison catches a refilled slot computed wrongly was checked by hand (2026-12-07): with
// the refill's position off by one (`position_[s] = len + 1` in ContinuousSession::refill), all
// six comparison tests fail (every prompt enters through a refill, and its tokens after the first differ).
// With the positions of the tokens after a shared prefix off by one (`+ (shared ? 1 : 0)` on the rest's
// positions in refill), the shared-instruction test fails, and three others whose refills share a
// prefix too.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

import { type InstanceRecord } from '../lib/data/records.js';
import { isJfaError } from '../lib/errors.js';
import { evaluateNew } from '../lib/jfa/evaluate.js';
import { promptText } from '../lib/jfa/examples.js';
import { embedRecords, LatentTasks } from '../lib/jfa/latent.js';
import { LatentPool } from '../lib/jfa/pool.js';
import { generateContinuous } from '../lib/model/continuous.js';
import { type GeneratedText, generateText } from '../lib/model/generate.js';
import { LlamaModel } from '../lib/model/llama.js';
import { Tokenizer } from '../lib/model/tokenizer.js';
import { memoryStats } from '../lib/runtime.js';
import { randn, zeros } from '../lib/tensor.js';
import { root, tinyJfaRun } from './helpers.js';

const shipped = `${root}/models/jfa-base`;
let tokenizer: Tokenizer;
let records: InstanceRecord[];
let prompts: string[];
/** The base model's tokens for each prompt alone. */
let one: GeneratedText[];

const MAX = 20;

beforeAll(async () => {
  tokenizer = Tokenizer.fromDir(shipped);
  // New-task prompts (answered at length, some to maxNewTokens) and old-task prompts (longer
  // answers): mixed prompt lengths, in no particular order.
  const { suite } = tinyJfaRun();
  records = [...suite.newEval.slice(0, 8), ...Object.values(suite.old).flatMap((s) => s.eval.slice(0, 1)), ...suite.newTrain.slice(0, 6)];
  // Old-task prompts followed by their own answer: a base that learned to end its answers ends
  // these at the first token (the shipped base ends none of the plain prompts at once). After the
  // records, so that `one` starts with the records' tokens.
  const answered = Object.values(suite.old).flatMap((s) => s.eval.slice(1, 2)).map((r) => promptText(r) + r.output);
  prompts = [...records.map(promptText), ...answered];
  using base = LlamaModel.load(shipped);
  one = await alone(base);
});

/** Each prompt alone: generateText with a batch of one. */
async function alone(model: LlamaModel, options: Parameters<typeof generateText>[3] = {}): Promise<GeneratedText[]> {
  const out: GeneratedText[] = [];
  for (const p of prompts) out.push(...(await generateText(model, tokenizer, [p], { ...options, maxNewTokens: MAX })));
  return out;
}

/** A random tensor of `shape` times `std`. */
const scaled = (shape: number[], std: number, seed: number) => zeros(shape).add(randn(shape, { seed }), std);

describe('continuous batching gives each prompt its batch-1 tokens', () => {
  let model: LlamaModel;
  beforeAll(() => {
    model = LlamaModel.load(shipped);
  });
  afterAll(() => model.dispose());

  it('mixed lengths; some end at once, some at maxNewTokens; few slots, so most prompts are refills', async () => {
    const lengths = one.map((r) => r.tokens);
    // The cases the test needs are there: an end at the first token, ends part-way, and runs to the limit.
    expect(lengths).toContain(0);
    expect(one.some((r) => r.finishReason === 'length')).toBe(true);
    expect(one.some((r) => r.finishReason === 'eos' && r.tokens > 0)).toBe(true);
    expect(new Set(prompts.map((p) => tokenizer.encode(p).length)).size).toBeGreaterThan(5);
    for (const slots of [1, 3, 8, 64]) {
      const done: number[] = [];
      const got = await generateContinuous(model, tokenizer, prompts, { slots, maxNewTokens: MAX, onDone: (d) => done.push(d) });
      expect(got, `slots ${slots}`).toEqual(one);
      expect(done.at(-1)).toBe(prompts.length);
    }
  });

  it('prompts that share an instruction (its keys computed once per refill) still get their batch-1 tokens', async () => {
    const instruction = records.find((r) => tokenizer.encode(r.instruction).length > 24)!.instruction;
    const sharing = [...records.slice(0, 10).map((r) => promptText({ ...r, instruction })), instruction, `${instruction} `];
    const single: GeneratedText[] = [];
    for (const p of sharing) single.push(...(await generateText(model, tokenizer, [p], { maxNewTokens: MAX })));
    // in order: the first refills hold prompts of one instruction; by length, as evaluation takes them
    const byLength = sharing.map((_, i) => i).sort((a, b) => tokenizer.encode(sharing[a]!).length - tokenizer.encode(sharing[b]!).length);
    for (const order of [sharing.map((_, i) => i), byLength]) {
      const got = await generateContinuous(model, tokenizer, order.map((i) => sharing[i]!), { slots: 6, maxNewTokens: MAX });
      expect(got).toEqual(order.map((i) => single[i]));
    }
  });

  it('evaluation: continuous (the default) equals fixed batches and batch 1, in the records order', async () => {
    const a = await evaluateNew(model, tokenizer, records, { batch: 4, maxNewTokens: MAX });
    const b = await evaluateNew(model, tokenizer, records, { batch: 4, maxNewTokens: MAX, continuous: false });
    expect(a.predictions).toEqual(one.slice(0, records.length).map((r) => r.text));
    expect(b.predictions).toEqual(a.predictions);
  });

  it('a repetition penalty applies per slot, from its own prompt', async () => {
    const penalised = await alone(model, { repetitionPenalty: 1.3 });
    expect(penalised.map((r) => r.text)).not.toEqual(one.map((r) => r.text));
    expect(await generateContinuous(model, tokenizer, prompts, { slots: 5, maxNewTokens: MAX, repetitionPenalty: 1.3 })).toEqual(penalised);
  });

  it('abort part-way rejects with ABORT_ERR, frees the model, and refuses bad options', async () => {
    const before = memoryStats().cpuAllocatedBytes;
    const controller = new AbortController();
    const run = generateContinuous(model, tokenizer, prompts, { slots: 2, maxNewTokens: MAX, signal: controller.signal, onDone: (d) => d >= 3 && controller.abort() });
    const e = await run.then(() => undefined, (x: unknown) => x);
    expect(isJfaError(e, 'ABORT_ERR')).toBe(true);
    const evaluation = new AbortController();
    const stopped = await evaluateNew(model, tokenizer, records, { batch: 2, maxNewTokens: MAX, signal: evaluation.signal, onBatch: (d) => d >= 3 && evaluation.abort() }).then(() => undefined, (x: unknown) => x);
    expect(isJfaError(stopped, 'ABORT_ERR')).toBe(true);
    expect((stopped as Error).message).toMatch(new RegExp(`^evaluate: stopped after \\d+ of ${records.length} records: aborted$`));
    // Aborted while a step runs: rejects now, frees once the step ends.
    const late = new AbortController();
    const running = generateContinuous(model, tokenizer, prompts, { slots: 2, maxNewTokens: 3000, signal: late.signal });
    setTimeout(() => late.abort(), 20);
    await expect(running).rejects.toMatchObject({ code: 'ABORT_ERR' });
    // The cache is freed and the model's lease gone together (the abort may come before the decoder
    // exists: then both go once it arrives): the model can change again.
    await vi.waitFor(
      () => {
        expect(memoryStats().cpuAllocatedBytes).toBe(before);
        model.addLora({ r: 2, seed: 1 });
      },
      { timeout: 5000 },
    );
    expect(model.removeLora()).toBe(true);
    await expect(generateContinuous(model, tokenizer, prompts, { slots: 0 })).rejects.toThrow('generateContinuous: slots must be a positive integer, got number 0');
    await expect(generateContinuous(model, tokenizer, prompts, { temperature: 0.5 } as never)).rejects.toThrow("generateContinuous: unknown option 'temperature'");
    await expect(generateContinuous(model, tokenizer, [])).rejects.toThrow('generateContinuous: no prompts');
  });
});

describe('with adapters and latent tasks', () => {
  let model: LlamaModel;
  /** The adapted model's tokens for each prompt alone. */
  let lora: GeneratedText[];
  beforeAll(async () => {
    model = LlamaModel.load(shipped);
    model.addLora({ r: 4, loraAlpha: 8, seed: 2 });
    // B starts at zero (PEFT's init): random B makes the adapter change the tokens.
    for (const [name, p] of Object.entries(model.loraParameters())) if (name.endsWith('lora_B.weight')) p.copyFrom(scaled(p.shape, 0.05, name.length));
    lora = await alone(model);
  });
  afterAll(() => model.dispose());

  it('a LoRA adapter: batch-1 tokens with it, and adapters: false gives the base model\'s', async () => {
    expect(lora.map((r) => r.text)).not.toEqual(one.map((r) => r.text));
    expect(await generateContinuous(model, tokenizer, prompts, { slots: 4, maxNewTokens: MAX })).toEqual(lora);
    expect(await generateContinuous(model, tokenizer, prompts, { slots: 4, maxNewTokens: MAX, adapters: false })).toEqual(one);
  });

  // Many small ops (an embedding forward per record, batch-1 generations): slow where 2 OpenMP threads
  // share busy cores, hence the longer timeout.
  it('a latent pool: each prompt keeps its own retrieved increments in whatever slot it lands', async () => {
    const some = records.slice(0, 12);
    const { hiddenSize } = model.config;
    const tasks = new LatentTasks(hiddenSize, hiddenSize, hiddenSize, { groups: 2, perGroup: 3, k: 2, rank: 2, seed: 4 });
    tasks.B.copyFrom(scaled(tasks.B.shape, 0.5, 9));
    tasks.fit(embedRecords(model, tokenizer, some, 160));
    model.setLatentPool(2, tasks.A, tasks.B);
    const pool = new LatentPool(tasks, 2, 'retrieve', 160);
    const withPool = await evaluateNew(model, tokenizer, some, { batch: 1, maxNewTokens: MAX, latent: pool, continuous: false });
    expect(withPool.predictions).not.toEqual(lora.slice(0, 12).map((r) => r.text));
    const continuous = await evaluateNew(model, tokenizer, some, { batch: 3, maxNewTokens: MAX, latent: pool });
    expect(continuous.predictions).toEqual(withPool.predictions);
  }, 180_000);

});
