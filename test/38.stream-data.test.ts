// Data as a stream: data.newTrain as an AsyncIterable (readJsonlStream's, or a generator) is read in
// seeded, shuffled windows, every record once per epoch, never all of it at once; a streamed run
// paused and resumed ends bit-identical to an uninterrupted one; what a stream cannot do is refused.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { readJsonlStream } from '../lib/data/jsonl-stream.js';
import { type InstanceRecord } from '../lib/data/records.js';
import { CheckpointError, DataError, OptionError } from '../lib/errors.js';
import { sftBatch } from '../lib/jfa/examples.js';
import { StreamedRecords } from '../lib/jfa/streamed.js';
import { type StepProgress, train, type TrainOptions } from '../lib/jfa/trainer.js';
import { createModel } from '../lib/model/create.js';
import { LlamaModel } from '../lib/model/llama.js';
import { Tokenizer } from '../lib/model/tokenizer.js';
import { tinyJfaRun } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'jfa-stream-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const modelDir = join(dir, 'base');
const { suite, options: tiny } = tinyJfaRun();
const newTrain = suite.newTrain.slice(0, 24);
const flashbacks = suite.flashbacks.slice(0, 8);
// 4 records a step: 6 steps an epoch over the 24 records.
const sft: TrainOptions = { ...tiny, method: 'sft', maxTokens: 96 };
const file = join(dir, 'new-train.jsonl');

beforeAll(() => {
  createModel(modelDir, { hiddenSize: 32, intermediateSize: 64, numLayers: 2, numHeads: 2, seed: 1 });
  writeFileSync(file, newTrain.map((r) => `${JSON.stringify(r)}\n`).join(''));
});

const load = () => LlamaModel.load(modelDir);
const tokenizer = () => Tokenizer.fromDir(modelDir);
const adapterOf = (out: string) => readFileSync(join(out, 'adapter', 'adapter_model.safetensors'));
const rejection = async (p: Promise<unknown>): Promise<unknown> => p.then(() => expect.fail('expected a rejection'), (e: unknown) => e);
/** The records as a one-shot-per-iteration async generator source (re-iterable, as train needs). */
const source = (records: InstanceRecord[]): AsyncIterable<InstanceRecord> => ({
  async *[Symbol.asyncIterator]() {
    yield* records;
  },
});

describe('readJsonlStream', () => {
  it('reads every record, again on each iteration', async () => {
    const stream = readJsonlStream(file, 'instance');
    for (let pass = 0; pass < 2; pass++) {
      const seen: InstanceRecord[] = [];
      for await (const r of stream) seen.push(r);
      expect(seen).toEqual(newTrain);
    }
  });

  it('a bad line at line k rejects with a DataError naming file:k, after the lines before it', async () => {
    const bad = join(dir, 'bad.jsonl');
    const lines = newTrain.slice(0, 6).map((r) => JSON.stringify(r));
    lines[4] = JSON.stringify({ ...newTrain[4], output: 7 });
    writeFileSync(bad, `${lines.join('\n')}\n`);
    let read = 0;
    let error: unknown;
    try {
      for await (const _ of readJsonlStream(bad, 'instance')) read += 1;
    } catch (e) {
      error = e;
    }
    expect(read).toBe(4);
    expect(error).toBeInstanceOf(DataError);
    expect((error as DataError).code).toBe('ERR_JFA_DATA');
    expect((error as DataError).problems).toEqual([`${bad}:5: field 'output' must be a string, got number`]);
    writeFileSync(bad, `${lines.slice(0, 2).join('\n')}\nnot json\n`);
    expect(((await rejection((async () => { for await (const _ of readJsonlStream(bad, 'instance')); })())) as DataError).message).toContain(`${bad}:3: invalid JSON`);
    expect(() => readJsonlStream(join(dir, 'missing.jsonl'), 'instance')).toThrow(DataError);
  });
});

