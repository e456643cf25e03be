// The base's in-context skills: the probes that score them, the fresh-record stream that teaches
// them (phases, held-out prompts, determinism), pretraining in resumable sittings, and the
// multiple-choice scoring that does not count a guessed letter.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { accuracy, optionText } from '../lib/data/metrics.js';
import { PROBE_NAMES, probeRecords } from '../lib/data/probes.js';
import { promptKey } from '../lib/data/records.js';
import { generalSkills, IN_CONTEXT_SKILLS, NAMED_SKILLS, SKILL_NAMES, skillRecord } from '../lib/data/skills.js';
import { createRng } from '../lib/data/rng.js';
import { createStream } from '../lib/data/stream.js';
import { CHECKPOINT } from '../lib/jfa/checkpoint.js';
import { pretrain } from '../lib/jfa/pretrain.js';
import { probe } from '../lib/jfa/probe.js';
import { createModel } from '../lib/model/create.js';
import { LlamaModel } from '../lib/model/llama.js';
import { Tokenizer } from '../lib/model/tokenizer.js';
import { jfa } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'jfa-base-skills-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const mix = (old: number, skills: number, inContext: number) => ({ old, skills, inContext });

describe('probes', () => {
  it('are fixed held-out records of each skill, and score a model by exact match', async () => {
    const a = probeRecords(20);
    expect(Object.keys(a)).toEqual(PROBE_NAMES);
    expect(probeRecords(20)).toEqual(a);
    expect(probeRecords(20, 7).copy).not.toEqual(a.copy);
    expect(a.copy[0]!.instruction).toBe('Copy the input exactly.');
    expect(a.option.every((r) => /Answer: [A-E]$/.test(r.output) && optionText(r.input, r.output.slice(-1)) !== undefined)).toBe(true);
    expect(() => probeRecords(0)).toThrow(RangeError);

    const m = join(dir, 'probe-model');
    createModel(m, { hiddenSize: 32, intermediateSize: 64, numLayers: 1, numHeads: 2, seed: 1 });
    using model = LlamaModel.load(m);
    const seen: string[] = [];
    const scores = await probe(model, Tokenizer.fromDir(m), { perProbe: 3, onProbe: (n) => seen.push(n) });
    expect(seen).toEqual(PROBE_NAMES);
    for (const n of PROBE_NAMES) expect(scores[n]).toBeGreaterThanOrEqual(0);
    // a random model copies nothing
    expect(scores.copy).toBe(0);

    const r = jfa('probe', '--model', m, '--per-probe', '2', '--json');
    expect(r.status, r.stderr).toBe(0);
    expect(Object.keys(JSON.parse(r.stdout).scores)).toEqual(PROBE_NAMES);
    const lines = jfa('probe', '--model', m, '--per-probe', '2');
    expect(lines.stdout.trim().split('\n').map((l) => l.split(/\s+/)[0])).toEqual(PROBE_NAMES);
    expect(jfa('probe', '--model', join(dir, 'nope')).status).not.toBe(0);
  });
});

describe('the pretraining stream', () => {
  it('gives every step fresh records from its phase, the same for the same step, never a held-out prompt', () => {
    const exclude = new Set(probeRecords(50).copy.map(promptKey));
    const phases = [{ steps: 20, mix: mix(0, 0, 1) }, { steps: 20, mix: mix(1, 0, 0) }];
    const s = createStream({ seed: 3, perStep: 8, phases, exclude });
    const first = Array.from({ length: 40 }, (_, i) => s.at(i));
    expect(first.every((b) => b.length === 8)).toBe(true);
    // phase 1: in-context skills alone; phase 2 (and past its end): old suites alone
    expect(first.slice(0, 20).flat().every((r) => IN_CONTEXT_SKILLS.includes(r.task.replace(/^skill-/, '')))).toBe(true);
    expect(first.slice(20).flat().every((r) => !r.task.startsWith('skill-'))).toBe(true);
    expect(s.at(50).every((r) => !r.task.startsWith('skill-'))).toBe(true);
    // the same step, asked again out of order or by another stream of the same settings
    const again = createStream({ seed: 3, perStep: 8, phases, exclude });
    expect(again.at(33)).toEqual(first[33]);
    expect(again.at(2)).toEqual(first[2]);
    expect(createStream({ seed: 4, perStep: 8, phases }).at(2)).not.toEqual(first[2]);
    expect(first.flat().some((r) => exclude.has(promptKey(r)))).toBe(false);
    // a step's records are drawn independently: a batch mixes skills, not one kind of record
    expect(first.slice(0, 20).every((b) => new Set(b.map((r) => r.task)).size >= 3)).toBe(true);
    expect(() => createStream({ seed: 1, perStep: 8, phases: [] })).toThrow(RangeError);
    expect(() => createStream({ seed: 1, perStep: 8, phases: [{ steps: 5, mix: mix(0, 0, 0) }] })).toThrow(/positive sum/);
    expect(() => s.at(-1)).toThrow(RangeError);
  });
});

