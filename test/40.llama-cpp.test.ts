// The real runtime: node-llama-cpp (llama.cpp's CPU build, a prebuilt binary) loads the GGUF files
// `jfa export gguf` writes, of the shipped base and of a trained adapter folded into it, and
// continues prompts greedily with our tokens: equal for f32 (and a folded adapter in f16), nearly
// all for the base in f16 (rounding may flip a close choice), counted for q8_0. A file
// written without llama.cpp's q/k row order disagrees, which shows the comparison can fail. Its
// tokenizer splits a few hundred texts (many scripts, digits, runs of whitespace) as ours does.
// node-llama-cpp is installed once per version into a folder under the system's temp dir (only the
// package and its linux-x64 binaries, no GPU variants, no install scripts), and runs in a child
// process: it tests its binary in a forked process, which needs a script file.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { generateSuite } from '../lib/data/suite.js';
import { promptText } from '../lib/jfa/examples.js';
import { loadAdapterWithRounds } from '../lib/jfa/continual.js';
import { train } from '../lib/jfa/trainer.js';
import { writeGguf } from '../lib/model/gguf.js';
import { llamaGguf } from '../lib/model/gguf-llama.js';
import { LlamaModel } from '../lib/model/llama.js';
import { Tokenizer } from '../lib/model/tokenizer.js';
import { jfa, root, tinyJfaRun } from './helpers.js';