describe('windows', () => {
  it('every record once per epoch, each window shuffled within itself', async () => {
    const records = Array.from({ length: 30 }, (_, i) => ({ task: 't', instruction: 'Echo.', input: `r${i}`, output: `${i}` }));
    const reader = new StreamedRecords(source(records), 3, 8);
    const epochs: string[][] = [[], []];
    for (let e = 0; e < 2; e++) {
      // 4 a take: 7 full takes and a short one end the epoch (30 records).
      for (let t = 0; t < 8; t++) {
        const got = await reader.take(4);
        expect(got.length).toBe(t < 7 ? 4 : 2);
        epochs[e]!.push(...got.map((r) => r.input));
      }
    }
    await reader.close();
    for (const seen of epochs) {
      expect([...seen].sort()).toEqual(records.map((r) => r.input).sort());
      // Records of window w (file positions 8w..8w+7) stay in positions 8w..8w+7.
      seen.forEach((input, i) => expect(Math.floor(Number(input.slice(1)) / 8)).toBe(Math.floor(i / 8)));
      expect(seen).not.toEqual(records.map((r) => r.input));
    }
    expect(epochs[0]).not.toEqual(epochs[1]);
  });

  it('a streamed run trains on every record once per epoch (the tokens of all of them by the end of the epoch)', async () => {
    const records = suite.newTrain.slice(0, 30);
    const tok = tokenizer();
    const all = sftBatch(tok, records, sft.maxTokens!);
    for (const t of [all.ids, all.attentionMask, all.targets]) t.dispose();
    const progress: StepProgress[] = [];
    using model = load();
    // 8 steps an epoch (the 8th short); window 7 divides neither the records nor a step's 4.
    await train(model, tok, { newTrain: source(records) }, { ...sft, streamWindow: 7, maxSteps: 16, onStep: (p) => void progress.push(p) });
    expect(progress).toHaveLength(16);
    expect(progress[7]!.tokens).toBe(all.tokens);
    expect(progress[15]!.tokens).toBe(2 * all.tokens);
  });

  it('a window holding every record shuffles as an array run: bit-identical adapters over two epochs', async () => {
    const array = join(dir, 'array');
    const streamed = join(dir, 'streamed-whole');
    using a = load();
    await train(a, tokenizer(), { newTrain }, { ...sft, epochs: 2, outDir: array });
    using b = load();
    await train(b, tokenizer(), { newTrain: readJsonlStream(file, 'instance') }, { ...sft, streamWindow: 24, maxSteps: 12, outDir: streamed });
    expect(adapterOf(streamed).equals(adapterOf(array))).toBe(true);
    // A smaller window is another order: another adapter.
    const small = join(dir, 'streamed-small');
    using c = load();
    await train(c, tokenizer(), { newTrain: readJsonlStream(file, 'instance') }, { ...sft, streamWindow: 5, maxSteps: 12, outDir: small });
    expect(adapterOf(small).equals(adapterOf(array))).toBe(false);
  });
});

describe('resuming a streamed run', () => {
  const streamed: TrainOptions = { ...sft, streamWindow: 5, maxSteps: 9 };
  let whole: string;
  beforeAll(async () => {
    whole = join(dir, 'stream-whole');
    using model = load();
    await train(model, tokenizer(), { newTrain: readJsonlStream(file, 'instance') }, { ...streamed, outDir: whole });
  });

  it('paused mid-window and in the second epoch, then resumed: bit-identical to the uninterrupted run', async () => {
    const out = join(dir, 'stream-paused');
    const run = async (o: Partial<TrainOptions>) => {
      using model = load();
      return await train(model, tokenizer(), { newTrain: readJsonlStream(file, 'instance') }, { ...streamed, outDir: out, ...o });
    };
    expect((await run({ pauseAfter: 3 })).stoppedEarly).toBe(true);
    const state = JSON.parse(readFileSync(join(out, 'checkpoint', 'state.json'), 'utf8'));
    expect(state.position).toEqual({ epoch: 0, offset: 12 });
    expect(state.stream).toEqual({ window: 5 });
    await run({ resume: true, pauseAfter: 7 });
    expect(JSON.parse(readFileSync(join(out, 'checkpoint', 'state.json'), 'utf8')).position).toEqual({ epoch: 1, offset: 4 });
    const r = await run({ resume: true });
    expect(r.steps).toBe(9);
    expect(adapterOf(out).equals(adapterOf(whole))).toBe(true);
  });

  it('an aborted streamed run resumes bit-identical too', async () => {
    const out = join(dir, 'stream-aborted');
    const controller = new AbortController();
    using model = load();
    await rejection(train(model, tokenizer(), { newTrain: readJsonlStream(file, 'instance') }, {
      ...streamed, outDir: out, signal: controller.signal, onStep: (p) => void (p.step === 4 && controller.abort()),
    }));
    using again = load();
    await train(again, tokenizer(), { newTrain: readJsonlStream(file, 'instance') }, { ...streamed, outDir: out, resume: true });
    expect(adapterOf(out).equals(adapterOf(whole))).toBe(true);
  });

  it("an array run's checkpoint is not resumed as a stream, nor one of another window", async () => {
    const out = join(dir, 'array-paused');
    using model = load();
    await train(model, tokenizer(), { newTrain }, { ...sft, maxSteps: 9, epochs: 2, outDir: out, pauseAfter: 2 });
    using again = load();
    expect(await rejection(train(again, tokenizer(), { newTrain: readJsonlStream(file, 'instance') }, { ...streamed, outDir: out, resume: true }))).toBeInstanceOf(CheckpointError);
    const paused = join(dir, 'stream-window');
    using third = load();
    await train(third, tokenizer(), { newTrain: readJsonlStream(file, 'instance') }, { ...streamed, outDir: paused, pauseAfter: 2 });
    using fourth = load();
    expect(await rejection(train(fourth, tokenizer(), { newTrain: readJsonlStream(file, 'instance') }, { ...streamed, streamWindow: 6, outDir: paused, resume: true }))).toBeInstanceOf(CheckpointError);
  });
});

