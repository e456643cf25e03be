// The hostile-input corpus: bad files and bad options for every entry point (the `jfa` command, the
// library API, the file readers), kept as data. test/23 runs each case and counts the outcomes.
//
// A case builds its inputs in its own empty folder (`ctx.dir`, also the command's working folder)
// from the valid fixtures in `ctx` (a tiny model, data, an adapter with a latent pool, ...), then
// either runs the command (`argv`) or calls the library (`call`). Every case must fail cleanly:
// an error whose message contains `names` (the file, line, option or value at fault) and matches
// `says`; for the command, exit status 1 with that error on stderr, no signal, no stack trace;
// and nothing left behind in ctx.dir that was not there before the run.
import { spawnSync } from 'node:child_process';
import { chmodSync, cpSync, mkdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { readJsonl } from '../../lib/data/jsonl.js';
import { train } from '../../lib/jfa/trainer.js';
import { LatentPool } from '../../lib/jfa/pool.js';
import { LlamaModel } from '../../lib/model/llama.js';
import { loadSafetensors } from '../../lib/model/safetensors.js';
import { Tokenizer } from '../../lib/model/tokenizer.js';

/** The valid fixtures every case may start from (built once by test/23). */
export interface Fixtures {
  /** a tiny Llama in Hugging Face layout (hidden 32, 1 layer) */
  model: string;
  /** another tiny Llama with another hidden size (48) */
  otherModel: string;
  /** new-task JSONL (instances) */
  data: string;
  /** flashback JSONL */
  flashbacks: string;
  /** a trained jfa adapter of `model`, with its latent_pool.safetensors */
  adapter: string;
  /** a trained jfa adapter of `otherModel`, with its latent pool */
  otherAdapter: string;
  /** the --out folder of an interrupted `jfa train` run (sft, a checkpoint inside) */
  otherRun: string;
}

export interface Ctx extends Fixtures {
  /** this case's own empty folder, and the command's working folder */
  dir: string;
}

export interface Case {
  /** group/name, unique */
  id: string;
  /** the command's arguments (run as `jfa ...argv` in ctx.dir) */
  argv?: (c: Ctx) => string[];
  /** a library call that must throw (or reject) */
  call?: (c: Ctx) => unknown;
  /** the message must contain this (a file name, line, option or value) */
  names: (c: Ctx) => string;
  /** and match this */
  says: RegExp;
}

// --- building bad inputs ----------------------------------------------------------------------

/** A safetensors file: 8-byte little-endian header length (default: the header's), header, data. */
export function safetensorsBytes(header: unknown, data: number | Buffer = 0, headerLength?: bigint): Buffer {
  const text = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(headerLength ?? BigInt(text.length));
  return Buffer.concat([len, text, typeof data === 'number' ? Buffer.alloc(data) : data]);
}

/** Copies the tiny model into the case folder as `name` and applies `change` to it; returns its path. */
function modelCopy(c: Ctx, change: (dir: string) => void, name = 'model'): string {
  const dir = join(c.dir, name);
  cpSync(c.model, dir, { recursive: true });
  change(dir);
  return dir;
}

/** The tiny model with its config.json edited. */
function withConfig(c: Ctx, edit: (config: Record<string, unknown>) => void): string {
  return modelCopy(c, (dir) => {
    const file = join(dir, 'config.json');
    const config = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    edit(config);
    writeFileSync(file, JSON.stringify(config));
  });
}

/** The tiny model with model.safetensors replaced by `bytes`. */
function withWeights(c: Ctx, bytes: Buffer): string {
  return modelCopy(c, (dir) => writeFileSync(join(dir, 'model.safetensors'), bytes));
}

/** The tiny model's weights file rewritten with `edit` applied to its header (data kept). */
function withEditedWeights(c: Ctx, edit: (header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>) => void): string {
  return modelCopy(c, (dir) => {
    const file = join(dir, 'model.safetensors');
    const bytes = readFileSync(file);
    const n = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')) as Parameters<typeof edit>[0];
    edit(header);
    writeFileSync(file, safetensorsBytes(header, bytes.subarray(8 + n)));
  });
}

/** The valid adapter copied into the case folder, then changed. */
function adapterCopy(c: Ctx, change: (dir: string) => void, from = c.adapter): string {
  const dir = join(c.dir, 'adapter');
  cpSync(from, dir, { recursive: true });
  change(dir);
  return dir;
}

function editJson(file: string, edit: (o: Record<string, unknown>) => void): void {
  const o = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  edit(o);
  writeFileSync(file, JSON.stringify(o));
}

/** A file in the case folder with these contents. */
function file(c: Ctx, name: string, contents: string | Buffer): string {
  const path = join(c.dir, name);
  writeFileSync(path, contents);
  return path;
}

const record = (i: number) => JSON.stringify({ task: 't', instruction: 'Copy.', input: `x${i}`, output: `x${i}` });

// --- the cases ----------------------------------------------------------------------------------

/** A bad weights file, tried through the reader and through `jfa generate`. */
interface WeightsCase {
  name: string;
  bytes: (c: Ctx) => Buffer;
  says: RegExp;
}

const F32 = (shape: number[], begin: number, end: number) => ({ dtype: 'F32', shape, data_offsets: [begin, end] });

const weightsCases: WeightsCase[] = [
  { name: 'header-length-past-end', bytes: () => safetensorsBytes({ a: F32([1], 0, 4) }, 4, 1n << 40n), says: /header|past|end|truncated|large/i },
  { name: 'header-length-beyond-file', bytes: () => safetensorsBytes({ a: F32([1], 0, 4) }, 4, 200n), says: /header|past|end|truncated/i },
  { name: 'header-length-zero', bytes: () => safetensorsBytes('', 0, 0n), says: /header|JSON/i },
  { name: 'empty-file', bytes: () => Buffer.alloc(0), says: /truncated|short|header|empty|small/i },
  { name: 'seven-bytes', bytes: () => Buffer.alloc(7), says: /truncated|short|header|small/i },
  { name: 'header-not-json', bytes: () => safetensorsBytes('{"a": {"dtype": "F32", '), says: /JSON|header|parse/i },
  { name: 'header-not-object', bytes: () => safetensorsBytes('[1, 2, 3]'), says: /object|header/i },
  { name: 'header-100mb', bytes: () => safetensorsBytes(`{"__metadata__": {"x": "${'a'.repeat(100 * 1024 * 1024)}"}}`), says: /header|large|limit|MB|MiB/i },
  { name: 'overlapping-offsets', bytes: () => safetensorsBytes({ a: F32([2], 0, 8), b: F32([2], 4, 12) }, 12), says: /overlap|offset/i },
  { name: 'offsets-reversed', bytes: () => safetensorsBytes({ a: F32([1], 8, 4) }, 8), says: /offset|begin|end/i },
  { name: 'offsets-past-data', bytes: () => safetensorsBytes({ a: F32([4], 0, 16) }, 8), says: /offset|past|end|truncated|beyond/i },
  { name: 'offsets-negative', bytes: () => safetensorsBytes({ a: { dtype: 'F32', shape: [1], data_offsets: [-4, 0] } }, 4), says: /offset|integer|negative/i },
  { name: 'offsets-fractional', bytes: () => safetensorsBytes({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 3.5] } }, 4), says: /offset|integer/i },
  { name: 'shape-overflows', bytes: () => safetensorsBytes({ a: F32([2 ** 40, 2 ** 40, 2 ** 40], 0, 4) }, 4), says: /overflow|shape|size|large/i },
  { name: 'shape-negative', bytes: () => safetensorsBytes({ a: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, 4), says: /shape|negative|integer/i },
  { name: 'shape-vs-bytes', bytes: () => safetensorsBytes({ a: F32([3], 0, 8) }, 8), says: /shape|bytes|size|match/i },
  { name: 'unknown-dtype', bytes: () => safetensorsBytes({ a: { dtype: 'F13', shape: [1], data_offsets: [0, 4] } }, 4), says: /dtype|F13/i },
  { name: 'dtype-not-string', bytes: () => safetensorsBytes({ a: { dtype: 7, shape: [1], data_offsets: [0, 4] } }, 4), says: /dtype/i },
  { name: 'entry-not-object', bytes: () => safetensorsBytes({ a: 'tensor' }), says: /object|entry|a/i },
  { name: 'metadata-not-strings', bytes: () => safetensorsBytes({ __metadata__: { format: 3 }, a: F32([1], 0, 4) }, 4), says: /metadata|string/i },
  { name: 'truncated-data', bytes: (c) => readFileSync(join(c.model, 'model.safetensors')).subarray(0, 2000), says: /truncated|past|end|beyond|offset/i },
];

