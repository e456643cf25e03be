// Generation as a TypeScript team expects it: repetition penalty (token for token with transformers'
// greedy generate), top-k, stop strings (per row in a batch, spanning tokens), and generateStream
// (whole characters, nothing of a stop string, abort and break free the native state).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

import { OLD_SUITES } from '../lib/data/old-tasks.js';
import { probeRecords } from '../lib/data/probes.js';
import { createRng } from '../lib/data/rng.js';
import { OptionError } from '../lib/errors.js';
import { byteSymbols, createModel } from '../lib/model/create.js';
import { Decoder } from '../lib/model/decoder.js';
import { generateStream, generateText } from '../lib/model/generate.js';
import { LlamaModel } from '../lib/model/llama.js';
import { findStop, IncrementalText, stopPrefixLength, StopStream } from '../lib/model/text-stream.js';
import { Tokenizer } from '../lib/model/tokenizer.js';
import { memoryStats } from '../lib/runtime.js';
import { type Tensor, tensor, zeros } from '../lib/tensor.js';
import { expectError, jfa, python, root, venvPython } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'jfa-gen35-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const shipped = join(root, 'models', 'jfa-base');
const tiny = join(dir, 'tiny');
const cycleDir = join(dir, 'cycle');

const ids2d = (rows: number[][]) => tensor(BigInt64Array.from(rows.flat().map(BigInt)), [rows.length, rows[0]!.length]);
const rowsOf = (t: { shape: number[]; toTypedArray(): unknown }) => {
  const flat = Array.from(t.toTypedArray() as BigInt64Array, Number);
  const w = t.shape[1]!;
  return Array.from({ length: t.shape[0]! }, (_, r) => flat.slice(r * w, (r + 1) * w));
};

/** transformers' greedy generate with a repetition penalty, each prompt on its own (no padding). */
function hfGreedy(model: string, prompts: number[][], maxNewTokens: number, penalty: number, eos: number | null): number[][] {
  const spec = JSON.stringify({ model, prompts, maxNewTokens, penalty, eos });
  return python<number[][]>(`
import json, torch
from transformers import AutoModelForCausalLM
spec = json.loads(${JSON.stringify(spec)})
model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32).eval()
out = []
with torch.no_grad():
    for p in spec["prompts"]:
        ids = torch.tensor([p])
        g = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=spec["maxNewTokens"], do_sample=False,
                           repetition_penalty=spec["penalty"], pad_token_id=0, eos_token_id=spec["eos"])
        out.append(g[0, ids.shape[1]:].tolist())
print(json.dumps(out))
`);
}

/** The cut at the first end-of-sequence token (transformers pads after it). */
const untilEos = (row: number[], eos: number | null) => (eos !== null && row.includes(eos) ? row.slice(0, row.indexOf(eos) + 1) : row);

// The cycle model: its next token is a fixed function of the last one, through the UTF-8 bytes of
// CYCLE (every byte distinct), so greedy output is known text with characters of 1 to 4 bytes.
const CYCLE = 'xé日🎉ж ';
async function cycleModel(): Promise<{ model: LlamaModel; tokenizer: Tokenizer }> {
  const tokenizer = Tokenizer.fromDir(cycleDir);
  const model = LlamaModel.load(cycleDir);
  const V = model.config.vocabSize;
  const H = model.config.hiddenSize;
  const byteId = (b: number) => tokenizer.tokenId(byteSymbols()[b])!;
  const bytes = [...Buffer.from(CYCLE, 'utf8')];
  const next = new Map(bytes.map((b, i) => [byteId(b), byteId(bytes[(i + 1) % bytes.length]!)]));
  const embed = new Float32Array(V * H);
  const head = new Float32Array(V * H);
  for (let t = 0; t < V; t++) {
    embed[t * H + t] = 1;
    head[(next.get(t) ?? byteId(bytes[0]!)) * H + t] = 1; // off the cycle: back to its start
  }
  const w = model.weights();
  const set = (name: string, values: Tensor) => {
    w[name]!.copyFrom(values);
    values.dispose();
  };
  set('model.embed_tokens.weight', tensor(embed, [V, H]));
  set('lm_head.weight', tensor(head, [V, H]));
  // Attention and MLP add nothing: the last hidden state is the last token's embedding.
  set('model.layers.0.self_attn.o_proj.weight', zeros(w['model.layers.0.self_attn.o_proj.weight']!.shape));
  set('model.layers.0.mlp.down_proj.weight', zeros(w['model.layers.0.mlp.down_proj.weight']!.shape));
  Object.values(w).forEach((t) => t.dispose());
  return { model, tokenizer };
}

