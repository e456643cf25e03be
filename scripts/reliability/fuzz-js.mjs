#!/usr/bin/env node
// A seeded mutation fuzzer for the TypeScript file readers (dist/ must be built):
//   jsonl      parseJsonl / readJsonl (lib/data/jsonl.ts)
//   tokenizer  Tokenizer.fromDir (lib/model/tokenizer.ts) on a mutated tokenizer.json / tokenizer_config.json
// Every input must either parse or throw an Error whose message names the file (and, for JSONL,
// the line); anything else is a finding: a TypeError or RangeError from inside the reader, a
// non-Error, a message without the file, an input that takes over 5 s, or RSS past the limit.
// Findings are written to --artifacts (default: a temp folder) so they can become seeds.
// Usage: node scripts/reliability/fuzz-js.mjs <jsonl|tokenizer> [--seconds 30] [--seed 1] [--artifacts DIR]
// Prints one JSON line last: {"target", "runs", "crashes", "seconds", "seed", "artifacts"}.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : fallback;
};
const target = args[0];
const seconds = Number(option('seconds', '30'));
const seed = Number(option('seed', '1'));
const artifacts = option('artifacts', mkdtempSync(join(tmpdir(), 'jfa-fuzz-js-')));
const SLOW_MS = 5000;
const RSS_LIMIT = 2048 * 2 ** 20;

// mulberry32, as lib/data/rng.ts: the same seed replays the same inputs.
function rng(s) {
  let state = s >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (lo, hi) => lo + Math.floor(next() * (hi - lo + 1));
  return { next, int, pick: (a) => a[int(0, a.length - 1)] };
}
const r = rng(seed);

// --- byte mutations --------------------------------------------------------------------------
const TOKENS = [
  '{', '}', '[', ']', '"', ':', ',', '\\', '\\u', '\\ud800', '\\u0000', 'null', 'true', '-0', '1e999', '-1', '0.5',
  '9007199254740993', '\n', '\r\n', '\r', '\t', ' ', '\u2028', '\ufeff', '"task"', '"instruction"', '"input"', '"output"',
  '"answer"', '"prompt"', '"embedding"', '"__proto__"', '"constructor"', '[1,2,3]', '[]', '{}', '"embedding":[1e999]',
  '"embedding":[]', '"embedding":[0.1,"x"]', '"task":1',
].map((t) => Buffer.from(t));
const BAD_UTF8 = [[0xff], [0xfe], [0xc0, 0x80], [0xed, 0xa0, 0x80], [0xf8, 0x88, 0x80, 0x80, 0x80], [0xe2, 0x82], [0x80], [0xef, 0xbb, 0xbf], [0xff, 0xfe], [0xfe, 0xff], [0x00]].map((b) => Buffer.from(b));

function utf16(buf, bigEndian) {
  const le = Buffer.from(buf.toString('utf8'), 'utf16le');
  if (bigEndian) le.swap16();
  return Buffer.concat([Buffer.from(bigEndian ? [0xfe, 0xff] : [0xff, 0xfe]), le]);
}

/** One random edit of `buf`; `seeds` gives whole lines to splice in. */
function mutateOnce(buf, seeds) {
  const at = () => r.int(0, buf.length);
  const insert = (piece, i = at()) => Buffer.concat([buf.subarray(0, i), piece, buf.subarray(i)]);
  // The costly edits (cases 9-11: megabytes, thousands of lines) are drawn 1 time in 100 each.
  const u = r.next();
  const edit = u < 0.03 ? 9 + Math.floor(u * 100) : r.pick([0, 1, 2, 3, 4, 5, 6, 7, 8, 12]);
  switch (edit) {
    case 0: { // flip a bit
      if (!buf.length) return buf;
      const b = Buffer.from(buf);
      b[r.int(0, b.length - 1)] ^= 1 << r.int(0, 7);
      return b;
    }
    case 1: { // set a byte
      if (!buf.length) return buf;
      const b = Buffer.from(buf);
      b[r.int(0, b.length - 1)] = r.int(0, 255);
      return b;
    }
    case 2: { // delete a range
      const i = at();
      return Buffer.concat([buf.subarray(0, i), buf.subarray(Math.min(buf.length, i + r.int(1, 32)))]);
    }
    case 3: { // duplicate a range
      const i = at();
      return insert(buf.subarray(i, Math.min(buf.length, i + r.int(1, 64))));
    }
    case 4:
    case 5:
      return insert(r.pick(TOKENS));
    case 6:
      return insert(r.pick(BAD_UTF8));
    case 7: { // splice in a seed line, at a line boundary or anywhere
      const line = Buffer.from(`${r.pick(seeds)}\n`);
      const nl = buf.indexOf(0x0a, at());
      return insert(line, r.next() < 0.7 && nl >= 0 ? nl + 1 : at());
    }
    case 8: // a byte-order mark, or the whole text as UTF-16
      return r.next() < 0.5 ? Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), buf]) : utf16(buf, r.next() < 0.3);
    case 9: { // one huge line: a long string value, or long junk
      const n = r.int(1, 8) * 2 ** 20 * (r.next() < 0.2 ? 2 : 1);
      const line = r.next() < 0.5
        ? `{"task":"t","instruction":"${'x'.repeat(n)}","input":"","output":"o"}\n`
        : `${'['.repeat(r.int(1, 4))}${'9'.repeat(n)}\n`;
      return insert(Buffer.from(line), 0);
    }
    case 10: { // many lines
      const lines = Array.from({ length: r.int(100, 20000) }, () => (r.next() < 0.5 ? '' : r.pick(seeds)));
      return Buffer.concat([buf, Buffer.from(lines.join('\n'))]);
    }
    case 11: // deep nesting
      return insert(Buffer.from(`${'['.repeat(r.int(1000, 200000))}${r.next() < 0.5 ? ']'.repeat(10) : ''}\n`), 0);
    default: { // a random run of bytes
      const b = Buffer.alloc(r.int(1, 64));
      for (let i = 0; i < b.length; i++) b[i] = r.int(0, 255);
      return insert(b);
    }
  }
}