const weightsFile = 'model.safetensors';

export const CASES: Case[] = [
  // --- safetensors: the reader, and `jfa generate` on a model folder that holds the file ---
  ...weightsCases.flatMap((w): Case[] => [
    {
      id: `safetensors/${w.name}`,
      call: (c) => loadSafetensors(file(c, weightsFile, w.bytes(c))),
      names: () => weightsFile,
      says: w.says,
    },
    {
      id: `safetensors/${w.name} (jfa generate)`,
      argv: (c) => ['generate', '--model', withWeights(c, w.bytes(c)), '--prompt', 'hi'],
      names: () => weightsFile,
      says: w.says,
    },
  ]),
  {
    id: 'model/tensor-missing',
    argv: (c) => ['generate', '--model', withEditedWeights(c, (h) => delete h['model.norm.weight']), '--prompt', 'hi'],
    names: () => 'model.norm.weight',
    says: /missing|no tensor/i,
  },
  {
    id: 'model/wrong-shape',
    call: (c) =>
      LlamaModel.load(
        withEditedWeights(c, (h) => {
          const t = h['model.norm.weight']!;
          t.shape = [t.shape[0]! / 2, 2];
        }),
      ),
    names: () => 'model.norm.weight',
    says: /shape/i,
  },
  { id: 'model/folder-missing', argv: (c) => ['generate', '--model', join(c.dir, 'nowhere'), '--prompt', 'hi'], names: () => 'nowhere', says: /not a directory|missing|no such|cannot/i },
  { id: 'model/weights-missing', call: (c) => LlamaModel.load(modelCopy(c, (d) => rmSync(join(d, weightsFile)))), names: () => 'model.safetensors', says: /no model\.safetensors|missing/i },

  // --- config.json ---
  { id: 'config/other-model-type', argv: (c) => ['generate', '--model', withConfig(c, (o) => (o.model_type = 'gpt2')), '--prompt', 'hi'], names: () => 'config.json', says: /gpt2.*not supported/i },
  { id: 'config/zero-hidden-size', call: (c) => LlamaModel.load(withConfig(c, (o) => (o.hidden_size = 0))), names: () => 'hidden_size', says: /positive|at least|must/i },
  { id: 'config/negative-layers', argv: (c) => ['generate', '--model', withConfig(c, (o) => (o.num_hidden_layers = -2)), '--prompt', 'hi'], names: () => 'num_hidden_layers', says: /non-negative|positive|integer|must/i },
  { id: 'config/fractional-heads', call: (c) => LlamaModel.load(withConfig(c, (o) => (o.num_attention_heads = 1.5))), names: () => 'num_attention_heads', says: /integer|must/i },
  {
    id: 'config/heads-do-not-divide-hidden',
    call: (c) => LlamaModel.load(withConfig(c, (o) => { o.num_attention_heads = 3; o.num_key_value_heads = 3; delete o.head_dim; })),
    names: () => 'num_attention_heads',
    says: /divide|multiple/i,
  },
  { id: 'config/kv-heads-do-not-divide-heads', argv: (c) => ['generate', '--model', withConfig(c, (o) => { o.num_attention_heads = 4; o.num_key_value_heads = 3; o.head_dim = 8; }), '--prompt', 'hi'], names: () => 'num_key_value_heads', says: /divide|multiple/i },
  { id: 'config/rope-kind', call: (c) => LlamaModel.load(withConfig(c, (o) => (o.rope_scaling = { rope_type: 'yarn', factor: 4 }))), names: () => 'yarn', says: /not supported/i },
  { id: 'config/not-json', call: (c) => LlamaModel.load(modelCopy(c, (d) => writeFileSync(join(d, 'config.json'), '{"model_type": "llama",'))), names: () => 'config.json', says: /JSON|parse/i },
  { id: 'config/missing', argv: (c) => ['generate', '--model', modelCopy(c, (d) => rmSync(join(d, 'config.json'))), '--prompt', 'hi'], names: () => 'config.json', says: /missing/i },
  { id: 'config/vocab-zero', call: (c) => LlamaModel.load(withConfig(c, (o) => (o.vocab_size = 0))), names: () => 'vocab_size', says: /positive|at least|must/i },
  { id: 'config/string-size', call: (c) => LlamaModel.load(withConfig(c, (o) => (o.hidden_size = '32'))), names: () => 'hidden_size', says: /integer|number|must/i },

  // --- tokenizer ---
  { id: 'tokenizer/corrupt', call: (c) => Tokenizer.fromDir(modelCopy(c, (d) => writeFileSync(join(d, 'tokenizer.json'), '{"model": {"type": "BPE", "vocab": '))), names: () => 'tokenizer.json', says: /JSON/i },
  { id: 'tokenizer/corrupt (jfa generate)', argv: (c) => ['generate', '--model', modelCopy(c, (d) => writeFileSync(join(d, 'tokenizer.json'), Buffer.from([0xff, 0xfe, 0, 1, 2]))), '--prompt', 'hi'], names: () => 'tokenizer.json', says: /JSON|tokenizer/i },
  { id: 'tokenizer/wrong-structure', call: (c) => Tokenizer.fromDir(modelCopy(c, (d) => writeFileSync(join(d, 'tokenizer.json'), '{"model": 3}'))), names: () => 'tokenizer.json', says: /tokenizer|model/i },
  { id: 'tokenizer/missing', argv: (c) => ['generate', '--model', modelCopy(c, (d) => rmSync(join(d, 'tokenizer.json'))), '--prompt', 'hi'], names: () => 'tokenizer.json', says: /missing/i },
  {
    id: 'tokenizer/ids-beyond-config-vocab',
    argv: (c) =>
      // A model of 100 tokens whose folder holds a tokenizer of 259: weights and config agree, the tokenizer does not.
      ['generate', '--model', modelCopy(c, (dir) => {
        const config = { ...(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>), vocab_size: 100 };
        using m = LlamaModel.random(config);
        m.save(dir, { 'config.json': JSON.stringify(config) });
      }), '--prompt', 'hi'],
    names: () => 'vocab_size is 100',
    says: /tokenizer\.json has token ids up to 258/,
  },

  // --- adapters ---
  { id: 'adapter/other-target-modules', argv: (c) => ['generate', '--model', c.model, '--adapter', adapterCopy(c, (d) => editJson(join(d, 'adapter_config.json'), (o) => (o.target_modules = ['c_attn', 'c_proj']))), '--prompt', 'hi'], names: () => 'c_attn', says: /not supported|target/i },
  { id: 'adapter/rank-mismatch', argv: (c) => ['generate', '--model', c.model, '--adapter', adapterCopy(c, (d) => editJson(join(d, 'adapter_config.json'), (o) => (o.r = 16))), '--prompt', 'hi'], names: () => 'adapter', says: /shape|rank|r /i },
  { id: 'adapter/weights-missing', argv: (c) => ['generate', '--model', c.model, '--adapter', adapterCopy(c, (d) => rmSync(join(d, 'adapter_model.safetensors'))), '--prompt', 'hi'], names: () => 'adapter_model.safetensors', says: /missing|cannot|no such/i },
  { id: 'adapter/config-missing', call: (c) => { using m = LlamaModel.load(c.model); m.loadAdapter(adapterCopy(c, (d) => rmSync(join(d, 'adapter_config.json')))); }, names: () => 'adapter_config.json', says: /cannot read|missing/i },
  { id: 'adapter/config-not-json', call: (c) => { using m = LlamaModel.load(c.model); m.loadAdapter(adapterCopy(c, (d) => writeFileSync(join(d, 'adapter_config.json'), 'r = 8'))); }, names: () => 'adapter_config.json', says: /JSON/i },
  { id: 'adapter/from-another-model', argv: (c) => ['generate', '--model', c.model, '--adapter', c.otherAdapter, '--prompt', 'hi'], names: () => 'adapter', says: /shape|size|does not fit|match/i },
  { id: 'adapter/rank-zero', call: (c) => { using m = LlamaModel.load(c.model); m.loadAdapter(adapterCopy(c, (d) => editJson(join(d, 'adapter_config.json'), (o) => (o.r = 0)))); }, names: () => 'adapter_config.json', says: /positive integer/i },
  {
    id: 'pool/from-another-model',
    argv: (c) => ['generate', '--model', c.model, '--adapter', adapterCopy(c, (d) => cpSync(join(c.otherAdapter, 'latent_pool.safetensors'), join(d, 'latent_pool.safetensors'))), '--prompt', 'hi'],
    names: () => 'latent_pool.safetensors',
    says: /model|shape|size|match/i,
  },
  { id: 'pool/from-another-model (library)', call: (c) => { using m = LlamaModel.load(c.model); LatentPool.load(join(c.otherAdapter, 'latent_pool.safetensors'), m); }, names: () => 'latent_pool.safetensors', says: /model|shape|size|match/i },
  { id: 'pool/not-a-pool', call: (c) => { using m = LlamaModel.load(c.model); LatentPool.load(join(c.adapter, 'adapter_model.safetensors'), m); }, names: () => 'adapter_model.safetensors', says: /pool|format/i },

  // --- JSONL ---
  { id: 'jsonl/invalid-line', argv: (c) => trainArgs(c, { data: file(c, 'new.jsonl', `${record(1)}\n${record(2)}\n{"task": "t", "instruction": \n`) }), names: () => 'new.jsonl:3', says: /invalid JSON/i },
  { id: 'jsonl/missing-field', call: (c) => readJsonl(file(c, 'new.jsonl', `${record(1)}\n{"task": "t", "instruction": "a", "input": "b"}\n`), 'instance'), names: () => 'new.jsonl:2', says: /missing field 'output'/ },
  { id: 'jsonl/wrong-type', argv: (c) => trainArgs(c, { data: file(c, 'new.jsonl', `{"task": "t", "instruction": "a", "input": 5, "output": "b"}\n`) }), names: () => 'new.jsonl:1', says: /'input' must be a string/ },
  { id: 'jsonl/not-an-object', call: (c) => readJsonl(file(c, 'new.jsonl', `${record(1)}\n[1, 2]\n`), 'instance'), names: () => 'new.jsonl:2', says: /JSON object/ },
  { id: 'jsonl/empty-file', argv: (c) => trainArgs(c, { data: file(c, 'new.jsonl', '') }), names: () => 'new.jsonl', says: /empty/i },
  { id: 'jsonl/blank-lines-only', call: (c) => readJsonl(file(c, 'new.jsonl', '\n  \n\n'), 'instance'), names: () => 'new.jsonl', says: /empty/i },
  { id: 'jsonl/binary', argv: (c) => trainArgs(c, { data: file(c, 'new.jsonl', Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0, 0, 0, 0, 0, 10, 0, 0x3e, 0])) }), names: () => 'new.jsonl', says: /binary|NUL|not a text|UTF-8/i },
  { id: 'jsonl/invalid-utf8', call: (c) => readJsonl(file(c, 'new.jsonl', Buffer.concat([Buffer.from(`${record(1)}\n{"task": "t\xff`, 'latin1'), Buffer.from('", "instruction": "a", "input": "b", "output": "c"}\n')])), 'instance'), names: () => 'new.jsonl:2', says: /UTF-8/i },
  { id: 'jsonl/utf16-bom', argv: (c) => trainArgs(c, { data: file(c, 'new.jsonl', Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(`${record(1)}\n`, 'utf16le')])) }), names: () => 'new.jsonl', says: /UTF-16/i },
  { id: 'jsonl/utf16be-bom', call: (c) => readJsonl(file(c, 'new.jsonl', Buffer.concat([Buffer.from([0xfe, 0xff]), Buffer.from(`${record(1)}\n`, 'utf16le').swap16()])), 'instance'), names: () => 'new.jsonl', says: /UTF-16/i },
  {
    id: 'jsonl/1gb-line',
    argv: (c) => {
      // A 1 GiB file of one line (sparse: cheap to make, but every byte of it is there to read).
      const path = file(c, 'new.jsonl', `{"task": "t", "instruction": "${'a'.repeat(1 << 16)}`);
      truncateSync(path, 1 << 30);
      return trainArgs(c, { data: path });
    },
    names: () => 'new.jsonl:1',
    says: /longer than|limit|MiB/i,
  },
  { id: 'jsonl/duplicate-flashbacks', argv: (c) => trainArgs(c, { method: 'flashback', flashbacks: file(c, 'flash.jsonl', `{"task": "s", "prompt": "p1"}\n{"task": "s", "prompt": "p2"}\n{"task": "s", "prompt": "p1"}\n`) }), names: () => 'flash.jsonl:3', says: /duplicate.*line 1/i },
  { id: 'jsonl/flashback-both-forms', call: (c) => readJsonl(file(c, 'flash.jsonl', `{"task": "s", "prompt": "p", "instruction": "i", "input": "x"}\n`), 'flashback'), names: () => 'flash.jsonl:1', says: /either/ },
  { id: 'jsonl/embedding-dims', call: (c) => readJsonl(file(c, 'new.jsonl', `{"task": "t", "instruction": "a", "input": "b", "output": "c", "embedding": [1, 2]}\n{"task": "t", "instruction": "a", "input": "b", "output": "c", "embedding": [1]}\n`), 'instance'), names: () => 'new.jsonl:2', says: /embedding/ },
  { id: 'jsonl/missing-file', argv: (c) => trainArgs(c, { data: join(c.dir, 'absent.jsonl') }), names: () => 'absent.jsonl', says: /cannot read|ENOENT/i },
  { id: 'jsonl/a-folder', argv: (c) => trainArgs(c, { data: c.dir }), names: (c) => c.dir, says: /cannot read|EISDIR|directory/i },
  { id: 'jsonl/eval-without-answers', argv: (c) => ['eval', '--model', c.model, '--data', c.data, '--metric', 'accuracy'], names: () => 'answer', says: /record 1/ },

  // --- options ---
  { id: 'options/negative-epochs', argv: (c) => trainArgs(c, { epochs: '-1' }), names: () => 'epochs', says: /positive|greater|>/i },
  { id: 'options/fractional-micro-batch', argv: (c) => trainArgs(c, { 'micro-batch': '1.5' }), names: () => 'microBatch', says: /integer/i },
  { id: 'options/nan-lr', argv: (c) => trainArgs(c, { lr: 'NaN' }), names: () => '--lr', says: /number/i },
  { id: 'options/negative-lr', argv: (c) => trainArgs(c, { lr: '-0.1' }), names: () => 'lr', says: /positive|greater|>/i },
  { id: 'options/zero-rank', argv: (c) => trainArgs(c, { r: '0' }), names: () => "'r'", says: /positive|greater|>/i },
  { id: 'options/unknown-method', argv: (c) => trainArgs(c, { method: 'dpo' }), names: () => 'method', says: /sft|expected|invalid/i },
  { id: 'options/unknown-metric', argv: (c) => ['eval', '--model', c.model, '--data', c.data, '--metric', 'bleurt'], names: () => 'metric', says: /rougeL|expected|invalid/i },
  { id: 'options/unknown-config-key', argv: (c) => trainArgs(c, { config: file(c, 'run.json', '{"learning_rate": 0.1}') }), names: () => 'learning_rate', says: /unrecognized|unknown/i },
  { id: 'options/config-not-yaml', argv: (c) => trainArgs(c, { config: file(c, 'run.yaml', 'lr: [0.1\n') }), names: () => 'run.yaml', says: /flow|yaml|missing|expected|unexpected/i },
  { id: 'options/config-not-object', argv: (c) => trainArgs(c, { config: file(c, 'run.json', '[1]') }), names: () => 'run.json', says: /object/i },
  { id: 'options/latent-dropout-above-one', argv: (c) => trainArgs(c, { method: 'jfa', flashbacks: c.flashbacks, 'latent-dropout': '1.5' }), names: () => 'latentDropout', says: /1|less|<=/i },
  { id: 'options/max-new-tokens-zero', argv: (c) => ['generate', '--model', c.model, '--prompt', 'hi', '--max-new-tokens', '0'], names: () => '--max-new-tokens', says: /positive integer/i },
  { id: 'options/temperature-nan', argv: (c) => ['generate', '--model', c.model, '--prompt', 'hi', '--temperature', 'nan'], names: () => '--temperature', says: /number/i },
  { id: 'options/flashback-without-file', argv: (c) => trainArgs(c, { method: 'flashback' }), names: () => 'flashback', says: /needs|requires|missing|--flashbacks/i },
  { id: 'options/resume-from-another-run', argv: (c) => trainArgs(c, { out: copyRun(c), resume: true, method: 'jfa', flashbacks: c.flashbacks }), names: () => 'another run', says: /checkpoint/i },
  { id: 'options/resume-with-nothing', argv: (c) => trainArgs(c, { out: join(c.dir, 'fresh'), resume: true }), names: () => 'fresh', says: /nothing to resume/i },
  { id: 'options/out-is-a-file', argv: (c) => trainArgs(c, { out: file(c, 'out', 'not a folder') }), names: () => 'out', says: /not a (folder|directory)|ENOTDIR|EEXIST/i },
  { id: 'options/out-under-a-file', argv: (c) => trainArgs(c, { out: join(file(c, 'plain', 'x'), 'run') }), names: () => 'plain', says: /not a (folder|directory)|ENOTDIR/i },
  { id: 'options/out-not-writable', argv: (c) => trainArgs(c, { out: join(readOnlyFolder(c), 'run') }), names: () => 'readonly', says: /cannot write|not writable|EACCES|EROFS|read-only/i },
  { id: 'options/pretrain-out-is-a-file', argv: (c) => ['pretrain', '--out', file(c, 'base', 'x'), '--hidden-size', '32', '--layers', '1', '--heads', '2'], names: () => 'base', says: /not a (folder|directory)|ENOTDIR|EEXIST/i },
  { id: 'options/pretrain-bad-data', argv: (c) => ['pretrain', '--out', join(c.dir, 'base'), '--data', file(c, 'old.jsonl', '{"task": 1}\n')], names: () => 'old.jsonl:1', says: /must be a string|missing/ },

  // --- the library API ---
  {
    id: 'api/train-nan-lr',
    call: async (c) => {
      using m = LlamaModel.load(c.model);
      await train(m, Tokenizer.fromDir(c.model), { newTrain: readJsonl(c.data, 'instance') }, { method: 'sft', lr: Number.NaN, outDir: join(c.dir, 'run') });
    },
    names: () => 'lr',
    says: /finite|positive|number/i,
  },
  {
    id: 'api/train-zero-micro-batch',
    call: async (c) => {
      using m = LlamaModel.load(c.model);
      await train(m, Tokenizer.fromDir(c.model), { newTrain: readJsonl(c.data, 'instance') }, { method: 'sft', microBatch: 0, outDir: join(c.dir, 'run') });
    },
    names: () => 'microBatch',
    says: /positive integer/i,
  },
  {
    id: 'api/train-unknown-method',
    call: async (c) => {
      using m = LlamaModel.load(c.model);
      await train(m, Tokenizer.fromDir(c.model), { newTrain: readJsonl(c.data, 'instance') }, { method: 'dpo' as never, outDir: join(c.dir, 'run') });
    },
    names: () => 'dpo',
    says: /method/i,
  },
  {
    id: 'api/train-no-records',
    call: async (c) => {
      using m = LlamaModel.load(c.model);
      await train(m, Tokenizer.fromDir(c.model), { newTrain: [] }, { method: 'sft', outDir: join(c.dir, 'run') });
    },
    names: () => 'newTrain',
    says: /no records|empty/i,
  },
  {
    id: 'api/train-jfa-without-flashbacks',
    call: async (c) => {
      using m = LlamaModel.load(c.model);
      await train(m, Tokenizer.fromDir(c.model), { newTrain: readJsonl(c.data, 'instance') }, { method: 'jfa', outDir: join(c.dir, 'run') });
    },
    names: () => 'flashbacks',
    says: /needs|requires|no /i,
  },
];