async function collect(stream: AsyncIterable<string>): Promise<string[]> {
  const pieces: string[] = [];
  for await (const p of stream) pieces.push(p);
  return pieces;
}

/** Whole characters: no replacement character, no lone surrogate (UTF-8 round trip keeps it). */
const whole = (piece: string) => !piece.includes('\uFFFD') && Buffer.from(piece, 'utf8').toString('utf8') === piece;

beforeAll(() => {
  const r = spawnSync(venvPython, [join(root, 'scripts', 'reference', 'tiny_llama.py'), tiny, JSON.stringify({
    config: { vocab_size: 211, hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, tie_word_embeddings: false, initializer_range: 0.1 },
    seed: 6, ids: [[1, 2]], mask: [[1, 1]],
  })], { encoding: 'utf8', timeout: 300_000 });
  if (r.status !== 0) throw new Error(r.stderr);
  createModel(cycleDir, { hiddenSize: 272, numHeads: 8, numLayers: 1, intermediateSize: 32, tieWordEmbeddings: false, seed: 2 });
});

describe('repetition penalty: greedy tokens equal transformers generate(do_sample=False, repetition_penalty=1.3)', () => {
  it('a random tiny model, three prompts; the penalty changes what greedy makes', async () => {
    using model = LlamaModel.load(tiny);
    const prompts = [[5, 17, 3, 99, 210, 42], [7, 7, 7], [120, 4, 4, 88, 19]];
    const ours: number[][] = [];
    const plain: number[][] = [];
    for (const p of prompts) {
      ours.push(rowsOf(await model.generate(ids2d([p]), { maxNewTokens: 20, repetitionPenalty: 1.3 }))[0]!);
      plain.push(rowsOf(await model.generate(ids2d([p]), { maxNewTokens: 20 }))[0]!);
    }
    expect(ours).toEqual(hfGreedy(tiny, prompts, 20, 1.3, null));
    expect(ours).not.toEqual(plain);
    // with no penalty, transformers agrees too (the reference is not penalising anyway)
    expect(plain).toEqual(hfGreedy(tiny, prompts, 20, 1.0, null));
  });

  it('the shipped base models/jfa-base, three prompts, stopping at its end-of-sequence token', async () => {
    using model = LlamaModel.load(shipped);
    const tokenizer = Tokenizer.fromDir(shipped);
    const eos = tokenizer.eosTokenId!;
    // Three prompts of the kinds it was trained on that it answers at some length and where the
    // penalty changes the answer (a confident base often gives the same tokens either way): lists to
    // copy with repeated words, lookups, a word problem. Which ones depends on the base; that three
    // exist does not.
    const candidates = [
      ...probeRecords(60).copy.filter((r) => new Set(r.input.split(', ')).size < r.input.split(', ').length),
      ...probeRecords(4).lookup,
      // step-by-step answers repeat their tokens ('True and False = False. False or ...')
      ...OLD_SUITES.logic(createRng(5), 8),
      ...OLD_SUITES['arith-gsm'](createRng(6), 8),
      { instruction: "Solve the math word problem step by step. End with 'The answer is N.'", input: 'Ana buys 3 packs of pencils with 4 pencils in each pack. How many pencils does Ana buy?' },
    ].map((r) => tokenizer.encode(`${r.instruction}\n${r.input}\n`));
    const prompts: number[][] = [];
    const ours: number[][] = [];
    const plain: number[][] = [];
    for (const p of candidates) {
      const penalised = untilEos(rowsOf(await model.generate(ids2d([p]), { maxNewTokens: 32, repetitionPenalty: 1.3, eosTokenIds: [eos] }))[0]!, eos);
      if (penalised.length <= 4) continue;
      const unpenalised = untilEos(rowsOf(await model.generate(ids2d([p]), { maxNewTokens: 32, eosTokenIds: [eos] }))[0]!, eos);
      if (unpenalised.join() === penalised.join()) continue;
      prompts.push(p);
      ours.push(penalised);
      plain.push(unpenalised);
      if (prompts.length === 3) break;
    }
    expect(prompts, 'construction: three prompts the base answers at some length, the penalty changing the answer').toHaveLength(3);
    expect(ours).toEqual(hfGreedy(shipped, prompts, 32, 1.3, eos).map((r) => untilEos(r, eos)));
    expect(ours).not.toEqual(plain);
  });

  it('left padding is no part of a sequence: a padded batch gives each row what it gives alone', async () => {
    using model = LlamaModel.load(tiny);
    const long = [5, 17, 3, 99, 210, 42];
    const short = [7, 7, 7];
    const alone = rowsOf(await model.generate(ids2d([short]), { maxNewTokens: 12, repetitionPenalty: 1.5 }))[0]!;
    // The padding holds the token the short row picks first: penalised, it would lose its place.
    const pad = alone[0]!;
    const ids = ids2d([long, [pad, pad, pad, ...short]]);
    const attentionMask = tensor(Uint8Array.from([1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1]), [2, 6]);
    const batch = rowsOf(await model.generate(ids, { attentionMask, maxNewTokens: 12, repetitionPenalty: 1.5 }));
    expect(batch[1]).toEqual(alone);
    expect(batch[0]).toEqual(rowsOf(await model.generate(ids2d([long]), { maxNewTokens: 12, repetitionPenalty: 1.5 }))[0]);
  });
});