function mutate(buf, seeds) {
  let out = buf;
  for (let n = r.int(1, 5); n > 0; n--) out = mutateOnce(out, seeds);
  return out;
}

// Committed inputs (seeds and past findings), replayed before any mutation.
function corpus(name) {
  const dir = join(root, 'scripts', 'reliability', 'corpus', name);
  return existsSync(dir) ? readdirSync(dir).sort().map((f) => readFileSync(join(dir, f))) : [];
}
const SEPARATOR = '\n--- tokenizer_config.json ---\n';

// --- the run ---------------------------------------------------------------------------------
let runs = 0;
let crashes = 0;
const started = Date.now();
const work = mkdtempSync(join(tmpdir(), 'jfa-fuzz-js-work-'));

const kinds = new Set();

// Every finding counts; the first input of each kind (its message without numbers) is kept.
function finding(what, input, file) {
  crashes++;
  const kind = what.replace(/\d+/g, 'N').slice(0, 200);
  if (kinds.has(kind)) return;
  kinds.add(kind);
  mkdirSync(artifacts, { recursive: true });
  const saved = join(artifacts, `${target}-crash-${crashes}${file ? `-${file}` : ''}`);
  writeFileSync(saved, input);
  console.error(`fuzz-js ${target}: ${what}\n  input saved to ${saved} (${input.length} bytes)`);
}

/** Runs `fn`: it must return, or throw an Error that `accept` takes, in time and within the RSS limit. */
function probe(input, file, fn, accept) {
  const t = performance.now();
  try {
    fn();
  } catch (e) {
    if (!(e instanceof Error)) return finding(`threw a non-Error: ${String(e)}`, input, file);
    if (!accept(e)) return finding(`threw ${e.name}: ${e.message.slice(0, 500)}`, input, file);
  } finally {
    runs++;
  }
  const ms = performance.now() - t;
  if (ms > SLOW_MS) finding(`took ${ms.toFixed(0)} ms (limit ${SLOW_MS})`, input, file);
  const rss = process.memoryUsage().rss;
  if (rss > RSS_LIMIT) finding(`RSS ${(rss / 2 ** 20).toFixed(0)} MiB past ${RSS_LIMIT / 2 ** 20} MiB`, input, file);
}

async function fuzzJsonl() {
  const { parseJsonl, readJsonl, DataError } = await import(join(root, 'dist', 'data', 'jsonl.js'));
  const seeds = [
    '{"task":"add","instruction":"Add the numbers.","input":"2 3","output":"5"}',
    '{"task":"add","instruction":"Add.","input":"","output":"5","answer":"5"}',
    '{"task":"t","instruction":"caf\u00e9 \u4e2d\u6587 \ud83d\ude00","input":"\\u00e9\\n","output":"ok","embedding":[0.1,-2,3e-5]}',
    '{"task":"old","instruction":"Recall.","input":"x"}',
    '{"task":"old","prompt":"Say hi."}',
    '{"task":"old","prompt":"p","embedding":[1,2,3]}',
    '{"task":"x","instruction":"i","input":"j","output":"o","extra":{"nested":[1,{"a":null}]}}',
    '',
    '   ',
  ];
  const bases = [seeds.slice(0, 3).join('\n'), seeds.slice(3, 6).join('\n'), seeds.join('\n'), seeds[0], ''].map((s) => Buffer.from(s));
  const file = join(work, 'data.jsonl');
  // "FILE:LINE: what", or "FILE: what" for problems of the whole file (empty, unreadable).
  const accept = (name, lineCount) => (e) =>
    e instanceof DataError &&
    e.problems.length > 0 &&
    e.message.length < 64 * 1024 &&
    e.problems.every((p) => {
      if (!p.startsWith(`${name}:`)) return false;
      const m = /^:(\d+): ./.exec(p.slice(name.length));
      return m ? Number(m[1]) >= 1 && Number(m[1]) <= lineCount : /^: [a-z]/.test(p.slice(name.length));
    });
  const replay = corpus('jsonl').flatMap((input) => [[input, 'instance'], [input, 'flashback']]);
  while (replay.length || (Date.now() - started) / 1000 < seconds) {
    const replayed = replay.shift();
    const [input, kind] = replayed ?? [mutate(r.pick(bases), seeds), r.next() < 0.5 ? 'instance' : 'flashback'];
    const text = input.toString('utf8');
    const lineCount = text.split('\n').length;
    probe(input, 'parse', () => checkRecords(parseJsonl(text, 'mem.jsonl', kind), kind), accept('mem.jsonl', lineCount));
    if (replayed || runs % 4 === 0) {
      // From disk: the bytes as they are (invalid UTF-8, BOMs), decoded by the reader itself.
      writeFileSync(file, input);
      probe(input, 'read', () => checkRecords(readJsonl(file, kind), kind), accept(file, lineCount));
    }
  }
}