describe('skills on coined words', () => {
  it('copy, look up and match options of made-up words; only a phase that names them draws them', () => {
    const r = createRng(5);
    const pieces = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const c = skillRecord('copy-coined', r);
      expect(c.output).toBe(c.input);
      const l = skillRecord('lookup-coined', r);
      // every asked key comes back with the value the table gives it
      const table = new Map(/^Table: (.*)\. Keys: (.*)$/.exec(l.input)![1]!.split('; ').map((p) => p.split(' ') as [string, string]));
      const asked = /Keys: (.*)$/.exec(l.input)![1]!.split(' ');
      expect(l.output).toBe(`Values: ${asked.map((k) => `${k} ${table.get(k)}`).join('; ')}`);
      expect(new Set(table.keys()).size).toBe(table.size);
      // the values alone, in the asked order (keys may repeat)
      const v = skillRecord('lookup-values', r);
      const vt = new Map(/^Table: (.*)\. Keys: (.*)$/.exec(v.input)![1]!.split('; ').map((p) => p.split(' ') as [string, string]));
      expect(v.output).toBe(`Values: ${/Keys: (.*)$/.exec(v.input)![1]!.split(' ').map((k) => vt.get(k)).join(' ')}`);
      expect(new Set(vt.values()).size).toBe(vt.size);
      for (const w of c.input.split(/,? /)) pieces.add(w);
      // the answer's letter is the one before the option the fact names, and scores as the suites do
      const o = skillRecord('option-coined', r);
      const named = /^Fact: the \w+ one is (.+)\.$/m.exec(o.input)![1]!;
      const letter = / Answer: ([A-F])$/.exec(o.output)![1]!;
      expect(optionText(o.input, letter)).toBe(named);
      expect(o.output.startsWith(`The `) && o.output.includes(` one is ${named}.`)).toBe(true);
      expect(accuracy([{ task: 'science-mc', answer: letter, input: o.input, output: o.output }], [o.output])).toBe(1);
    }
    // made-up words, many of them: not a fixed pool
    expect(pieces.size).toBeGreaterThan(500);
    // lookup-table: every shape parses back to its pairs, and the answer is each asked word's partner
    const shapes = new Set<string>();
    for (let i = 0; i < 300; i++) {
      const t = skillRecord('lookup-table', r);
      const inInstruction = !t.input.includes('\nWords: ');
      const tableText = inInstruction ? /: ([^]*)\.$/.exec(t.instruction)![1]! : t.input.split('\nWords: ')[0]!;
      const query = inInstruction ? t.input : t.input.split('\nWords: ')[1]!;
      const sep = ['->', ' = ', ': ', ':', '='].find((x) => tableText.includes(x))!;
      const joiner = tableText.includes('\n') ? '\n' : tableText.includes('; ') ? '; ' : ', ';
      const pairs = tableText.split(joiner).map((p) => p.split(sep).map((x) => x.trim()) as [string, string]);
      const byValue = /left|key of/.test(t.instruction);
      const partner = new Map(pairs.map(([k, v]) => (byValue ? [v, k] : [k, v])));
      expect(partner.size).toBe(pairs.length);
      const qJoin = query.includes(', ') ? ', ' : ' ';
      expect(t.output).toBe(query.split(qJoin).map((w) => partner.get(w)).join(qJoin));
      shapes.add(`${sep}|${joiner}|${inInstruction}|${byValue}`);
    }
    expect(shapes.size).toBeGreaterThan(40);
    expect(SKILL_NAMES).not.toContain('lookup-table');
    expect(SKILL_NAMES).not.toContain('copy-coined');
    expect(NAMED_SKILLS).toEqual(expect.arrayContaining(['copy-coined', 'option-coined', 'lookup-coined', 'lookup-values', ...SKILL_NAMES]));
    expect(SKILL_NAMES).not.toContain('lookup-values');
    expect(generalSkills(createRng(1), 300).some((x) => x.task.includes('coined'))).toBe(false);
    const s = createStream({ seed: 1, perStep: 8, phases: [{ steps: 0, mix: { old: 0, skills: 0, inContext: 0, named: { 'lookup-coined': 1 } } }] });
    expect(s.at(0).every((x) => x.task === 'skill-lookup-coined')).toBe(true);
    expect(() => skillRecord('copy-invented', r)).toThrow(/unknown skill 'copy-invented' \(known: .*copy-coined, option-coined, lookup-coined, lookup-values, lookup-table\)/);
  });
});