describe('bounded memory', () => {
  it('200,000 records made lazily: a 5-step run pulls about a window of them (and one more for the prompts it keeps)', async () => {
    let pulled = 0;
    let open = 0;
    const lazy: AsyncIterable<InstanceRecord> = {
      async *[Symbol.asyncIterator]() {
        open += 1;
        try {
          for (let i = 0; i < 200_000; i++) {
            pulled += 1;
            yield { task: 't', instruction: 'Echo the input.', input: `x${i}`, output: `${i % 97}` };
          }
        } finally {
          open -= 1;
        }
      },
    };
    using model = load();
    const r = await train(model, tokenizer(), { newTrain: lazy }, { ...sft, maxSteps: 5, streamWindow: 256, outDir: join(dir, 'lazy') });
    expect(r.steps).toBe(5);
    // The first window, then the first window again for prompts.jsonl: 2 x 256, nowhere near 200,000.
    expect(pulled).toBeLessThanOrEqual(2 * 256 + 5 * 4);
    expect(pulled).toBeGreaterThanOrEqual(256);
    expect(open).toBe(0);
  });
});

describe('refused and checked', () => {
  const refused = async (d: unknown, o: TrainOptions) => {
    using model = load();
    return await rejection(train(model, tokenizer(), d as never, o));
  };

  it('a stream without maxSteps, with epochs, or for replay is an OptionError; streamWindow needs a stream', async () => {
    const e = await refused({ newTrain: source(newTrain) }, sft);
    expect(e).toBeInstanceOf(OptionError);
    expect((e as Error).message).toContain('give maxSteps');
    expect(await refused({ newTrain: source(newTrain) }, { ...sft, maxSteps: 3, epochs: 2 })).toBeInstanceOf(OptionError);
    expect(await refused({ newTrain: source(newTrain), replay: newTrain }, { ...sft, method: 'replay', maxSteps: 3 })).toBeInstanceOf(OptionError);
    expect(((await refused({ newTrain }, { ...sft, streamWindow: 8 })) as Error).message).toContain('streamWindow applies only');
    expect(((await refused({ newTrain: source(newTrain) }, { ...sft, maxSteps: 3, streamWindow: 0 })) as Error).message).toBe('train: streamWindow must be a positive integer, got 0');
  });

  it('jfa with latent tasks on a stream is refused (pass an array or latent: false); jfa-no-latent trains on one', async () => {
    const e = await refused({ newTrain: source(newTrain), flashbacks }, { ...tiny, maxSteps: 2 });
    expect(e).toBeInstanceOf(OptionError);
    expect((e as Error).message).toContain('latent: false');
    using model = load();
    const r = await train(model, tokenizer(), { newTrain: source(newTrain), flashbacks }, { ...tiny, method: 'jfa-no-latent', maxSteps: 2 });
    expect(r.steps).toBe(2);
    using flash = load();
    expect((await train(flash, tokenizer(), { newTrain: source(newTrain), flashbacks }, { ...tiny, method: 'flashback', maxSteps: 2 })).steps).toBe(2);
  });

  it('a bad record rejects naming its place in the stream; an empty stream is a DataError', async () => {
    const records = [...newTrain.slice(0, 9), { ...newTrain[9]!, output: null }, ...newTrain.slice(10)];
    const e = await refused({ newTrain: source(records as InstanceRecord[]) }, { ...sft, maxSteps: 6 });
    expect(e).toBeInstanceOf(DataError);
    expect((e as DataError).problems).toEqual(["train: data.newTrain record 9: field 'output' must be a string, got null"]);
    const empty = await refused({ newTrain: source([]) }, { ...sft, maxSteps: 2 });
    expect(empty).toBeInstanceOf(DataError);
    expect((empty as Error).message).toContain('yielded no records');
  });
});
