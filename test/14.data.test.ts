// The generated benchmark (lib/data): determinism, the task split, old-task answers that are both
// correct and scoreable, metrics on hand-checked cases, and JSONL errors that name file and line.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import {
  accuracy, answerKind, createRng, DataError, exactMatch, extractAnswer, generateSuite, isCorrect, newTasks, OLD_SUITE_NAMES,
  NAMED_SKILLS, OLD_SUITES, readJsonl, rougeL, sampleFlashbacks, SKILL_NAMES, skillRecord, splitTasks, suiteFiles, writeJsonl, writeSuite, type OldRecord, type Suite,
} from '../lib/data/index.js';
import { learnMerges } from '../lib/model/bpe.js';
import { byteLevelTokenizer, byteSymbols } from '../lib/model/create.js';
import { Tokenizer } from '../lib/model/tokenizer.js';

const dir = mkdtempSync(join(tmpdir(), 'jfa-data-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const small = { oldTrainPerSuite: 40, oldEvalPerSuite: 40, flashbacksPerSuite: 32, newTrainTasks: 60, newEvalTasks: 20, instancesPerTask: 5, evalInstancesPerTask: 3 };
const suiteA = generateSuite({ seed: 7, ...small });
const allOld = (s: Suite): OldRecord[] => OLD_SUITE_NAMES.flatMap((n) => [...s.old[n].train, ...s.old[n].eval]);

describe('rng', () => {
  it('is deterministic, in range, and differs by seed', () => {
    const draw = (seed: number) => { const r = createRng(seed); return Array.from({ length: 50 }, () => r.int(-3, 3)); };
    expect(draw(1)).toEqual(draw(1));
    expect(draw(1)).not.toEqual(draw(2));
    expect(draw(1).every((x) => x >= -3 && x <= 3)).toBe(true);
    expect(new Set(draw(1))).toEqual(new Set([-3, -2, -1, 0, 1, 2, 3]));
    expect(createRng(5).shuffle([1, 2, 3, 4, 5]).sort()).toEqual([1, 2, 3, 4, 5]);
  });

  it('nothing in lib/data uses Math.random', () => {
    // Recursive: the importers (lib/data/importers) draw samples too.
    const files = readdirSync('lib/data', { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts'));
    expect(files).toContain(join('importers', 'superni.ts'));
    const src = files.map((f) => readFileSync(join('lib/data', f), 'utf8')).join('\n');
    expect(src).not.toMatch(/Math\.random/);
  });
});

describe('generated suite', () => {
  it('is deterministic: the same seed gives the same suite, another seed a different one', () => {
    expect(generateSuite({ seed: 7, ...small })).toEqual(suiteA);
    const b = generateSuite({ seed: 8, ...small });
    expect(b.old['arith-gsm'].eval).not.toEqual(suiteA.old['arith-gsm'].eval);
    expect(b.newTrain).not.toEqual(suiteA.newTrain);
  });

  it('has the requested sizes, 32 flashback prompts per old suite, and no leaks between train, eval and flashbacks', () => {
    for (const n of OLD_SUITE_NAMES) {
      expect(suiteA.old[n].train).toHaveLength(40);
      expect(suiteA.old[n].eval).toHaveLength(40);
      const trainInputs = new Set(suiteA.old[n].train.map((r) => r.input));
      expect(suiteA.old[n].eval.some((r) => trainInputs.has(r.input))).toBe(false);
      const fb = suiteA.flashbacks.filter((f) => f.task === n);
      expect(fb).toHaveLength(32);
      for (const f of fb) {
        expect(Object.keys(f).sort()).toEqual(['input', 'instruction', 'task']);
        if ('input' in f) expect(trainInputs.has(f.input)).toBe(false);
      }
    }
    expect(suiteA.newTrain).toHaveLength(60 * 5);
    expect(suiteA.newEval).toHaveLength(20 * 3);
  });

  it('has over 1000 distinct new tasks, split by task with held-out tasks unseen in training', () => {
    const tasks = newTasks();
    expect(new Set(tasks.map((t) => t.name)).size).toBe(tasks.length);
    expect(tasks.length).toBeGreaterThanOrEqual(1000);
    expect(new Set(tasks.map((t) => t.instruction)).size).toBe(tasks.length);
    const { train, test } = splitTasks(tasks);
    expect(train.length + test.length).toBe(tasks.length);
    const trainNames = new Set(train.map((t) => t.name));
    expect(test.filter((t) => trainNames.has(t.name))).toEqual([]);
    expect(test.length / tasks.length).toBeGreaterThan(0.07);
    expect(test.length / tasks.length).toBeLessThan(0.15);
    // Some whole families are held out, and some families are split between train and test.
    const trainFamilies = new Set(train.map((t) => t.family));
    expect(test.some((t) => !trainFamilies.has(t.family))).toBe(true);
    expect(test.some((t) => trainFamilies.has(t.family))).toBe(true);
    expect(splitTasks(tasks)).toEqual({ train, test });
    const evalNames = new Set(suiteA.newEval.map((r) => r.task));
    expect(suiteA.newTrain.some((r) => evalNames.has(r.task))).toBe(false);
  });

  it('new-task outputs follow the stated rules (spot checks)', () => {
    const tasks = new Map(newTasks().map((t) => [t.name, t]));
    const r = createRng(3);
    const rot = tasks.get('rotate-left-3')!.make(r);
    const items = rot.input.split(', ');
    expect(rot.output).toBe([...items.slice(3), ...items.slice(0, 3)].join(', '));
    const cnt = tasks.get('count-letter-e')!.make(r);
    expect(Number(cnt.output)).toBe([...cnt.input].filter((c) => c === 'e').length);
    const caesar = tasks.get('caesar-1')!.make(r);
    expect(caesar.output.length).toBe(caesar.input.length);
    expect(tasks.get('caesar-1')!.instruction).toMatch(/1 place forward/);
  });
});

describe('flashback pool and general skills', () => {
  const pooled = generateSuite({ seed: 7, ...small, flashbackPoolPerSuite: 64, skills: 400 });

  it('the pool extends the flashbacks without moving train or eval, and stays disjoint from both', () => {
    expect(pooled.old).toEqual(suiteA.old);
    expect(pooled.flashbacks).toEqual(suiteA.flashbacks);
    expect(pooled.flashbackPool).toHaveLength(5 * 64);
    for (const n of OLD_SUITE_NAMES) {
      const used = new Set([...pooled.old[n].train, ...pooled.old[n].eval].map((r) => r.input));
      const pool = pooled.flashbackPool.filter((f) => f.task === n);
      expect(pool).toHaveLength(64);
      expect(pool.some((f) => 'input' in f && used.has(f.input))).toBe(false);
    }
  });

  it('seen-task evaluation: training tasks on inputs that training never saw', () => {
    const seen = generateSuite({ seed: 7, ...small, seenEvalTasks: 10 });
    expect(seen.newTrain).toEqual(suiteA.newTrain);
    const trainTasks = new Set(seen.newTrainTaskNames);
    const trainPairs = new Set(seen.newTrain.map((r) => `${r.task}\n${r.input}`));
    expect(new Set(seen.newSeenEval.map((r) => r.task)).size).toBe(10);
    expect(seen.newSeenEval.length).toBeGreaterThanOrEqual(20);
    for (const r of seen.newSeenEval) {
      expect(trainTasks.has(r.task)).toBe(true);
      expect(trainPairs.has(`${r.task}\n${r.input}`)).toBe(false);
    }
    expect(suiteA.newSeenEval).toEqual([]);
  });

  it('sampleFlashbacks: per suite, seeded, different across seeds, and refuses more than the pool holds', () => {
    const a = sampleFlashbacks(pooled, 32, 1);
    expect(a).toHaveLength(5 * 32);
    for (const n of OLD_SUITE_NAMES) expect(a.filter((f) => f.task === n)).toHaveLength(32);
    expect(sampleFlashbacks(pooled, 32, 1)).toEqual(a);
    expect(sampleFlashbacks(pooled, 32, 2)).not.toEqual(a);
    expect(() => sampleFlashbacks(pooled, 65, 1)).toThrow(/65 flashbacks of 'arith-gsm' asked for, its pool has 64/);
  });

  it('skills are seeded, cover every skill, check out, and never use a new task\'s instruction', () => {
    expect(generateSuite({ seed: 7, ...small, skills: 400 }).skills).toEqual(pooled.skills);
    expect(pooled.skills).toHaveLength(400);
    expect(new Set(pooled.skills.map((r) => r.task))).toEqual(new Set(SKILL_NAMES.map((n) => `skill-${n}`)));
    const newInstructions = new Set(newTasks().map((t) => t.instruction));
    expect(pooled.skills.some((r) => newInstructions.has(r.instruction))).toBe(false);
    for (const r of pooled.skills) {
      if (r.task === 'skill-spell') expect(r.output.replace(/ /g, '')).toBe(r.input);
      if (r.task === 'skill-add-pair') expect(Number(r.output)).toBe(eval(r.input) as number);
      if (r.task === 'skill-count-items') expect(Number(r.output)).toBe(r.input.split(' ').length);
      if (r.task === 'skill-lookup' || r.task === 'skill-lookup-one') {
        const [table, keys] = r.input.replace(/^Table: /, '').split('. Keys: ') as [string, string];
        const map = new Map(table.split('; ').map((kv) => kv.split(' ') as [string, string]));
        expect(new Set(map.values()).size).toBe(map.size);
        expect(new Set(keys.split(' ')).size).toBe(keys.split(' ').length);
        expect(keys.split(' ').length).toBe(r.task === 'skill-lookup' ? Math.max(2, keys.split(' ').length) : 1);
        expect(r.output).toBe(`Values: ${keys.split(' ').map((k) => `${k} ${map.get(k)}`).join('; ')}`);
      }
      if (r.task === 'skill-continue-from') {
        const [list, from] = r.input.split('. From: ') as [string, string];
        const ws = list.split(' ');
        expect(new Set(ws).size).toBe(ws.length);
        expect(ws.indexOf(from)).toBeLessThan(ws.length - 1);
        expect(r.output).toBe(`List: ${ws.slice(ws.indexOf(from)).join(' ')}`);
      }
    }
  });
});

describe('old-task records', () => {
  const records = allOld(suiteA);

  it('every output scores as correct against its own answer, and a wrong answer scores 0', () => {
    for (const r of records) {
      if (!isCorrect(r.output, r.answer, answerKind(r.task))) throw new Error(`not self-consistent: ${JSON.stringify(r)}`);
    }
    expect(accuracy(records, records.map((r) => r.output))).toBe(1);
    const wrong = (r: OldRecord): string => {
      const kind = answerKind(r.task);
      if (kind === 'numeric') return `I think it is ${Number(r.answer) + 1}. The answer is ${Number(r.answer) + 1}.`;
      if (kind === 'choice') return `Answer: ${r.answer === 'A' ? 'B' : 'A'}`;
      return `The answer is ${r.answer === 'True' ? 'False' : 'not ' + r.answer}.`;
    };
    expect(accuracy(records, records.map(wrong))).toBe(0);
    expect(accuracy(records, records.map(() => ''))).toBe(0);
  });

  it('arithmetic answers are right: every "a op b = c" step and the final answer check out', () => {
    const arith = records.filter((r) => r.task.startsWith('arith-'));
    expect(arith.length).toBe(160);
    for (const r of arith) {
      for (const [, a, op, b, c] of r.output.matchAll(/(\d+) ([-+x/]) (\d+) = (\d+)/g)) {
        const [x, y] = [Number(a), Number(b)];
        const want = op === '+' ? x + y : op === '-' ? x - y : op === 'x' ? x * y : x / y;
        expect(Number(c), r.output).toBe(want);
      }
      expect(Number.isInteger(Number(r.answer)) && Number(r.answer) >= 0).toBe(true);
    }
  });

  it('recomputes answers from the problem text for known templates', () => {
    let checked = 0;
    for (const r of records) {
      let m = /buys (\d+) packs of \w+ with (\d+) \w+ in each pack\. \w+ then gives away (\d+)/.exec(r.input);
      if (m) { expect(Number(r.answer)).toBe(Number(m[1]) * Number(m[2]) - Number(m[3])); checked++; }
      m = /makes (\d+) toys per hour\. It runs for (\d+) hours on Monday and (\d+) hours/.exec(r.input);
      if (m) { expect(Number(r.answer)).toBe(Number(m[1]) * (Number(m[2]) + Number(m[3]))); checked++; }
      m = /After giving (\d+) \w+ to \w+, \w+ has (\d+)/.exec(r.input);
      if (m) { expect(Number(r.answer)).toBe(Number(m[1]) + Number(m[2])); checked++; }
      m = /^Evaluate from left to right: (.*)$/.exec(r.input);
      if (m) {
        // Read the expression independently: tokens, 'not' binding to the next constant, then left to right.
        const tokens = m[1]!.split(' ');
        const term = (): boolean => (tokens[0] === 'not' ? (tokens.shift(), tokens.shift() !== 'True') : tokens.shift() === 'True');
        let acc = term();
        while (tokens.length) {
          const op = tokens.shift();
          const next = term();
          acc = op === 'and' ? acc && next : acc || next;
        }
        expect(r.answer).toBe(acc ? 'True' : 'False');
        checked++;
      }
      m = /^(\w+) has (\d+) \w+ and (\w+) has (\d+) \w+\. Who has (more|fewer)/.exec(r.input);
      if (m) {
        const [a, x, b, y, more] = [m[1], Number(m[2]), m[3], Number(m[4]), m[5] === 'more'];
        expect(r.answer).toBe((more ? x > y : x < y) ? a : b);
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(20);
  });

  it('multiple-choice records have 4-6 options with the answer letter among them', () => {
    const mc = records.filter((r) => r.task.endsWith('-mc'));
    for (const r of mc) {
      const letters = [...r.input.matchAll(/^([A-F])\) /gm)].map((m) => m[1]);
      expect(letters.length).toBeGreaterThanOrEqual(4);
      expect(letters.length).toBeLessThanOrEqual(6);
      expect(letters).toContain(r.answer);
      if (r.task === 'science-mc') expect(letters).toHaveLength(4);
    }
    expect(new Set(mc.map((r) => r.answer)).size).toBeGreaterThanOrEqual(4);
  });

  it('each suite generator makes records of its own task', () => {
    for (const n of OLD_SUITE_NAMES) expect(OLD_SUITES[n](createRng(1), 5).every((r) => r.task === n)).toBe(true);
  });
});

describe('metrics', () => {
  it('ROUGE-L F1 on hand-checked cases', () => {
    // LCS 5 of 5 predicted and 6 reference tokens: P 1, R 5/6, F 10/11.
    expect(rougeL('the cat on the mat', 'The cat sat on the mat.')).toBeCloseTo(10 / 11, 12);
    // Tokens a b c d vs b a d: LCS 2 (b d or a d): P 2/3, R 2/4, F 4/7.
    expect(rougeL('b a d', 'a b c d')).toBeCloseTo(4 / 7, 12);
    expect(rougeL('Hello, world!', 'hello world')).toBe(1);
    expect(rougeL('x y', 'a b')).toBe(0);
    expect(rougeL('', 'a')).toBe(0);
    expect(rougeL('', '')).toBe(1);
  });

  it('exact match normalises whitespace and case only', () => {
    expect(exactMatch('  Apple,  Pear ', 'apple, pear')).toBe(true);
    expect(exactMatch('apple pear', 'apple, pear')).toBe(false);
  });

  it('extracts numeric, choice and exact answers', () => {
    expect(extractAnswer('3 + 4 = 7. The answer is 7.', 'numeric')).toBe('7');
    expect(extractAnswer('so 12 then 1,250 in total', 'numeric')).toBe('1250');
    expect(extractAnswer('The answer is $15.50', 'numeric')).toBe('15.5');
    expect(extractAnswer('no digits', 'numeric')).toBeUndefined();
    expect(extractAnswer('Water is a liquid. Answer: B', 'choice')).toBe('B');
    expect(extractAnswer('C) helium because it is a gas', 'choice')).toBe('C');
    expect(extractAnswer(' d ', 'choice')).toBeUndefined();
    expect(extractAnswer('D', 'choice')).toBe('D');
    expect(extractAnswer('the answer is a liquid', 'choice')).toBeUndefined();
    expect(extractAnswer('So the answer is  2024-04-04.', 'exact')).toBe('2024-04-04');
    expect(isCorrect('The answer is true.', 'True', 'exact')).toBe(true);
    expect(isCorrect('The answer is 7.0', '7', 'numeric')).toBe(true);
  });
});

describe('JSONL', () => {
  const write = (name: string, text: string): string => { const p = join(dir, name); writeFileSync(p, text); return p; };
  const errorOf = (f: () => unknown): string => {
    try { f(); } catch (e) { expect(e).toBeInstanceOf(DataError); return (e as Error).message; }
    throw new Error('expected a DataError');
  };

  it('round-trips instances and flashbacks, and writes atomically (no temp file left)', () => {
    const p = join(dir, 'rt', 'data.jsonl');
    const recs = [...suiteA.old.logic.eval.slice(0, 3), { task: 't', instruction: 'i', input: 'x\ny "q"', output: 'o', embedding: [0.5, -1] }];
    writeJsonl(p, recs);
    expect(readJsonl(p, 'instance')).toEqual(recs);
    writeJsonl(p, suiteA.flashbacks);
    expect(readJsonl(p, 'flashback')).toEqual(suiteA.flashbacks);
    expect(readdirSync(join(dir, 'rt'))).toEqual(['data.jsonl']);
    expect(readJsonl(write('prompt.jsonl', '{"task":"a","prompt":"p"}\n\n'), 'flashback')).toEqual([{ task: 'a', prompt: 'p' }]);
  });

  it('reports bad input with file, line and what is wrong, returning nothing', () => {
    const ok = '{"task":"t","instruction":"i","input":"x","output":"y"}';
    const cases: [string, string, 'instance' | 'flashback', string][] = [
      ['empty.jsonl', '\n  \n', 'instance', 'empty.jsonl: empty file'],
      ['json.jsonl', `${ok}\n${ok}\n{"task": "t",\n`, 'instance', `json.jsonl:3: invalid JSON (`],
      ['missing.jsonl', `${ok}\n{"task":"t","instruction":"i","input":"x"}\n`, 'instance', "missing.jsonl:2: missing field 'output'"],
      ['type.jsonl', '{"task":"t","instruction":"i","input":5,"output":"y"}\n', 'instance', "type.jsonl:1: field 'input' must be a string, got number"],
      ['array.jsonl', `${ok}\n[1,2]\n`, 'instance', 'array.jsonl:2: expected a JSON object, got array'],
      ['emb.jsonl', '{"task":"t","instruction":"i","input":"x","output":"y","embedding":[1,"a"]}\n', 'instance', "emb.jsonl:1: field 'embedding' must be a non-empty array of finite numbers (item 1: string)"],
      ['inf.jsonl', '{"task":"t","prompt":"p","embedding":[1e999]}\n', 'flashback', "inf.jsonl:1: field 'embedding' must be a non-empty array of finite numbers (item 0: Infinity)"],
      ['several.jsonl', '{"task":"t","instruction":5,"output":"y"}\n', 'instance', "several.jsonl:1: field 'instruction' must be a string, got number; missing field 'input'"],
      ['dim.jsonl', '{"task":"t","prompt":"p","embedding":[1,2]}\n\n{"task":"t","prompt":"p","embedding":[1]}\n', 'flashback', "dim.jsonl:3: field 'embedding' has 1 numbers, line 1 had 2"],
      ['fb.jsonl', '{"task":"t"}\n', 'flashback', "fb.jsonl:1: missing field 'instruction' and 'input' (or 'prompt')"],
      ['both.jsonl', '{"task":"t","prompt":"p","input":"x"}\n', 'flashback', "both.jsonl:1: give either 'instruction' and 'input', or 'prompt', not both"],
      ['answer.jsonl', '{"task":"t","instruction":"i","input":"x","output":"y","answer":3}\n', 'instance', "answer.jsonl:1: field 'answer' must be a string, got number"],
    ];
    for (const [name, text, kind, message] of cases) {
      const p = write(name, text);
      const got = errorOf(() => readJsonl(p, kind as 'instance'));
      if (message.endsWith('(')) expect(got.startsWith(`${join(dir, message)}`), got).toBe(true);
      else expect(got).toBe(join(dir, message));
    }
    const many = errorOf(() => readJsonl(write('many.jsonl', `nope\n${'{}\n'.repeat(30)}`), 'instance'));
    expect(many.split('\n')).toHaveLength(21);
    expect(many).toMatch(/many\.jsonl:31: missing field 'task'|\.\.\. and 11 more/);
    expect(errorOf(() => readJsonl(join(dir, 'absent.jsonl'), 'instance'))).toBe(`${join(dir, 'absent.jsonl')}: cannot read (ENOENT)`);
  });

  it('writeSuite writes every file, readable back in its format, and a README', () => {
    const out = join(dir, 'suite');
    writeSuite(out, suiteA);
    expect(readdirSync(out).sort()).toEqual(suiteFiles(suiteA).sort());
    expect(readJsonl(join(out, 'old-arith-gsm-eval.jsonl'), 'instance')).toEqual(suiteA.old['arith-gsm'].eval);
    expect(readJsonl(join(out, 'flashbacks.jsonl'), 'flashback')).toHaveLength(5 * 32);
    expect(readJsonl(join(out, 'new-eval.jsonl'), 'instance')).toEqual(suiteA.newEval);
    expect(readFileSync(join(out, 'README.md'), 'utf8')).toMatch(/new-eval\.jsonl \| 60 \(20 held-out tasks\)/);
    expect(existsSync(join(out, 'new-train.jsonl'))).toBe(true);
  });
});

describe('BPE merges', () => {
  // The plain algorithm, kept here as the reference: count every adjacent pair of every word, merge
  // the most frequent (ties: the smaller text), rewrite every word, again. learnMerges keeps its
  // counts up to date instead and must learn exactly the same merges.
  const reference = (texts: string[], merges: number, splitDigits = true): string[] => {
    const symbols = byteSymbols();
    const counts = new Map<string, number>();
    for (const t of texts)
      for (const piece of t.match(/'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu) ?? []) {
        const w = Array.from(new TextEncoder().encode(piece), (b) => symbols[b]!).join('\u0000');
        counts.set(w, (counts.get(w) ?? 0) + 1);
      }
    let words = [...counts].map(([w, c]) => ({ parts: w.split('\u0000'), c }));
    const out: string[] = [];
    while (out.length < merges) {
      const pairs = new Map<string, number>();
      for (const { parts, c } of words)
        for (let i = 0; i + 1 < parts.length; i++) {
          if (splitDigits && (/[0-9]/.test(parts[i]!) || /[0-9]/.test(parts[i + 1]!))) continue;
          pairs.set(`${parts[i]} ${parts[i + 1]}`, (pairs.get(`${parts[i]} ${parts[i + 1]}`) ?? 0) + c);
        }
      const ranked = [...pairs].filter(([, c]) => c > 1).sort((x, y) => y[1] - x[1] || (x[0] < y[0] ? -1 : 1));
      if (!ranked.length) break;
      const best = ranked[0]![0];
      out.push(best);
      const [a, b] = best.split(' ') as [string, string];
      words = words.map(({ parts, c }) => {
        const next: string[] = [];
        for (let i = 0; i < parts.length; i++) {
          if (parts[i] === a && parts[i + 1] === b) next.push(a + parts[++i]!);
          else next.push(parts[i]!);
        }
        return { parts: next, c };
      });
    }
    return out;
  };

  it('learns the same merges as the plain algorithm: skills, old suites, runs of one letter, digits on and off', () => {
    const r = createRng(11);
    const texts = [
      ...Array.from({ length: 400 }, (_, i) => skillRecord(NAMED_SKILLS[i % NAMED_SKILLS.length]!, r)).flatMap((x) => [x.instruction, x.input, x.output]),
      ...allOld(suiteA).slice(0, 100).flatMap((x) => [x.input, x.output]),
      'aaaa aaaaa aaa bbbbbb abababab', 'aaaa aaaaa aaa bbbbbb abababab', '11 111 1111 x1x1x1 x1x1',
    ];
    for (const [n, digits] of [[300, true], [150, false], [5000, true]] as const) {
      const got = learnMerges(texts, n, { splitDigits: digits });
      expect(got).toEqual(reference(texts, n, digits));
      expect(got.length).toBeGreaterThan(Math.min(n, 100));
    }
  });

  it('splitSpaces: no merge takes the space, so a word is the same tokens after a space, a newline or "="', () => {
    const r = createRng(12);
    const texts = Array.from({ length: 300 }, () => skillRecord('lookup-table', r)).flatMap((x) => [x.instruction, x.input, x.output]);
    texts.push('apple=kotor, moss=dada.\napple moss\nkotor dada', 'apple=kotor, moss=dada.\napple moss\nkotor dada');
    const space = byteSymbols()[0x20]!;
    const plain = learnMerges(texts, 400);
    const split = learnMerges(texts, 400, { splitSpaces: true });
    expect(plain.some((m) => m.includes(space))).toBe(true);
    expect(split.some((m) => m.includes(space))).toBe(false);
    expect(split.length).toBe(400);
    const { tokenizer } = byteLevelTokenizer(split);
    const dir = mkdtempSync(join(tmpdir(), 'jfa-split-'));
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tokenizer));
    const tok = Tokenizer.fromDir(dir);
    const pieces = (s: string) => tok.encode(s).slice(1).map((i) => tok.decode([i]));
    // the word's tokens, wherever it stands; the spaces are tokens of their own
    expect(pieces('=kotor')).toEqual(['=', ...pieces('kotor')]);
    expect(pieces(' kotor')).toEqual([' ', ...pieces('kotor')]);
    expect(pieces('\nkotor dada')).toEqual(['\n', ...pieces('kotor'), ' ', ...pieces('dada')]);
    rmSync(dir, { recursive: true, force: true });
  });
});