describe('top-k', () => {
  it('topK 1 samples what greedy picks, penalty and padding included', async () => {
    using model = LlamaModel.load(tiny);
    const ids = ids2d([[5, 17, 3, 99, 210, 42], [0, 0, 0, 1, 2, 3]]);
    const attentionMask = tensor(Uint8Array.from([1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1]), [2, 6]);
    const greedy = rowsOf(await model.generate(ids, { attentionMask, maxNewTokens: 16, repetitionPenalty: 1.3 }));
    const topK1 = rowsOf(await model.generate(ids, { attentionMask, maxNewTokens: 16, repetitionPenalty: 1.3, temperature: 1.5, topK: 1, seed: 4 }));
    expect(topK1).toEqual(greedy);
    const free = rowsOf(await model.generate(ids, { attentionMask, maxNewTokens: 16, repetitionPenalty: 1.3, temperature: 1.5, seed: 4 }));
    expect(free).not.toEqual(greedy);
  });

  it('every token sampled with topK 3 is among the 3 largest penalised logits (and without topK some are not)', async () => {
    using model = LlamaModel.load(tiny);
    const prompt = [5, 17, 3, 99, 210, 42];
    const penalty = 1.3;
    /** For each generated token: how many penalised logits were above it at its step. */
    const ranks = async (options: { topK?: number; temperature: number; seed: number }) => {
      const gen = rowsOf(await model.generate(ids2d([prompt]), { maxNewTokens: 24, repetitionPenalty: penalty, ...options }))[0]!;
      const seq = [...prompt, ...gen];
      const logits = model.logits(ids2d([seq]));
      const V = logits.shape[2]!;
      const all = logits.toTypedArray() as Float32Array;
      return gen.map((tok, i) => {
        const pos = prompt.length - 1 + i;
        const seen = new Set(seq.slice(0, pos + 1));
        const row = Array.from(all.subarray(pos * V, (pos + 1) * V), (x, t) => (seen.has(t) ? (x < 0 ? x * penalty : x / penalty) : x));
        return row.filter((x) => x > row[tok]! + 1e-5).length;
      });
    };
    const k3 = await ranks({ topK: 3, temperature: 3, seed: 11 });
    expect(Math.max(...k3)).toBeLessThan(3);
    expect(Math.max(...k3)).toBeGreaterThan(0); // it samples, not just the argmax
    const free = await ranks({ temperature: 3, seed: 11 });
    expect(Math.max(...free)).toBeGreaterThanOrEqual(3);
  });
});