// A reader that returns must return what the data contract promises.
function checkRecords(records, kind) {
  if (!Array.isArray(records) || records.length === 0) throw new TypeError('returned no records without an error');
  for (const rec of records) {
    const fields = kind === 'instance' ? ['task', 'instruction', 'input', 'output'] : 'prompt' in rec ? ['task', 'prompt'] : ['task', 'instruction', 'input'];
    for (const f of fields) if (typeof rec[f] !== 'string') throw new TypeError(`returned a record whose '${f}' is ${typeof rec[f]}`);
    if (rec.embedding !== undefined && !(Array.isArray(rec.embedding) && rec.embedding.every(Number.isFinite)))
      throw new TypeError('returned a record with a non-finite embedding');
  }
}

// Structure-aware edits of a JSON document: a value replaced, a key dropped, an array emptied.
function mutateJson(doc) {
  const copy = structuredClone(doc);
  const nodes = [];
  const walk = (v, parent, key) => {
    nodes.push({ parent, key });
    if (v && typeof v === 'object') for (const k of Object.keys(v)) if (nodes.length < 5000) walk(v[k], v, Array.isArray(v) ? Number(k) : k);
  };
  walk(copy, undefined, undefined);
  const VALUES = [null, 0, -1, 1.5, 2 ** 53, 1e308, '', 'x', 'ĠĠ', true, [], {}, [[1, 2]], { a: 1 }, [null], ['a', 'b'], 'a b'];
  for (let n = r.int(1, 3); n > 0; n--) {
    const { parent, key } = r.pick(nodes);
    if (!parent) continue;
    if (r.next() < 0.3 && !Array.isArray(parent)) delete parent[key];
    else parent[key] = structuredClone(r.pick(VALUES));
  }
  return copy;
}

async function fuzzTokenizer() {
  const { Tokenizer } = await import(join(root, 'dist', 'model', 'tokenizer.js'));
  const model = join(root, 'models', 'jfa-base');
  const tokenizer = JSON.parse(readFileSync(join(model, 'tokenizer.json'), 'utf8'));
  const config = JSON.parse(readFileSync(join(model, 'tokenizer_config.json'), 'utf8'));
  const dir = join(work, 'model');
  mkdirSync(dir, { recursive: true });
  const tokFile = join(dir, 'tokenizer.json');
  const cfgFile = join(dir, 'tokenizer_config.json');
  const accept = (e) => e.message.includes(tokFile) || e.message.includes(cfgFile);
  // A corpus file is tokenizer.json, SEPARATOR, tokenizer_config.json (as findings are saved).
  const replay = corpus('tokenizer').map((input) => {
    const i = input.indexOf(SEPARATOR);
    return i < 0 ? [input, Buffer.from(JSON.stringify(config))] : [input.subarray(0, i), input.subarray(i + SEPARATOR.length)];
  });
  while (replay.length || (Date.now() - started) / 1000 < seconds) {
    let [tok, cfg] = replay.shift() ?? [];
    if (!tok) {
      const which = r.int(0, 2);
      tok = Buffer.from(JSON.stringify(which === 1 ? tokenizer : mutateJson(tokenizer)));
      cfg = Buffer.from(JSON.stringify(which === 0 ? config : mutateJson(config)));
      if (r.next() < 0.2) tok = mutate(tok, ['{}']);
      if (r.next() < 0.1) cfg = mutate(cfg, ['{}']);
    }
    writeFileSync(tokFile, tok);
    writeFileSync(cfgFile, cfg);
    const input = Buffer.concat([tok, Buffer.from(SEPARATOR), cfg]);
    // Loading may refuse the files; a tokenizer that loads must encode and decode plain text.
    probe(input, 'tokenizer', () => {
      const t = Tokenizer.fromDir(dir);
      t.decode(t.encode('Hello world, 12 + 3 = 15.'));
    }, accept);
  }
}

const targets = { jsonl: fuzzJsonl, tokenizer: fuzzTokenizer };
if (!targets[target]) {
  console.error(`usage: fuzz-js.mjs <${Object.keys(targets).join('|')}> [--seconds N] [--seed N] [--artifacts DIR]`);
  process.exit(2);
}
await targets[target]();
rmSync(work, { recursive: true, force: true });
const summary = { target, runs, crashes, seconds: Number(((Date.now() - started) / 1000).toFixed(1)), seed, artifacts };
console.log(JSON.stringify(summary));
process.exit(crashes ? 1 : 0);
