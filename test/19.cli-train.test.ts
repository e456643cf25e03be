// The jfa command end to end at tiny sizes: pretrain -> train (every method) -> eval, and bad
// input refused with a one-line reason before any training starts.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { trainDefaults } from '../lib/cli/train.js';
import { generateSuite, writeSuite } from '../lib/data/suite.js';
import { METHODS } from '../lib/jfa/methods.js';
import { TRAIN_DEFAULTS } from '../lib/jfa/plan.js';
import { root } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'jfa-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const data = join(dir, 'data');
const base = join(dir, 'base');
const jfa = (...args: string[]) => spawnSync(process.execPath, [join(root, 'dist', 'cli', 'main.js'), ...args], { encoding: 'utf8', cwd: dir, timeout: 300_000 });
const tiny = ['--epochs', '1', '--micro-batch', '8', '--accumulation', '1', '--max-tokens', '96', '--r', '2'];

beforeAll(() => {
  const suite = generateSuite({ seed: 4, oldTrainPerSuite: 6, oldEvalPerSuite: 3, flashbacksPerSuite: 2, instancesPerTask: 1, evalInstancesPerTask: 1 });
  suite.newTrain = suite.newTrain.slice(0, 16);
  suite.newEval = suite.newEval.slice(0, 4);
  writeSuite(data, suite);
});

describe('jfa pretrain, train, eval', () => {
  it('pretrain writes a model directory', () => {
    const r = jfa('pretrain', '--out', base, '--data', join(data, 'old-logic-train.jsonl'), join(data, 'old-science-mc-train.jsonl'), '--hidden-size', '32', '--layers', '1', '--heads', '2', '--merges', '30', '--epochs', '2', '--json');
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ records: 12, steps: 2 });
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json']) expect(existsSync(join(base, f))).toBe(true);
  });

  for (const method of ['sft', 'replay', 'flashback', 'jfa'] as const) {
    it(`train --method ${method}, then eval with its adapter`, () => {
      const out = join(dir, method);
      const extra = method === 'replay' ? ['--replay', join(data, 'old-logic-train.jsonl')] : method === 'sft' ? [] : ['--flashbacks', join(data, 'flashbacks.jsonl')];
      const r = jfa('train', '--model', base, '--data', join(data, 'new-train.jsonl'), ...extra, '--method', method, '--out', out, ...tiny, '--json');
      expect(r.status, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ method, steps: method === 'replay' ? 3 : 2 });
      expect(readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n')).toHaveLength(method === 'replay' ? 3 : 2);
      const e = jfa('eval', '--model', base, '--adapter', join(out, 'adapter'), '--data', join(data, 'old-logic-eval.jsonl'), '--metric', 'accuracy', '--max-new-tokens', '4', '--json');
      expect(e.status, e.stderr).toBe(0);
      const scores = JSON.parse(e.stdout) as { records: number; accuracy: number };
      expect(scores.records).toBe(3);
      expect(scores.accuracy).toBeGreaterThanOrEqual(0);
    });
  }

  it('eval on new tasks reports ROUGE-L; --config supplies options and refuses unknown keys', () => {
    writeFileSync(join(dir, 'eval.json'), JSON.stringify({ model: base, data: join(data, 'new-eval.jsonl'), metric: 'rougeL', maxNewTokens: 4 }));
    const e = jfa('eval', '--config', join(dir, 'eval.json'), '--json');
    expect(e.status, e.stderr).toBe(0);
    expect(JSON.parse(e.stdout)).toHaveProperty('rougeL');
    writeFileSync(join(dir, 'bad.json'), JSON.stringify({ model: base, data: join(data, 'new-eval.jsonl'), metric: 'rougeL', temprature: 1 }));
    const bad = jfa('eval', '--config', join(dir, 'bad.json'));
    expect(bad.status).not.toBe(0);
    expect(bad.stderr.trim()).toMatch(/^jfa: options: unknown option 'temprature'$/);
  });

  it("train's defaults are the library's, and --help shows them", () => {
    const cli = trainDefaults();
    // Where the model loads is the command's own choice; every other default is train()'s.
    const own = ['device', 'precision'];
    const library: Record<string, unknown> = { ...TRAIN_DEFAULTS, r: TRAIN_DEFAULTS.lora.r, loraAlpha: TRAIN_DEFAULTS.lora.loraAlpha };
    const shared = Object.keys(cli).filter((k) => !own.includes(k));
    expect(shared).toEqual(expect.arrayContaining(['epochs', 'lr', 'alpha', 'microBatch', 'accumulation', 'maxTokens', 'r', 'loraAlpha', 'seed', 'latent']));
    for (const k of shared) expect(cli[k], k).toBe(library[k]);
    const help = jfa('train', '--help');
    expect(help.status, help.stderr).toBe(0);
    for (const flag of [`--lr ${TRAIN_DEFAULTS.lr}`, `--epochs ${TRAIN_DEFAULTS.epochs}`, `--max-tokens ${TRAIN_DEFAULTS.maxTokens}`, `--lora-alpha ${TRAIN_DEFAULTS.lora.loraAlpha}`]) expect(help.stdout).toContain(flag);
  });

  it('bad data is reported with file and line before training, as one line', () => {
    const broken = join(dir, 'broken.jsonl');
    writeFileSync(broken, '{"task":"a","instruction":"b","input":"c","output":"d"}\n{"task":"a","instruction":"b","input":"c"}\nnot json\n');
    const r = jfa('train', '--model', base, '--data', broken, '--method', 'sft', '--out', join(dir, 'never'));
    expect(r.status).not.toBe(0);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain(`${broken}:2: missing field 'output'`);
    expect(existsSync(join(dir, 'never'))).toBe(false);
    const empty = join(dir, 'empty.jsonl');
    writeFileSync(empty, '');
    expect(jfa('train', '--model', base, '--data', empty, '--method', 'sft', '--out', join(dir, 'never')).stderr).toContain(`${empty}: empty file`);
    const noTokenizer = join(dir, 'no-tokenizer');
    mkdirSync(noTokenizer);
    writeFileSync(join(noTokenizer, 'config.json'), readFileSync(join(base, 'config.json')));
    const t = jfa('train', '--model', noTokenizer, '--data', join(data, 'new-train.jsonl'), '--method', 'sft', '--out', join(dir, 'never'));
    expect(t.stderr.trim()).toBe(`jfa: ${join(noTokenizer, 'tokenizer.json')}: missing (the model directory has no tokenizer)`);
    const m = jfa('train', '--model', base, '--data', join(data, 'new-train.jsonl'), '--method', 'magic', '--out', join(dir, 'never'));
    // every method of the preset table, in its order, and the value given
    expect(m.stderr.trim()).toBe(`jfa: option 'method': must be one of ${METHODS.join(', ')}, got "magic"`);
    expect(METHODS).toContain('sft');
  });
});