describe('text pieces: whole characters and stop strings (unit)', () => {
  const bytesDecode = (ids: number[]) => new TextDecoder().decode(Uint8Array.from(ids));

  it('a character whose bytes come one at a time is let out whole, once complete', () => {
    const text = 'aé日🎉ж!';
    const bytes = [...Buffer.from(text, 'utf8')];
    // what a naive stream (the new part of the decoded text at each byte) would let out: split characters
    expect(bytes.map((_, i) => bytesDecode(bytes.slice(0, i + 1))).some((t) => t.endsWith('\uFFFD'))).toBe(true);
    const inc = new IncrementalText(bytesDecode);
    const pieces = bytes.map((b) => inc.push(b)).filter(Boolean);
    pieces.push(inc.flush());
    expect(pieces.join('')).toBe(text);
    expect(pieces.every(whole)).toBe(true);
    expect(pieces.filter(Boolean)).toEqual(['a', 'é', '日', '🎉', 'ж', '!']);
  });

  it('invalid bytes decode as U+FFFD once known invalid; an incomplete end is let out by flush', () => {
    const inc = new IncrementalText(bytesDecode);
    expect(inc.push(0xe6)).toBe('');
    expect(inc.push(0x41)).toBe('\uFFFDA');
    expect(inc.push(0xe6)).toBe('');
    expect(inc.flush()).toBe('\uFFFD');
  });

  it('findStop takes the stop string that completes first; stopPrefixLength holds back a possible start', () => {
    expect(findStop('abcdef', ['cde', 'bc'])).toEqual({ index: 1, stop: 'bc' });
    expect(findStop('abcdef', ['bcd', 'cd'])).toEqual({ index: 1, stop: 'bcd' }); // both end at 4: the longer
    expect(findStop('abc', ['x'])).toBeUndefined();
    expect(stopPrefixLength('hello wor', ['world'])).toBe(3);
    expect(stopPrefixLength('wor', ['world'], 1)).toBe(0); // the text before `from` is let out already
    expect(stopPrefixLength('hello', ['world'])).toBe(0);
    const s = new StopStream(bytesDecode, ['🎉!']);
    const out = [...Buffer.from('a🎉b🎉!c', 'utf8')].map((b) => s.push(b)).join('');
    expect(out).toBe('a🎉b');
    expect(s.hit).toEqual({ index: 4, stop: '🎉!' });
  });
});