const VERSION = '3.21.1';
const dir = mkdtempSync(join(tmpdir(), 'jfa-llama-cpp-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const base = join(root, 'models', 'jfa-base');
const run = join(dir, 'run');
const NEW_TOKENS = 48;

/** node-llama-cpp's prebuilt package for this machine. */
function binaryPackage(): string {
  const platform = process.platform === 'darwin' ? 'mac' : process.platform === 'win32' ? 'win' : process.platform;
  return `@node-llama-cpp/${platform}-${process.arch}${platform === 'mac' && process.arch === 'arm64' ? '-metal' : ''}`;
}

/** The folder with node-llama-cpp installed (once per version), and the runner script in it. */
function installNodeLlamaCpp(): string {
  const folder = join(tmpdir(), `jfa-node-llama-cpp-${VERSION}`);
  if (existsSync(join(folder, 'installed.json'))) {
    console.log(`node-llama-cpp ${VERSION}: cached in ${folder}`);
  } else {
    const tmp = `${folder}.tmp-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true });
    writeFileSync(join(tmp, 'package.json'), '{ "name": "jfa-llama-cpp-scratch", "private": true }\n');
    const started = performance.now();
    // --omit=optional: none of the 14 platform/GPU variants but the one named; --ignore-scripts: its
    // postinstall would build llama.cpp from source when no binary fits, which we never want here.
    const r = spawnSync('npm', ['install', '-E', '--omit=optional', '--ignore-scripts', '--no-audit', '--no-fund', `node-llama-cpp@${VERSION}`, `${binaryPackage()}@${VERSION}`], {
      cwd: tmp,
      encoding: 'utf8',
      timeout: 600_000,
    });
    if (r.status !== 0) throw new Error(`npm install node-llama-cpp@${VERSION} failed: ${r.stderr}`);
    const seconds = (performance.now() - started) / 1000;
    const du = spawnSync('du', ['-sm', join(tmp, 'node_modules')], { encoding: 'utf8' }).stdout.split('\t')[0];
    writeFileSync(join(tmp, 'installed.json'), JSON.stringify({ version: VERSION, seconds, megabytes: Number(du) }));
    rmSync(folder, { recursive: true, force: true });
    renameSync(tmp, folder);
    console.log(`node-llama-cpp ${VERSION}: installed in ${seconds.toFixed(1)} s, ${du} MB, into ${folder}`);
  }
  copyFileSync(join(root, 'test', 'llama-cpp-runner.mjs'), join(folder, 'runner.mjs'));
  return folder;
}

interface RunnerResult {
  continuations: number[][];
  tokenized: number[][];
  generateMs: number;
  bos: number | null;
  eos: number | null;
}

let scratch: string;
function llamaCpp(gguf: string, prompts: number[][], texts: string[] = [], lora?: string): RunnerResult {
  const spec = join(dir, `spec-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(spec, JSON.stringify({ gguf, prompts, newTokens: NEW_TOKENS, texts, ...(lora ? { lora } : {}) }));
  const r = spawnSync(process.execPath, [join(scratch, 'runner.mjs'), spec], { cwd: scratch, encoding: 'utf8', timeout: 300_000 });
  if (r.status !== 0) {
    if (/NoBinaryFoundError/.test(r.stderr)) throw new Error(`node-llama-cpp ${VERSION} has no prebuilt binary that runs here and would build llama.cpp from source; not done: ${r.stderr.slice(-400)}`);
    throw new Error(`node-llama-cpp failed (${r.status}): ${r.stderr.slice(-2000)}`);
  }
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as RunnerResult;
}

const tokenizer = Tokenizer.fromDir(base);
// The base's old suites (it was pretrained on them): prompts it answers in words and numbers.
const suite = generateSuite({ seed: 11, oldTrainPerSuite: 4, oldEvalPerSuite: 2, instancesPerTask: 1 });
const prompts = Object.values(suite.old).flatMap((s) => s.eval.slice(0, 2)).slice(0, 8).map(promptText);
const promptIds = prompts.map((p) => tokenizer.encode(p));

/** Our greedy continuations, one prompt at a time (no padding), the adapter's rounds beneath when given. */
async function ours(adapter?: string): Promise<number[][]> {
  using model = await LlamaModel.loadAsync(base);
  if (adapter) loadAdapterWithRounds(model, adapter);
  const out: number[][] = [];
  for (const p of prompts) {
    const { ids, attentionMask } = tokenizer.batch([p]);
    const t = await model.generate(ids, { attentionMask, maxNewTokens: NEW_TOKENS });
    out.push(Array.from(t.toTypedArray() as BigInt64Array, Number));
  }
  return out;
}

/** Per prompt, how many leading tokens agree; and the tokens that agree position by position. */
function agreement(a: number[][], b: number[][]): { prefix: number[]; same: number; total: number } {
  const prefix = a.map((row, i) => {
    let n = 0;
    while (n < row.length && row[n] === b[i]?.[n]) n++;
    return n;
  });
  let same = 0;
  let total = 0;
  a.forEach((row, i) => row.forEach((t, j) => ((total += 1), (same += t === b[i]?.[j] ? 1 : 0))));
  return { prefix, same, total };
}

function exportFile(name: string, type: string, adapter?: string, ...more: string[]): string {
  const out = join(dir, name);
  const started = performance.now();
  const r = jfa('export', 'gguf', '--model', base, ...(adapter ? ['--adapter', adapter] : []), '--out', out, '--type', type, ...more);
  if (r.status !== 0) throw new Error(`jfa export gguf failed: ${r.stderr}`);
  console.log(`${name}: ${(statSync(out).size / 2 ** 20).toFixed(1)} MiB, jfa export gguf took ${((performance.now() - started) / 1000).toFixed(1)} s (process start included)`);
  return out;
}

let baseTokens: number[][];
let adapterTokens: number[][];
beforeAll(async () => {
  scratch = installNodeLlamaCpp();
  const { suite: s, options } = tinyJfaRun();
  using model = await LlamaModel.loadAsync(base);
  const data = { newTrain: s.newTrain.slice(0, 24), flashbacks: s.flashbacks.slice(0, 8) };
  (await train(model, Tokenizer.fromDir(base), data, { ...options, lr: 2e-2, maxTokens: 128, latentMode: 'drop', outDir: run })).pool?.dispose();
  baseTokens = await ours();
  adapterTokens = await ours(join(run, 'adapter'));
});

describe(`node-llama-cpp ${VERSION} runs our GGUF with our greedy tokens`, () => {
  for (const type of ['f32', 'f16'] as const) {
    it(`the shipped base, ${type}: ${prompts.length} prompts x ${NEW_TOKENS} tokens ${type === 'f32' ? 'equal' : 'equal but for a close choice'}`, () => {
      const theirs = llamaCpp(exportFile(`base.${type}.gguf`, type), promptIds);
      const a = agreement(baseTokens, theirs.continuations);
      console.log(`base ${type}: ${a.same}/${a.total} tokens agree; leading agreement per prompt ${a.prefix.join(' ')}`);
      if (type === 'f32') expect(theirs.continuations).toEqual(baseTokens);
      else {
        // Weights rounded to f16 can flip a close choice of ours, after which a continuation goes
        // its own way (the shipped base at commit c68d42e: one prompt of 8, at its 10th token).
        // Most prompts still agree to the end; a wrong layout agrees on almost nothing (below).
        expect(a.prefix.filter((n) => n === NEW_TOKENS).length).toBeGreaterThanOrEqual(prompts.length - 2);
        expect(a.same / a.total).toBeGreaterThan(0.9);
      }
    });

    it(`a trained adapter folded in, ${type}: ${prompts.length} prompts x ${NEW_TOKENS} tokens equal`, () => {
      const theirs = llamaCpp(exportFile(`adapter.${type}.gguf`, type, join(run, 'adapter')), promptIds);
      const a = agreement(adapterTokens, theirs.continuations);
      console.log(`adapter ${type}: ${a.same}/${a.total} tokens agree; leading agreement per prompt ${a.prefix.join(' ')}`);
      expect(theirs.continuations).toEqual(adapterTokens);
      // The adapter changed the model: the base's tokens would not pass this test.
      expect(adapterTokens).not.toEqual(baseTokens);
    });
  }

  it('q8_0: agreement counted (quantised weights may change a close choice)', () => {
    for (const [what, adapter, reference] of [['base', undefined, baseTokens], ['adapter', join(run, 'adapter'), adapterTokens]] as const) {
      const theirs = llamaCpp(exportFile(`${what}.q8_0.gguf`, 'q8_0', adapter), promptIds);
      const a = agreement(reference!, theirs.continuations);
      console.log(`${what} q8_0: ${a.same}/${a.total} tokens agree (${((100 * a.same) / a.total).toFixed(1)}%); leading agreement per prompt ${a.prefix.join(' ')}`);
      // Far above what a wrong layout gives (the next test): quantisation moves logits a little, not the argmax of most steps.
      expect(a.same / a.total).toBeGreaterThan(0.5);
    }
  });

  it(`the adapter as a GGUF LoRA adapter (--as-adapter) on the base's f32 file: ${prompts.length} prompts x ${NEW_TOKENS} tokens equal`, () => {
    const file = join(dir, 'base.f32.gguf');
    const lora = exportFile('adapter.lora.gguf', 'f32', join(run, 'adapter'), '--as-adapter');
    const theirs = llamaCpp(existsSync(file) ? file : exportFile('base.f32.gguf', 'f32'), promptIds, [], lora);
    const a = agreement(adapterTokens, theirs.continuations);
    console.log(`base f32 + LoRA adapter: ${a.same}/${a.total} tokens agree; leading agreement per prompt ${a.prefix.join(' ')}`);
    expect(theirs.continuations).toEqual(adapterTokens);
  });

  it("a file without llama.cpp's interleaved q/k rows disagrees (the comparison can fail)", async () => {
    using model = await LlamaModel.loadAsync(base);
    const { metadata, tensors } = llamaGguf(model, base, { type: 'f32' });
    const hf = model.weights();
    const wrong = tensors.map((t) => {
      const m = /^blk\.(\d+)\.attn_([qk])\.weight$/.exec(t.name);
      return m ? { ...t, data: () => hf[`model.layers.${m[1]}.self_attn.${m[2]}_proj.weight`]!.toTypedArray() as Float32Array } : t;
    });
    const file = join(dir, 'rotate-half.gguf');
    writeGguf(file, metadata, wrong);
    Object.values(hf).forEach((t) => t.dispose());
    const a = agreement(baseTokens, llamaCpp(file, promptIds).continuations);
    console.log(`without the q/k interleave: ${a.same}/${a.total} tokens agree; leading agreement per prompt ${a.prefix.join(' ')}`);
    expect(a.prefix.every((n) => n === NEW_TOKENS)).toBe(false);
  });
});

describe("node-llama-cpp's tokenizer from our GGUF splits text as ours does", () => {
  // Pieces of many scripts and shapes, joined by runs of different whitespace: a few hundred texts.
  const pieces = [
    'Hello world', 'Grüße aus Köln', 'naïve café', 'Привет, мир!', 'Ελληνικά', 'שלום עולם', 'مرحبا بالعالم', 'नमस्ते दुनिया', '日本語のテキスト', '中文分词测试',
    '한국어 문장', 'ไทย', '👍🏽 emoji 🎉🚀', '1234567890', '3.14159', '1,000,000', '-42', '2+2=4', '0x1F', "I'm", "you're", "they'll", "it's", "we've", "he'd",
    "IT'S", 'CamelCaseWord', 'snake_case_word', 'e-mail@example.com', 'https://example.org/a?b=c', '(parens)', '[brackets]', '{"json": true}', '<tag>', '...', '!!!',
    '\t', 'tab\tinside', 'line\nbreak', '\r\n', 'end.',
  ];
  const spaces = ['', ' ', '  ', '   ', '\n', '\n\n', '\t', ' \n ', '\u00a0', '    \n'];
  const texts: string[] = [...prompts, ...suite.flashbacks.slice(0, 60).map(promptText), ...pieces];
  let state = 7;
  const next = (n: number) => ((state = (state * 1103515245 + 12345) % 2 ** 31), state % n);
  while (texts.length < 400) {
    const k = 1 + next(6);
    let t = spaces[next(spaces.length)]!;
    for (let i = 0; i < k; i++) t += pieces[next(pieces.length)]! + spaces[next(spaces.length)]!;
    texts.push(t);
  }

  it(`${texts.length} texts tokenize to the same ids, BOS and EOS the same`, () => {
    const file = join(dir, 'base.f32.gguf');
    const theirs = llamaCpp(existsSync(file) ? file : exportFile('base.f32.gguf', 'f32'), [], texts);
    const mismatches = texts.filter((t, i) => JSON.stringify(theirs.tokenized[i]) !== JSON.stringify(tokenizer.encode(t, { addSpecialTokens: false })));
    console.log(`tokenizer: ${texts.length - mismatches.length}/${texts.length} texts tokenize alike${mismatches.length ? `; first mismatch ${JSON.stringify(mismatches[0])}` : ''}`);
    expect(mismatches).toEqual([]);
    expect([theirs.bos, theirs.eos]).toEqual([tokenizer.bosTokenId, tokenizer.eosTokenId]);
  });
});

describe("docs/serving.md's node-llama-cpp example", () => {
  it('type-checks against the installed node-llama-cpp (strict, as test/36 checks the other examples)', () => {
    const text = readFileSync(join(root, 'docs', 'serving.md'), 'utf8');
    const blocks = [...text.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!).filter((code) => /from 'node-llama-cpp'/.test(code));
    expect(blocks.length).toBeGreaterThanOrEqual(1);
    // Inside the scratch folder, so that 'node-llama-cpp' resolves to the installed package.
    const check = mkdtempSync(join(scratch, 'docs-'));
    try {
      writeFileSync(join(check, 'package.json'), JSON.stringify({ type: 'module' }));
      const files = blocks.map((code, i) => {
        const file = join(check, `block-${i}.ts`);
        writeFileSync(file, code);
        return file;
      });
      const planted = join(check, 'planted.ts');
      writeFileSync(planted, "import { getLlama } from 'node-llama-cpp';\nconst llama = await getLlama({ gpu: 'no-such-gpu' });\nexport { llama };\n");
      const { options } = ts.convertCompilerOptionsFromJson(
        { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', lib: ['ES2022'], types: ['node'], typeRoots: [join(root, 'node_modules', '@types')], strict: true, exactOptionalPropertyTypes: true, noUncheckedIndexedAccess: true, noEmit: true, skipLibCheck: true },
        check,
      );
      const program = ts.createProgram([...files, planted], options);
      const errors = (f: string) => ts.getPreEmitDiagnostics(program, program.getSourceFile(f)).map((d) => `TS${d.code} ${ts.flattenDiagnosticMessageText(d.messageText, ' ')}`);
      for (const f of files) expect(errors(f), f).toEqual([]);
      // The check can fail: a wrong option is caught.
      expect(errors(planted).length).toBeGreaterThan(0);
    } finally {
      rmSync(check, { recursive: true, force: true });
    }
  });
});
