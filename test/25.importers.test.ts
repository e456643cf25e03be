// Importers from the paper's published formats (fixtures written by hand in each format, with bad
// items), the SuperNI task split, flashback draws, BLEU-4 against hand-computed values, per-format
// scoring, and `jfa data import` / `jfa data flashbacks` / `jfa eval --metric auto|bleu` as a user runs them.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  accuracy,
  answerKindOf,
  autoScores,
  corpusBleu,
  drawFlashbacks,
  elementLines,
  formatSkip,
  generateSuite,
  importFiles,
  type InstanceRecord,
  isCorrect,
  parseTaskList,
  readJsonl,
  sentenceBleu,
  splitByTask,
} from '../lib/data/index.js';
import { promptText } from '../lib/jfa/examples.js';
import { createModel } from '../lib/model/create.js';
import { Tokenizer } from '../lib/model/tokenizer.js';
import { root } from './helpers.js';

const fx = (...p: string[]) => join(root, 'test', 'fixtures', 'importers', ...p);
const dir = mkdtempSync(join(tmpdir(), 'jfa-importers-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const jfa = (...args: string[]) => spawnSync(process.execPath, [join(root, 'dist', 'cli', 'main.js'), ...args], { encoding: 'utf8', cwd: dir, timeout: 120_000 });
const skipsOf = (r: { skipped: Parameters<typeof formatSkip>[0][] }) => r.skipped.map(formatSkip);

/** Every record scores 100% on its own output and 0% on a wrong answer: the metrics read them. */
function expectScoreable(records: InstanceRecord[]): void {
  const old = records.map((r) => ({ ...r, answer: r.answer! }));
  expect(accuracy(old, old.map((r) => r.output))).toBe(1);
  for (const r of old) {
    const kind = answerKindOf(r);
    const wrong = kind === 'numeric' ? `The answer is ${Number(r.answer) + 1}.` : kind === 'choice' ? `Answer: ${r.answer === 'A' ? 'B' : 'A'}` : 'The answer is something else.';
    expect(isCorrect(wrong, r.answer, kind), `${r.task}: ${wrong}`).toBe(false);
  }
}

describe('old-task importers', () => {
  it('gsm8k: the answer after ####, commas removed; calculator notes dropped; bad lines reported with their line', () => {
    const r = importFiles('gsm8k', [fx('gsm8k.jsonl')]);
    expect(r.records.map((x) => x.answer)).toEqual(['72', '1200', '-7.5']);
    expect(r.records[0]).toMatchObject({
      task: 'gsm8k',
      format: 'gsm8k',
      output: 'Natalia sold 48/2 = 24 clips in May. Natalia sold 48+24 = 72 clips altogether in April and May. The answer is 72.',
    });
    expect(skipsOf(r)).toEqual([
      `${fx('gsm8k.jsonl')}:4: no '#### ' answer at the end of 'answer'; skipped`,
      expect.stringMatching(new RegExp(`^${fx('gsm8k.jsonl')}:5: invalid JSON \\(.*\\); skipped$`)),
      `${fx('gsm8k.jsonl')}:6: the answer after '####' is not a number: 'about five'; skipped`,
      `${fx('gsm8k.jsonl')}:7: missing field 'question'; skipped`,
      `${fx('gsm8k.jsonl')}:9: expected a JSON object, got an array; skipped`,
    ]);
    expect(r.files).toEqual([{ file: fx('gsm8k.jsonl'), records: 3, skipped: 5 }]);
    expectScoreable(r.records);
    expect(answerKindOf(r.records[0]!)).toBe('numeric');
  });

  it('svamp: a JSON array (skips at the line of their object) and JSONL; Body then Question; numeric answers canonical', () => {
    const r = importFiles('svamp', [fx('svamp.json'), fx('svamp.jsonl')]);
    expect(r.records.map((x) => [x.input, x.output, x.answer])).toEqual([
      ['Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each pack. How much do you have to pay to buy each pack?', '( 76.0 - 25.0 ) = 51. The answer is 51.', '51'],
      ['Dan had 5 pears. How many pears does Dan have after buying 7 more?', 'The answer is 12.', '12'],
      ['A tree had 10 apples. 4 fell. How many apples are on the tree?', '( 10.0 - 4.0 ) = 6. The answer is 6.', '6'],
    ]);
    expect(skipsOf(r)).toEqual([
      `${fx('svamp.json')}:16: missing field 'Question'; skipped`,
      `${fx('svamp.json')}:21: field 'Answer' is not a number: 'many'; skipped`,
      `${fx('svamp.jsonl')}:2: field 'Question' is empty; skipped`,
    ]);
    expectScoreable(r.records);
  });

  it('arc: letter and numeric labels become A, B, ...; five options; a bad answerKey is skipped', () => {
    const r = importFiles('arc', [fx('arc.jsonl')], { task: 'arc-challenge' });
    expect(r.records.map((x) => x.answer)).toEqual(['C', 'B', 'E']);
    // Hugging Face's layout of the same data: question string, choices {text[], label[]}.
    const hf = importFiles('arc', [fx('arc-hf.jsonl')]);
    expect(hf.records.map((x) => [x.input, x.answer])).toEqual([['Which tool is best for measuring the length of a pencil?\nA) balance\nB) ruler\nC) thermometer\nD) stopwatch', 'B']]);
    expect(skipsOf(hf)).toEqual([`${fx('arc-hf.jsonl')}:2: field 'choices' must hold 'text' and 'label' arrays of one length; skipped`]);
    expect(r.records[1]).toMatchObject({ task: 'arc-challenge', format: 'arc', input: 'Which unit is used to record the mass of a rock?\nA) meters\nB) grams\nC) liters\nD) degrees', output: 'Answer: B' });
    expect(r.records[2]!.input.split('\n').at(-1)).toBe('E) helium');
    expect(skipsOf(r)).toEqual([
      `${fx('arc.jsonl')}:4: answerKey 'F' is none of the labels A, B; skipped`,
      `${fx('arc.jsonl')}:5: question: missing field 'stem'; skipped`,
      `${fx('arc.jsonl')}:6: field 'question' must be an object with 'stem' and 'choices'; skipped`,
    ]);
    expectScoreable(r.records);
  });

  it('mmlu-pro: ten options lettered A-J, answer J scored; answer_index alone; disagreements skipped; category in the task', () => {
    const r = importFiles('mmlu-pro', [fx('mmlu-pro.jsonl')]);
    expect(r.records.map((x) => [x.task, x.answer])).toEqual([['mmlu-pro/business', 'J'], ['mmlu-pro/math', 'B'], ['mmlu-pro/math', 'C']]);
    expect(r.records[0]!.input.split('\n').slice(1).map((l) => l.slice(0, 2))).toEqual(['A)', 'B)', 'C)', 'D)', 'E)', 'F)', 'G)', 'H)', 'I)', 'J)']);
    expect(r.records[1]!.input).toContain('D) 54');
    expect(skipsOf(r)).toEqual([
      `${fx('mmlu-pro.jsonl')}:4: answer 'A' and answer_index 2 disagree; skipped`,
      `${fx('mmlu-pro.jsonl')}:5: answer 'H' is not one of the 3 option letters; skipped`,
      `${fx('mmlu-pro.jsonl')}:6: field 'options' must be an array of at least 2 options; skipped`,
    ]);
    expectScoreable(r.records);
    // Letters past F are read from model outputs too.
    expect(isCorrect('The stated fact. Answer: J', 'J', 'choice')).toBe(true);
    expect(isCorrect('(H) is right', 'H', 'choice')).toBe(true);
    // A reference written as BBH writes it, "(B)", is the letter B.
    expect(isCorrect('Answer: B', '(B)', 'choice')).toBe(true);
    expect(isCorrect('Answer: C', '(B)', 'choice')).toBe(false);
  });

  it('bbh: task files ({examples}) and JSONL (inputs/targets); "(B)" scored as a letter, other targets exactly', () => {
    const files = ['boolean_expressions.json', 'date_understanding.json', 'bbh.jsonl'].map((f) => fx('bbh', f));
    const r = importFiles('bbh', files);
    expect(r.records.map((x) => [x.task, x.answer])).toEqual([
      ['bbh/boolean_expressions', 'False'],
      ['bbh/boolean_expressions', 'True'],
      ['bbh/date_understanding', 'B'],
      ['bbh/date_understanding', 'A'],
      ['bbh', 'A'],
      ['bbh', 'no'],
      ['bbh', '3'],
    ]);
    expect(r.records.map((x) => answerKindOf(x))).toEqual(['exact', 'exact', 'choice', 'choice', 'choice', 'exact', 'exact']);
    expect(skipsOf(r)).toEqual([
      `${fx('bbh', 'boolean_expressions.json')}:6: field 'target' is empty; skipped`,
      `${fx('bbh', 'date_understanding.json')}:4: missing field 'input'; skipped`,
      `${fx('bbh', 'bbh.jsonl')}:4: field 'inputs' must be a string, got null; skipped`,
    ]);
    expect(r.files.map((f) => f.records)).toEqual([2, 2, 3]);
    expectScoreable(r.records);
  });

  it('a file in another format, an unreadable file and an empty file are errors naming the file', () => {
    expect(() => importFiles('gsm8k', [fx('arc.jsonl')])).toThrow(`${fx('arc.jsonl')}: no gsm8k records in it (6 items rejected, the first: line 1: field 'question' must be a string, got object); is it gsm8k data?`);
    expect(() => importFiles('arc', [join(dir, 'missing.jsonl')])).toThrow(`${join(dir, 'missing.jsonl')}: cannot read (ENOENT)`);
    writeFileSync(join(dir, 'empty.jsonl'), '\n\n');
    expect(() => importFiles('svamp', [join(dir, 'empty.jsonl')])).toThrow(`${join(dir, 'empty.jsonl')}: empty file`);
    expect(() => importFiles('superni', [fx('gsm8k.jsonl')])).toThrow(`${fx('gsm8k.jsonl')}: not a Super-NaturalInstructions task file`);
    expect(() => importFiles('mmlu-pro', [])).toThrow('no input files');
    expect(() => importFiles('bbh', [dir])).toThrow(`${dir}: cannot read (EISDIR)`);
    // A byte-order mark and CRLF line ends (files saved on Windows) are read as plain JSONL.
    writeFileSync(join(dir, 'bom.jsonl'), '\uFEFF{"question": "q", "answer": "#### 3"}\r\n{"question": "q2", "answer": "x"}\r\n');
    const bom = importFiles('gsm8k', [join(dir, 'bom.jsonl')]);
    expect([bom.records.length, skipsOf(bom)]).toEqual([1, [`${join(dir, 'bom.jsonl')}:2: no '#### ' answer at the end of 'answer'; skipped`]]);
  });

  it('elementLines finds where each array element starts, strings with brackets and escapes included', () => {
    const text = '{\n "a": "x[{,\\"]",\n "Instances": [\n  {"id": "[1,2]"},\n\n  {"id": "b", "o": [1, {"p": [2]}]}, 3\n ]\n}';
    expect(elementLines(text, ['Instances'])).toEqual([4, 6, 6]);
    expect(elementLines('[\n1,\n[2,\n3],\n"4"\n]', [])).toEqual([2, 3, 5]);
  });
});

describe('SuperNI and chat', () => {
  const taskFiles = ['task001_quoref_question_generation.json', 'task002_sentiment_classification.json', 'task003_word_reversal.json', 'task004_no_definition.json'].map((f) => fx('superni', f));

  it('superni: definition as instruction, first non-empty output, task from the file name, bad instances reported', () => {
    const r = importFiles('superni', taskFiles);
    expect(r.records).toHaveLength(10);
    expect(r.records[0]).toEqual({
      task: 'task001_quoref_question_generation',
      instruction: "In this task, you're given a passage.\nWrite a question about the passage that mentions a person.",
      input: 'Ada wrote the first program for the engine.',
      output: 'Who wrote the first program?',
      format: 'superni',
    });
    expect(r.records[1]!.output).toBe('What did Omar fix?');
    expect(skipsOf(r)).toEqual([
      `${taskFiles[0]}:28: instance task001-0b: no non-empty output; skipped`,
      `${taskFiles[0]}:38: instance task001-0d: field 'input' must be a string; skipped`,
      `${taskFiles[2]}:6: Instances[2]: expected a JSON object, got string; skipped`,
      `${taskFiles[3]}:1: task task004_no_definition has no 'Definition' (1 instance); skipped`,
    ]);
    const withExamples = importFiles('superni', [taskFiles[0]!], { examples: 2 });
    expect(withExamples.records[0]!.instruction).toMatch(/mentions a person\.\n\nPositive Example 1 -\nInput: Mara planted a row of beans\.\nOutput: Who planted the beans\?\n\nPositive Example 2 -\nInput: Tom/);
  });

  it('superni: instances per task capped by a seeded sample, kept in file order', () => {
    const a = importFiles('superni', [taskFiles[1]!], { maxPerTask: 3, seed: 1 });
    const b = importFiles('superni', [taskFiles[1]!], { maxPerTask: 3, seed: 1 });
    expect(a.records).toHaveLength(3);
    expect(a.records).toEqual(b.records);
    const ids = a.records.map((r) => ['The soup', 'Friendly', 'I would', 'Lovely', 'Too loud'].findIndex((s) => r.input.startsWith(s)));
    expect([...ids].sort()).toEqual(ids);
    expect(a.notes).toEqual([`${taskFiles[1]}: task task002_sentiment_classification has 5 usable instances; kept a sample of 3`]);
    const seeds = new Set([0, 1, 2, 3, 4, 5].map((seed) => JSON.stringify(importFiles('superni', [taskFiles[1]!], { maxPerTask: 2, seed }).records)));
    expect(seeds.size).toBeGreaterThan(1);
    expect(importFiles('superni', [taskFiles[1]!], { maxPerTask: 0 }).records).toHaveLength(5);
  });

  it('task-level split: by a test-task list, or a seeded fraction; never one task on both sides', () => {
    const { records } = importFiles('superni', taskFiles);
    const names = parseTaskList(readFileSync(fx('superni', 'test_tasks.txt'), 'utf8'));
    expect(names).toEqual(['task002_sentiment_classification', 'task999_not_in_the_input']);
    const byList = splitByTask(records, { testTasks: names });
    expect(byList.testTasks).toEqual(['task002_sentiment_classification']);
    expect(byList.trainTasks).toEqual(['task001_quoref_question_generation', 'task003_word_reversal']);
    expect(byList.missing).toEqual(['task999_not_in_the_input']);
    expect([byList.train.length, byList.test.length]).toEqual([5, 5]);
    const byFraction = splitByTask(records, { fraction: 0.34, seed: 3 });
    expect(byFraction.testTasks).toHaveLength(1);
    expect(splitByTask(records, { fraction: 0.34, seed: 3 })).toEqual(byFraction);
    const train = new Set(byFraction.train.map((r) => r.task));
    expect(byFraction.test.every((r) => !train.has(r.task))).toBe(true);
    expect(byFraction.train.length + byFraction.test.length).toBe(records.length);
    expect(() => splitByTask(records, { fraction: 1 })).toThrow('must be in (0, 1), got 1');
  });

  it("chat: the prompt the trainer builds is exactly the model's chat template over the turns before the last reply", () => {
    const r = importFiles('chat', [fx('chat.jsonl')]);
    expect(r.records.map((x) => [x.task, x.output])).toEqual([['chat', 'Red.'], ['support', 'Thanks, it ships tomorrow.'], ['parts', 'Four.']]);
    // OpenAI-style text parts are joined.
    expect(r.records[2]!.input).toBe('Two plus two?\n<|assistant|>');
    const tokenizer = Tokenizer.fromDir(join(root, 'models', 'jfa-base'));
    const lines = readFileSync(fx('chat.jsonl'), 'utf8').split('\n');
    for (const [i, line] of [0, 1].entries()) {
      const messages = (JSON.parse(lines[line]!) as { messages: { role: string; content: string }[] }).messages;
      expect(promptText(r.records[i]!)).toBe(tokenizer.applyChatTemplate(messages.slice(0, -1)));
    }
    expect(skipsOf(r)).toEqual([
      `${fx('chat.jsonl')}:3: no assistant turn; skipped`,
      `${fx('chat.jsonl')}:4: messages[1] has role 'tool' (system, user or assistant); skipped`,
      `${fx('chat.jsonl')}:5: 1 message(s) after the last assistant turn; skipped`,
      `${fx('chat.jsonl')}:6: the last assistant turn is empty; skipped`,
      `${fx('chat.jsonl')}:7: field 'messages' must be a non-empty array; skipped`,
      expect.stringMatching(new RegExp(`^${fx('chat.jsonl')}:8: invalid JSON`)),
      `${fx('chat.jsonl')}:10: messages[0] must be an object with a string 'role' and a 'content' string (or list of text parts); skipped`,
    ]);
    // Another model's template: its BOS text is dropped (the tokenizer adds BOS), the split still exact.
    const template = "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}]: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}[assistant]:\n{% endif %}";
    const other = importFiles('chat', [fx('chat.jsonl')], { template, bosToken: '<s>' });
    expect(promptText(other.records[0]!)).toBe('[system]: You are a concise assistant.\n[user]: Name a primary colour.\n[assistant]:\n');
    expect(() => importFiles('chat', [fx('chat.jsonl')], { template: '{% for m in messages %}{{ m.content }}{% endfor %}' })).toThrow('chat template: its prompts must end in a newline');
  });
});

describe('flashbacks', () => {
  it('N distinct prompts per suite, no targets, deterministic by seed, suites by the task prefix', () => {
    const records = [
      ...importFiles('gsm8k', [fx('gsm8k.jsonl')]).records,
      ...importFiles('gsm8k', [fx('gsm8k.jsonl')]).records, // duplicates: one prompt each
      ...importFiles('mmlu-pro', [fx('mmlu-pro.jsonl')]).records,
      ...importFiles('bbh', [fx('bbh', 'boolean_expressions.json'), fx('bbh', 'date_understanding.json')]).records,
    ];
    const { flashbacks, notes } = drawFlashbacks(records, { perSuite: 2, seed: 5 });
    expect(flashbacks.map((f) => f.task.split('/')[0])).toEqual(['bbh', 'bbh', 'gsm8k', 'gsm8k', 'mmlu-pro', 'mmlu-pro']);
    expect(flashbacks.every((f) => !('output' in f) && !('answer' in f))).toBe(true);
    expect(drawFlashbacks(records, { perSuite: 2, seed: 5 }).flashbacks).toEqual(flashbacks);
    expect(notes).toEqual([]);
    const all = drawFlashbacks(records, { perSuite: 10 });
    expect(all.flashbacks).toHaveLength(3 + 3 + 4);
    expect(all.notes).toContain('suite gsm8k: 3 distinct prompts, fewer than 10; took them all');
    expect(drawFlashbacks(records, { perSuite: 1, by: 'task' }).flashbacks.map((f) => f.task)).toEqual([
      'bbh/boolean_expressions', 'bbh/date_understanding', 'gsm8k', 'mmlu-pro/business', 'mmlu-pro/math',
    ]);
  });

  it('different seeds draw different samples from a large pool', () => {
    const suite = generateSuite({ seed: 2, oldTrainPerSuite: 0, oldEvalPerSuite: 30, flashbacksPerSuite: 1, instancesPerTask: 1, evalInstancesPerTask: 1 });
    const records = Object.values(suite.old).flatMap((s) => s.eval);
    const draws = [1, 2].map((seed) => drawFlashbacks(records, { perSuite: 4, seed }).flashbacks);
    expect(draws[0]).toHaveLength(20);
    expect(draws[0]).not.toEqual(draws[1]);
  });
});

describe('BLEU-4 and per-format scoring', () => {
  // "the cat sat on the mat" against "the cat is on the mat": clipped matches 5/6 unigrams,
  // 3/5 bigrams, 1/4 trigrams, 0/3 4-grams; equal lengths, so no brevity penalty.
  const [pred, ref] = ['the cat sat on the mat', 'The cat is on the mat.'];

  it('sentence BLEU+1 (add one to 2-4-gram counts) equals the hand computation', () => {
    // (5/6 * 4/6 * 2/5 * 1/4)^(1/4) = (1/18)^(1/4)
    expect(sentenceBleu(pred, ref)).toBeCloseTo(Math.pow(1 / 18, 1 / 4), 12);
    // Clipping: "the" x4 against one "the": 1/4; bigrams (0+1)/(3+1); trigrams 1/3; 4-grams 1/2.
    expect(sentenceBleu('the the the the', 'the cat')).toBeCloseTo(Math.pow(1 / 96, 1 / 4), 12);
    // Brevity: 2 tokens against 6, all precisions 1: exp(1 - 6/2).
    expect(sentenceBleu('the cat', 'the cat sat on the mat')).toBeCloseTo(Math.exp(-2), 12);
    expect(sentenceBleu(ref, ref)).toBe(1);
    expect(sentenceBleu('', 'x')).toBe(0);
    expect(sentenceBleu('dog', 'cat')).toBe(0);
  });

  it('corpus BLEU-4 sums matches over pairs, penalises brevity over the corpus, and is 0 without a 4-gram match', () => {
    expect(corpusBleu([pred], [ref])).toBe(0);
    // Pooled with an exact pair: 11/12, 8/10, 5/8, 3/6 -> (11/48)^(1/4).
    expect(corpusBleu([pred, 'the cat sat on the mat'], [ref, 'the cat sat on the mat'])).toBeCloseTo(Math.pow(11 / 48, 1 / 4), 12);
    // All precisions 1, c = 8, r = 11: exp(1 - 11/8).
    expect(corpusBleu(['the cat sat on the mat', 'a dog'], ['the cat sat on the mat', 'a dog barked loudly today'])).toBeCloseTo(Math.exp(-3 / 8), 12);
    expect(() => corpusBleu(['a'], [])).toThrow('1 predictions');
  });

  it('autoScores picks each format scorer: numeric, letter, letter-or-exact, ROUGE-L + BLEU', () => {
    const records = [
      ...importFiles('gsm8k', [fx('gsm8k.jsonl')]).records,
      ...importFiles('arc', [fx('arc.jsonl')]).records,
      ...importFiles('bbh', [fx('bbh', 'bbh.jsonl')]).records,
      ...importFiles('superni', [fx('superni', 'task003_word_reversal.json')]).records,
    ];
    const predictions = records.map((r) => r.output);
    predictions[0] = 'So 70 + 2 = 72 in all, and 3 more is 75.'; // numeric: the last number, 75, is wrong
    predictions[3] = 'Answer: (C)'; // arc: letter
    predictions[6] = 'The answer is (B).'; // bbh letter, wrong
    predictions[7] = 'The answer is No.'; // bbh exact, case-insensitive
    predictions[9] = 'sat the cat'; // superni text
    const scores = autoScores(records, predictions);
    expect(scores.map((s) => s.format)).toEqual(['gsm8k', 'arc', 'bbh', 'superni']);
    expect(scores[0]).toEqual({ format: 'gsm8k', records: 3, accuracy: 2 / 3 });
    expect(scores[1]).toEqual({ format: 'arc', records: 3, accuracy: 1 });
    expect(scores[2]).toEqual({ format: 'bbh', records: 3, accuracy: 2 / 3 });
    expect(scores[3]).toMatchObject({ format: 'superni', records: 2, exactMatch: 0.5 });
    expect(scores[3]!.rougeL).toBeCloseTo((2 / 3 + 1) / 2, 12);
    expect(scores[3]!.bleu).toBeCloseTo(corpusBleu(predictions.slice(9), ['sat cat the', 'blue green red']), 12);
    // A hint overrides the recorded format; records without one are scored by answer if all have one.
    const plain = records.slice(3, 6).map(({ format: _, ...r }) => r);
    expect(autoScores(plain, predictions.slice(3, 6))).toEqual([{ format: 'unlabeled', records: 3, accuracy: 0 }]);
    expect(autoScores(plain, predictions.slice(3, 6), 'arc')).toEqual([{ format: 'arc', records: 3, accuracy: 1 }]);
    expect(() => autoScores(records.slice(9), predictions.slice(9), 'gsm8k')).toThrow("record 1 (format gsm8k) has no 'answer'");
    expect(() => autoScores(records, predictions, 'nope')).toThrow("unknown format 'nope'");
  });
});

describe('jfa data and jfa eval --metric auto', () => {
  const model = join(dir, 'model');
  beforeAll(() => createModel(model, { hiddenSize: 32, intermediateSize: 64, numLayers: 1, numHeads: 2, seed: 11 }));

  it('data import writes valid JSONL, reports skips on stderr with file:line, and splits SuperNI by task', () => {
    const out = join(dir, 'gsm8k.jsonl');
    const r = jfa('data', 'import', '--format', 'gsm8k', fx('gsm8k.jsonl'), '--out', out);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('gsm8k: 1 file: 3 records, 5 skipped');
    expect(r.stderr).toContain(`${fx('gsm8k.jsonl')}:4: no '#### ' answer at the end of 'answer'; skipped`);
    expect(readJsonl(out, 'instance').map((x) => x.answer)).toEqual(['72', '1200', '-7.5']);

    const [train, test] = [join(dir, 'ni-train.jsonl'), join(dir, 'ni-test.jsonl')];
    const s = jfa('data', 'import', '--format', 'superni', ...['task001_quoref_question_generation.json', 'task002_sentiment_classification.json', 'task003_word_reversal.json'].map((f) => fx('superni', f)),
      '--test-tasks', fx('superni', 'test_tasks.txt'), '--test-out', test, '--out', train, '--max-per-task', '4', '--json');
    expect(s.status, s.stderr).toBe(0);
    const summary = JSON.parse(s.stdout) as { records: number; skipped: string[]; notes: string[]; testTasks: string[] };
    expect(summary.testTasks).toEqual(['task002_sentiment_classification']);
    expect(summary.skipped).toHaveLength(3);
    expect(summary.notes).toContain(`${fx('superni', 'test_tasks.txt')}: test task task999_not_in_the_input is not in the input`);
    expect(new Set(readJsonl(test, 'instance').map((x) => x.task))).toEqual(new Set(['task002_sentiment_classification']));
    expect(readJsonl(test, 'instance')).toHaveLength(4);
    expect(readJsonl(train, 'instance').some((x) => x.task === 'task002_sentiment_classification')).toBe(false);

    const bad = jfa('data', 'import', '--format', 'arc', fx('gsm8k.jsonl'), '--out', join(dir, 'never.jsonl'));
    expect(bad.status).toBe(1);
    expect(bad.stderr.trim()).toMatch(new RegExp(`^jfa: ${fx('gsm8k.jsonl')}: no arc records in it`));
    const noTest = jfa('data', 'import', '--format', 'superni', fx('superni', 'task003_word_reversal.json'), '--split', '0.5', '--out', join(dir, 'never.jsonl'));
    expect(noTest.stderr.trim()).toBe('jfa: --test-out goes with --test-tasks or --split (the held-out tasks are written there)');
    const format = jfa('data', 'import', '--format', 'csv', 'x', '--out', 'y');
    expect(format.stderr.trim().split('\n')).toEqual([
      "error: option '--format <name>' argument 'csv' is invalid. --format must be one of superni, gsm8k, svamp, arc, mmlu-pro, bbh, chat",
      'hint: see jfa data import --help',
    ]);
  });

  it('data flashbacks draws per suite from old-task files into a valid flashback file', () => {
    const [arc, mmlu, out] = [join(dir, 'arc.jsonl'), join(dir, 'mmlu.jsonl'), join(dir, 'flashbacks.jsonl')];
    expect(jfa('data', 'import', '--format', 'arc', fx('arc.jsonl'), '--out', arc).status).toBe(0);
    expect(jfa('data', 'import', '--format', 'mmlu-pro', fx('mmlu-pro.jsonl'), '--out', mmlu).status).toBe(0);
    const r = jfa('data', 'flashbacks', '--per-suite', '2', arc, mmlu, '--out', out, '--seed', '7', '--json');
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ out, flashbacks: 4, suites: ['arc', 'mmlu-pro'], notes: [] });
    const first = readFileSync(out, 'utf8');
    expect(readJsonl(out, 'flashback').map((f) => f.task.split('/')[0])).toEqual(['arc', 'arc', 'mmlu-pro', 'mmlu-pro']);
    expect(jfa('data', 'flashbacks', '--per-suite', '2', arc, mmlu, '--out', out, '--seed', '7').status).toBe(0);
    expect(readFileSync(out, 'utf8')).toBe(first);
    const bad = jfa('data', 'flashbacks', '--per-suite', '0', arc, '--out', out);
    expect(bad.stderr).toContain('--per-suite must be a positive integer');
  });

  it('eval --metric auto scores each format as its paper does, consistent with --metric accuracy / rougeL / bleu', () => {
    const [old, ni, mixed] = [join(dir, 'eval-old.jsonl'), join(dir, 'eval-ni.jsonl'), join(dir, 'eval-mixed.jsonl')];
    expect(jfa('data', 'import', '--format', 'gsm8k', fx('gsm8k.jsonl'), '--out', old).status).toBe(0);
    expect(jfa('data', 'import', '--format', 'superni', fx('superni', 'task003_word_reversal.json'), '--out', ni).status).toBe(0);
    writeFileSync(mixed, readFileSync(old, 'utf8') + readFileSync(ni, 'utf8'));
    const run = (...args: string[]) => {
      const r = jfa('eval', '--model', model, '--max-new-tokens', '3', '--json', ...args);
      expect(r.status, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as Record<string, unknown>;
    };
    const auto = run('--data', mixed, '--metric', 'auto') as { records: number; formats: Array<Record<string, number | string>> };
    expect(auto.records).toBe(5);
    expect(auto.formats.map((f) => [f.format, f.records, Object.keys(f).sort().join(',')])).toEqual([
      ['gsm8k', 3, 'accuracy,format,records'],
      ['superni', 2, 'bleu,exactMatch,format,records,rougeL'],
    ]);
    // Greedy decoding is deterministic: the per-format scores equal the single-metric runs on each part.
    expect(auto.formats[0]!.accuracy).toBe(run('--data', old, '--metric', 'accuracy').accuracy);
    const text = run('--data', ni, '--metric', 'bleu');
    expect(auto.formats[1]!.rougeL).toBe(text.rougeL);
    expect(auto.formats[1]!.bleu).toBe(text.bleu);
    const hinted = run('--data', ni, '--metric', 'auto', '--format', 'chat') as { formats: Array<{ format: string }> };
    expect(hinted.formats.map((f) => f.format)).toEqual(['chat']);
    const wrong = jfa('eval', '--model', model, '--data', ni, '--metric', 'auto', '--format', 'gsm8k');
    expect(wrong.status).toBe(1);
    expect(wrong.stderr.trim()).toBe("jfa: record 1 (format gsm8k) has no 'answer': gsm8k is scored by its answer");
  });
});