describe('generateStream and stop strings on a model whose output is known', () => {
  it('the pieces are whole characters and concatenate to generateText text', async () => {
    const { model, tokenizer } = await cycleModel();
    using _ = model;
    const pieces = await collect(generateStream(model, tokenizer, 'x', { maxNewTokens: 28 }));
    const [ref] = await generateText(model, tokenizer, ['x'], { maxNewTokens: 28 });
    expect(pieces.join('')).toBe(ref!.text);
    expect(ref!.text).toBe('é日🎉ж xé日🎉ж xé');
    expect(ref!.tokens).toBe(28);
    expect(ref!.finishReason).toBe('length');
    expect(pieces.every(whole)).toBe(true);
    expect(pieces.length).toBeLessThan(28); // characters of several tokens came as one piece each
    // Cut by maxNewTokens inside a character (日's first byte): its bytes end the text as U+FFFD, in both.
    const cut = await collect(generateStream(model, tokenizer, 'x', { maxNewTokens: 29 }));
    expect(cut.join('')).toBe(`${ref!.text}\uFFFD`);
    expect(cut.slice(0, -1).every(whole)).toBe(true);
    expect((await generateText(model, tokenizer, ['x'], { maxNewTokens: 29 }))[0]!.text).toBe(cut.join(''));
  });

  it('a stop string over several tokens ends the stream and generateText before it, and none of it is let out', async () => {
    const { model, tokenizer } = await cycleModel();
    using _ = model;
    for (const [stop, expected] of [['🎉', 'é日'], ['ж x', 'é日🎉'], ['日🎉ж', 'é']] as const) {
      const pieces = await collect(generateStream(model, tokenizer, 'x', { maxNewTokens: 40, stopStrings: ['never', stop] }));
      expect(pieces.join('')).toBe(expected);
      expect(pieces.every(whole)).toBe(true);
      const [r] = await generateText(model, tokenizer, ['x'], { maxNewTokens: 40, stopStrings: ['never', stop] });
      expect(r).toMatchObject({ text: expected, finishReason: 'stop', stopString: stop, tokens: Buffer.byteLength(expected + stop) });
    }
    // A possible start of a stop string is held back, then let out when it turns out not to be one.
    expect(await collect(generateStream(model, tokenizer, 'x', { maxNewTokens: 13 }))).toEqual(['é', '日', '🎉', 'ж', ' ', 'x']);
    expect(await collect(generateStream(model, tokenizer, 'x', { maxNewTokens: 13, stopStrings: ['ж y'] }))).toEqual(['é', '日', '🎉', 'ж x']);
    expect(await collect(generateStream(model, tokenizer, 'x', { maxNewTokens: 12, stopStrings: ['ж y'] }))).toEqual(['é', '日', '🎉', 'ж ']);
  });

  it('in a batch each row stops at its own stop string, and the batch stops once every row has', async () => {
    const { model, tokenizer } = await cycleModel();
    using _ = model;
    const steps = vi.spyOn(Decoder.prototype, 'step');
    const rows = await generateText(model, tokenizer, ['x', '日', 'q'], { maxNewTokens: 64, stopStrings: ['ж'] });
    expect(rows.map((r) => r.text)).toEqual(['é日🎉', '🎉', 'xé日🎉']);
    expect(rows.every((r) => r.finishReason === 'stop')).toBe(true);
    expect(steps.mock.calls.length).toBeLessThanOrEqual(3); // 8 tokens a step: not 64 tokens' worth
    steps.mockRestore();
    const alone = await generateText(model, tokenizer, ['日'], { maxNewTokens: 64, stopStrings: ['ж'] });
    expect(alone[0]!.text).toBe(rows[1]!.text);
    // Rows without a stop run on to their length.
    const mixed = await generateText(model, tokenizer, ['x', '日'], { maxNewTokens: 10, stopStrings: ['xé'] });
    expect(mixed.map((r) => r.finishReason)).toEqual(['length', 'stop']);
  });

  it('break frees the cache and releases the model; so does abort, which rejects with ABORT_ERR', async () => {
    const { model, tokenizer } = await cycleModel();
    using _ = model;
    const before = memoryStats();
    let n = 0;
    for await (const piece of generateStream(model, tokenizer, 'x', { maxNewTokens: 200 })) {
      expect(piece.length).toBeGreaterThan(0);
      expect(() => model.addLora({ r: 1 })).toThrow('the model is generating');
      if (++n === 3) {
        expect(memoryStats().cpuAllocatedBytes).toBeGreaterThan(before.cpuAllocatedBytes); // the KV cache
        break;
      }
    }
    expect(memoryStats().cpuAllocatedBytes).toBe(before.cpuAllocatedBytes);
    expect(memoryStats().liveTensors).toBe(before.liveTensors);

    const controller = new AbortController();
    const seen: string[] = [];
    const aborted = (async () => {
      for await (const piece of generateStream(model, tokenizer, 'x', { maxNewTokens: 200, signal: controller.signal })) {
        seen.push(piece);
        if (seen.length === 2) controller.abort(new Error('enough'));
      }
    })();
    await expect(aborted).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR', cause: new Error('enough') });
    expect(seen).toHaveLength(2);
    expect(memoryStats().cpuAllocatedBytes).toBe(before.cpuAllocatedBytes);
    model.addLora({ r: 1 }); // not generating any more
    const withLora = memoryStats().cpuAllocatedBytes;

    // Already aborted: nothing starts. Aborted while a step runs: rejects now, frees once the step ends.
    await expect(collect(generateStream(model, tokenizer, 'x', { signal: AbortSignal.abort() }))).rejects.toMatchObject({ code: 'ABORT_ERR' });
    await expect(generateText(model, tokenizer, ['x'], { signal: AbortSignal.abort() })).rejects.toMatchObject({ code: 'ABORT_ERR' });
    const late = new AbortController();
    const running = generateText(model, tokenizer, ['x', 'q'], { maxNewTokens: 3000, signal: late.signal });
    setTimeout(() => late.abort(), 20);
    await expect(running).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
    await vi.waitFor(() => expect(memoryStats().cpuAllocatedBytes).toBe(withLora), { timeout: 5000 });
  });

  it('jfa generate takes --stop, --top-k and --repetition-penalty', async () => {
    const { model } = await cycleModel();
    const saved = join(dir, 'cycle-saved');
    model.save(saved);
    model.dispose();
    const r = jfa('generate', '--model', saved, '--prompt', 'x', '日', '--stop', '🎉', 'ж', '--max-new-tokens', '20', '--top-k', '1', '--temperature', '2', '--seed', '3', '--repetition-penalty', '1.2', '--json');
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { results: Array<{ text: string; finishReason: string; stopString?: string }> };
    expect(out.results).toEqual([
      { prompt: 'x', text: 'é日', tokens: 9, finishReason: 'stop', stopString: '🎉' },
      { prompt: '日', text: '', tokens: 4, finishReason: 'stop', stopString: '🎉' },
    ]);
    const bad = jfa('generate', '--model', saved, '--prompt', 'x', '--top-k', '-1');
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toContain('--top-k must be a non-negative integer');
  });
});