/** `jfa train` with the valid fixtures, overridden by `flags` (true: a bare flag). */
function trainArgs(c: Ctx, flags: Record<string, string | boolean>): string[] {
  const all: Record<string, string | boolean> = { model: c.model, data: c.data, method: 'sft', out: join(c.dir, 'run'), 'micro-batch': '2', accumulation: '1', ...flags };
  return ['train', ...Object.entries(all).flatMap(([k, v]) => (v === true ? [`--${k}`] : v === false ? [] : [`--${k}`, v]))];
}

/** A copy of another run's --out folder (its checkpoint is from an sft run). */
function copyRun(c: Ctx): string {
  const dir = join(c.dir, 'another run');
  cpSync(c.otherRun, dir, { recursive: true });
  return dir;
}

/** Read-only mounts made by cases, unmounted by the runner after each case. */
export const mounts: string[] = [];

/** A folder no process may write to: mode 0555 for an ordinary user; root, whom modes do not stop, gets a read-only tmpfs. */
function readOnlyFolder(c: Ctx): string {
  const dir = join(c.dir, 'readonly');
  mkdirSync(dir);
  if (process.getuid?.() === 0) {
    const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=64k', 'tmpfs', dir], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`cannot make a read-only folder as root (mount: ${r.stderr.trim()})`);
    mounts.push(dir);
  } else chmodSync(dir, 0o555);
  return dir;
}