describe('pretraining in sittings', () => {
  it('paused after a step and resumed from its checkpoint, it ends bit-identical to an uninterrupted run', async () => {
    const m = join(dir, 'sit-model');
    createModel(m, { hiddenSize: 32, intermediateSize: 64, numLayers: 1, numHeads: 2, seed: 4 });
    const tok = Tokenizer.fromDir(m);
    const stream = () => createStream({ seed: 1, perStep: 4, phases: [{ steps: 3, mix: mix(0, 0, 1) }, { steps: 3, mix: mix(1, 1, 1) }] });
    const o = { steps: 6, microBatch: 4, lr: 3e-3, maxTokens: 96, checkpointEvery: 2, identity: { run: 'a' } };
    const weightsOf = (model: LlamaModel) => Object.fromEntries(Object.entries(model.weights()).map(([k, t]) => [k, Array.from(t.toTypedArray() as Float32Array)]));

    using straight = LlamaModel.load(m);
    const a = await pretrain(straight, tok, stream(), { ...o, checkpointDir: join(dir, 'ck-a') });
    expect(a).toMatchObject({ steps: 6, totalSteps: 6 });

    using sitting = LlamaModel.load(m);
    const ck = join(dir, 'ck-b');
    const first = await pretrain(sitting, tok, stream(), { ...o, checkpointDir: ck, pauseAfter: 3 });
    expect(first.steps).toBe(3);
    expect(existsSync(join(ck, CHECKPOINT, 'state.json'))).toBe(true);
    // another run's checkpoint is refused, by what differs
    using other = LlamaModel.load(m);
    await expect(pretrain(other, tok, stream(), { ...o, checkpointDir: ck, resume: true, identity: { run: 'b' } })).rejects.toThrow(/from another run/);
    await expect(pretrain(other, tok, stream(), { ...o, checkpointDir: join(dir, 'none'), resume: true })).rejects.toThrow(/nothing to resume/);
    using resumed = LlamaModel.load(m);
    const second = await pretrain(resumed, tok, stream(), { ...o, checkpointDir: ck, resume: true });
    expect(second.steps).toBe(6);
    expect(weightsOf(resumed)).toEqual(weightsOf(straight));
    expect(weightsOf(resumed)).not.toEqual(weightsOf(sitting));
    const rows = readFileSync(join(ck, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(rows.at(-1)).toMatchObject({ type: 'pretrain', step: 6 });
  });

  it('jfa pretrain --pause-after stops resumably, --resume finishes and writes the card with probes; a second start is refused', () => {
    const out = join(dir, 'cli-base');
    const ck = join(dir, 'cli-ck');
    const args = ['pretrain', '--out', out, '--checkpoint-dir', ck, '--hidden-size', '32', '--layers', '1', '--heads', '2', '--merges', '30', '--old-train-per-suite', '4', '--steps', '6', '--phases', '[{"steps": 1, "mix": {"copy": 1}}, {"steps": 2, "mix": {"inContext": 1}}, {"steps": 0, "mix": {"old": 0.5, "skills": 0.2, "inContext": 0.3}}]', '--micro-batch', '4', '--eval-per-suite', '2', '--probes', '2', '--checkpoint-every', '2', '--split-spaces'];
    const stopped = jfa(...args, '--pause-after', '3', '--json');
    expect(stopped.status, stopped.stderr).toBe(0);
    expect(JSON.parse(stopped.stdout)).toMatchObject({ stoppedAt: 3, totalSteps: 6 });
    expect(existsSync(join(out, 'jfa-base.json'))).toBe(false);
    const again = jfa(...args);
    expect(again.status).not.toBe(0);
    expect(again.stderr).toMatch(/holds an unfinished run; continue it with --resume/);
    const done = jfa(...args, '--resume', '--json');
    expect(done.status, done.stderr).toBe(0);
    const card = JSON.parse(done.stdout);
    expect(card).toMatchObject({ steps: 6, records: 24 });
    expect(Object.keys(card.probes)).toEqual(PROBE_NAMES);
    expect(Object.keys(card.scores)).toHaveLength(5);
    expect(card.command).toContain('--phases \'[{"steps":1,"mix":{"old":0,"skills":0,"inContext":0,"copy":1}},{"steps":2,');
    // --split-spaces: in the card's command and options, and no merge of the tokenizer takes the space
    expect(card.command).toContain(' --split-spaces ');
    expect(card.options.splitSpaces).toBe(true);
    const merges = (JSON.parse(readFileSync(join(out, 'tokenizer.json'), 'utf8')) as { model: { merges: Array<string | string[]> } }).model.merges;
    expect(merges.length).toBeGreaterThan(0);
    expect(merges.some((m) => (Array.isArray(m) ? m.join(' ') : m).includes('\u0120'))).toBe(false);
    expect(readFileSync(join(out, 'README.md'), 'utf8')).toMatch(/## Probes/);
    expect(existsSync(join(ck, CHECKPOINT))).toBe(false);
    expect(existsSync(join(ck, 'metrics.jsonl'))).toBe(true);
  });
});

describe('a curriculum of phases, a start from another model, the attention\'s init', () => {
  const tiny = ['--hidden-size', '32', '--layers', '1', '--heads', '2', '--merges', '30', '--old-train-per-suite', '4', '--micro-batch', '4', '--eval-per-suite', '0', '--probes', '2'];

  it('--phases draws each phase from its mix and is in the card; --init-from starts from a paused run or a model', () => {
    const phases = [{ steps: 2, mix: { named: { 'continue-from': 1 } } }, { steps: 0, mix: { named: { 'lookup-one': 1 } } }];
    const first = join(dir, 'ph-first');
    const stopped = jfa('pretrain', '--out', first, '--checkpoint-dir', `${first}.pretrain`, ...tiny, '--steps', '4', '--phases', JSON.stringify(phases), '--pause-after', '2', '--json');
    expect(stopped.status, stopped.stderr).toBe(0);
    const paused = readFileSync(join(`${first}.pretrain`, CHECKPOINT, 'weights.safetensors'));
    // from the paused run's folder: its checkpoint's weights and its tokenizer
    const second = join(dir, 'ph-second');
    const done = jfa('pretrain', '--out', second, '--checkpoint-dir', `${second}.pretrain`, ...tiny, '--layers', '3', '--steps', '2', '--init-from', `${first}.pretrain`, '--json');
    expect(done.status, done.stderr).toBe(0);
    const card = JSON.parse(done.stdout);
    expect(card.options).toMatchObject({ layers: 1, hiddenSize: 32, initFrom: `${first}.pretrain` });
    expect(card.command).toContain(`--init-from ${first}.pretrain`);
    // where it started: the paused run's command, to its step
    expect(card.from.steps).toBe(2);
    expect(card.from.command).toMatch(new RegExp(`^jfa pretrain --out ${first} .*--phases '\\[.*--pause-after 2$`));
    expect(readFileSync(join(second, 'tokenizer.json'), 'utf8')).toBe(readFileSync(join(`${first}.pretrain`, 'initial', 'tokenizer.json'), 'utf8'));
    expect(readFileSync(join(second, 'model.safetensors')).equals(paused)).toBe(false); // trained on from there
    // a finished model directory too; the phases are in its card and its command line
    const third = join(dir, 'ph-third');
    const again = jfa('pretrain', '--out', third, '--checkpoint-dir', `${third}.pretrain`, ...tiny, '--steps', '3', '--phases', JSON.stringify(phases), '--init-from', second, '--json');
    expect(again.status, again.stderr).toBe(0);
    const c3 = JSON.parse(again.stdout);
    expect(c3.from).toEqual({ command: card.command, steps: 2 });
    expect(readFileSync(join(third, 'README.md'), 'utf8')).toContain(`Started from the model of \`${card.command}\` (2 steps)`);
    expect(c3.options.phases).toEqual([{ steps: 2, mix: { old: 0, skills: 0, inContext: 0, named: { 'continue-from': 1 } } }, { steps: 0, mix: { old: 0, skills: 0, inContext: 0, named: { 'lookup-one': 1 } } }]);
    expect(c3.command).toContain("--phases '[{");
    expect(readFileSync(join(third, 'README.md'), 'utf8')).toMatch(/in 2 phases: 2 steps of continue-from 1; then 0 steps of lookup-one 1/);
    // bad input: one line each, nothing written
    const bad = jfa('pretrain', '--out', join(dir, 'ph-bad'), ...tiny, '--steps', '2', '--phases', '[{"steps": 2, "mix": {"named": {"no-such-skill": 1}}}]');
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/unknown skill 'no-such-skill'/);
    const notJson = jfa('pretrain', '--out', join(dir, 'ph-bad'), ...tiny, '--steps', '2', '--phases', '[{steps');
    expect(notJson.status).not.toBe(0);
    expect(notJson.stderr).toMatch(/--phases must be JSON/);
    const nothing = jfa('pretrain', '--out', join(dir, 'ph-bad'), ...tiny, '--steps', '2', '--init-from', join(dir, 'no-such-model'));
    expect(nothing.status).not.toBe(0);
    expect(nothing.stderr).toMatch(/--init-from .*no-such-model: neither a model directory/);
    expect(existsSync(join(dir, 'ph-bad'))).toBe(false);
  });

  it('attentionInitStd rescales the query and key weights alone, from the same draws', () => {
    const std = (m: LlamaModel, name: string) => {
      const x = m.weights()[name]!.toTypedArray() as Float32Array;
      return Math.sqrt(x.reduce((a, v) => a + v * v, 0) / x.length);
    };
    createModel(join(dir, 'init-a'), { hiddenSize: 64, numLayers: 1, numHeads: 4, seed: 9, initStd: 0.02 });
    createModel(join(dir, 'init-b'), { hiddenSize: 64, numLayers: 1, numHeads: 4, seed: 9, initStd: 0.02, attentionInitStd: 0.06 });
    using a = LlamaModel.load(join(dir, 'init-a'));
    using b = LlamaModel.load(join(dir, 'init-b'));
    for (const p of ['q_proj', 'k_proj']) {
      const name = `model.layers.0.self_attn.${p}.weight`;
      expect(std(b, name) / std(a, name)).toBeCloseTo(3, 4);
    }
    for (const name of ['model.layers.0.self_attn.v_proj.weight', 'model.layers.0.mlp.up_proj.weight', 'model.embed_tokens.weight'])
      expect(Array.from(b.weights()[name]!.toTypedArray() as Float32Array)).toEqual(Array.from(a.weights()[name]!.toTypedArray() as Float32Array));
    expect(() => createModel(join(dir, 'init-c'), { attentionInitStd: 0 })).toThrow(/attentionInitStd must be a finite number > 0/);
  });
});

describe('multiple-choice scoring', () => {
  it('counts a letter only with the fact that names its option, where the reference states one', () => {
    const input = 'Which of these is a gas?\nA) ice\nB) steam\nC) iron';
    const r = { task: 'science-mc', answer: 'B', input, output: 'Steam is a gas at room temperature. Answer: B' };
    expect(accuracy([r], ['Steam is a gas at room temperature. Answer: B'])).toBe(1);
    expect(accuracy([r], ['Iron is a gas at room temperature. Answer: B'])).toBe(0);
    expect(accuracy([r], ['Answer: B'])).toBe(0);
    expect(accuracy([r], ['Steam is a gas. Answer: C'])).toBe(0);
    // a reference that is a bare letter (imported ARC): the letter decides
    expect(accuracy([{ ...r, output: 'Answer: B' }], ['Answer: B'])).toBe(1);
    expect(accuracy([{ task: 'science-mc', answer: 'B' }], ['Answer: B'])).toBe(1);
    expect(optionText(input, 'C')).toBe('iron');
    expect(optionText(input, 'D')).toBeUndefined();
  });
});