describe('the Decoder and option checks', () => {
  it('steps, stops rows, refuses overlapping steps and use after dispose', async () => {
    using model = LlamaModel.load(tiny);
    const full = rowsOf(await model.generate(ids2d([[5, 17, 3], [9, 8, 7]]), { maxNewTokens: 6 }));
    const decoder = await model.decoder(ids2d([[5, 17, 3], [9, 8, 7]]), { maxNewTokens: 6, padTokenId: 0 });
    expect(decoder.batchSize).toBe(2);
    const first = await decoder.step(2);
    const running = decoder.step(1);
    await expect(decoder.step(1)).rejects.toThrow('decoder.step: a step is running; await it first');
    const second = await running;
    decoder.stop([1]);
    const rest = await decoder.step(10);
    expect(decoder.done).toBe(true);
    expect(decoder.produced).toBe(6);
    expect([...first[0]!, ...second[0]!, ...rest[0]!]).toEqual(full[0]);
    expect([...first[1]!, ...second[1]!]).toEqual(full[1]!.slice(0, 3));
    expect(rest[1]!.every((t) => t === 0)).toBe(true);
    expect(await decoder.step(1)).toEqual([[], []]);
    decoder.dispose();
    await expect(decoder.step(1)).rejects.toThrow(TypeError);
    expect(() => decoder.stop([5])).toThrow('decoder.stop: the decoder is disposed');
  });

  it('bad options are RangeErrors naming the option and its value', async () => {
    using model = LlamaModel.load(tiny);
    const ids = ids2d([[5, 17, 3]]);
    await expect(model.generate(ids, { topK: -1 })).rejects.toThrow(new OptionError('generate: topK must be a non-negative integer (0: off), got number -1'));
    await expect(model.generate(ids, { topK: 1.5 })).rejects.toThrow('generate: topK must be a non-negative integer (0: off), got number 1.5');
    await expect(model.generate(ids, { repetitionPenalty: 0 })).rejects.toThrow('generate: repetitionPenalty must be a finite number > 0 (1: off), got number 0');
    await expect(model.decoder(ids, { repetitionPenalty: Number.NaN })).rejects.toThrow('decoder: repetitionPenalty must be a finite number > 0 (1: off), got number NaN');
    const tokenizer = Tokenizer.fromDir(cycleDir);
    const bad = (options: Record<string, unknown>) => () => generateStream(model, tokenizer, 'x', options);
    expectError(bad({ repetitionPenalty: Number.POSITIVE_INFINITY }), RangeError, 'generateStream: repetitionPenalty must be a finite number > 0 (1: off), got number Infinity');
    expectError(bad({ temperature: null }), RangeError, 'generateStream: temperature must be a finite number >= 0 (0: greedy), got null');
    expectError(bad({ topP: 0 }), RangeError, 'generateStream: topP must be a number in (0, 1], got number 0');
    expectError(bad({ topK: Number.NaN }), RangeError, 'generateStream: topK must be a non-negative integer (0: off), got number NaN');
    expectError(bad({ stopStrings: [''] }), RangeError, 'generateStream: stopStrings[0] is empty');
    expectError(bad({ stopStrings: 'x' }), TypeError, 'generateStream: stopStrings must be an array of strings, got string');
    await expect(generateText(model, tokenizer, ['x'], { topK: -2 })).rejects.toThrow(new OptionError('generateText: topK must be a non-negative integer (0: off), got number -2'));
    // the addon checks too, for callers of the raw handle
    const raw = (model as unknown as { handle: { generateAsync(ids: unknown, o: unknown): Promise<unknown> } }).handle;
    expect(() => raw.generateAsync(ids.handle, { topK: -1 })).toThrow(new RangeError('generate: topK must be a non-negative integer, got number -1'));
    await expect(raw.generateAsync(ids.handle, { repetitionPenalty: -1 })).rejects.toThrow('generate: repetitionPenalty must be a finite number > 0 (1: off), got -1');
  });
});
