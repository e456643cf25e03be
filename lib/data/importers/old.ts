// The paper's old-task datasets (GSM8K, SVAMP, ARC, MMLU-Pro, BBH) as old-task records written the
// way old-tasks.ts writes its suites: the same instructions, "A) ..." option blocks, and outputs
// that end in "The answer is N." or "Answer: X", so metrics.ts scores them by `answer`.
import { basename } from 'node:path';

import { ARITH_INSTRUCTION, CHOICE_INSTRUCTION, LOGIC_INSTRUCTION, OPTION_LETTERS, optionBlock } from '../old-tasks.js';
import type { OldRecord } from '../records.js';
import { type Contents, elementLines, importRows, type ImportResult, isObject, type Item, rows, type Skip, textField } from './common.js';

/** Options of the old-task importers. */
export interface OldImportOptions {
  /** The suite name in each record's `task` (default: the format's name). MMLU-Pro and BBH add "/category" or "/task". */
  task?: string;
}

type Converted = OldRecord | { problem: string };

/** A number written canonically ("1,000.0" -> "1000"), or undefined when `raw` is not one. */
function canonicalNumber(raw: string): string | undefined {
  const cleaned = raw.replace(/,/g, '').replace(/^\$/, '').trim();
  if (!/^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i.test(cleaned)) return undefined;
  return String(Number(cleaned));
}

function arith(task: string, format: string, input: string, steps: string, answer: string): OldRecord {
  return { task, instruction: ARITH_INSTRUCTION, input, output: `${steps}${steps ? ' ' : ''}The answer is ${answer}.`, answer, format };
}

/**
 * GSM8K: JSONL (or a JSON array) of `question` and `answer`, the answer a worked solution ending in
 * "#### N". The record's answer is N without commas; its output is the solution without GSM8K's
 * "<<48/2=24>>" calculator notes, ending "The answer is N.".
 * @param paths - the input files.
 * @param options - the suite name for the records' `task` (default 'gsm8k').
 * @returns the records (format 'gsm8k'), the skipped items with file and line, and a count per file.
 * @throws DataError when a file is unreadable or empty, or none of its items is a usable GSM8K item.
 * @example
 * ```ts
 * const { records, skipped } = importGsm8k(['gsm8k/test.jsonl']);
 * // records[0]: { task: 'gsm8k', answer: '18', output: '... The answer is 18.', ... }
 * ```
 */
export function importGsm8k(paths: readonly string[], options: OldImportOptions = {}): ImportResult {
  const task = options.task ?? 'gsm8k';
  return importRows('gsm8k', paths, (o): Converted => {
    const question = textField(o, 'question');
    if (typeof question !== 'string') return question;
    const solution = textField(o, 'answer');
    if (typeof solution !== 'string') return solution;
    const at = solution.lastIndexOf('####');
    if (at < 0) return { problem: "no '#### ' answer at the end of 'answer'" };
    const raw = solution.slice(at + 4).trim();
    const answer = canonicalNumber(raw);
    if (answer === undefined) return { problem: `the answer after '####' is not a number: '${raw.slice(0, 40)}'` };
    const steps = solution.slice(0, at).replace(/<<[^>]*>>/g, '').split('\n').map((l) => l.trim()).filter(Boolean).join(' ');
    return arith(task, 'gsm8k', question, steps, answer);
  });
}

/**
 * SVAMP: a JSON array (or JSONL) of `Body`, `Question` and a numeric `Answer`, maybe `Equation` and
 * `ID`. The input is Body then Question; the output states the equation when there is one.
 * @param paths - the input files.
 * @param options - the suite name for the records' `task` (default 'svamp').
 * @returns the records (format 'svamp'), the skipped items with file and line, and a count per file.
 * @throws DataError when a file is unreadable or empty, or none of its items is a usable SVAMP item.
 * @example
 * ```ts
 * const { records } = importSvamp(['SVAMP.json'], { task: 'svamp' });
 * ```
 */
export function importSvamp(paths: readonly string[], options: OldImportOptions = {}): ImportResult {
  const task = options.task ?? 'svamp';
  return importRows('svamp', paths, (o): Converted => {
    const body = textField(o, 'Body');
    if (typeof body !== 'string') return body;
    const question = textField(o, 'Question');
    if (typeof question !== 'string') return question;
    const raw = textField(o, 'Answer');
    if (typeof raw !== 'string') return raw;
    const answer = canonicalNumber(raw);
    if (answer === undefined) return { problem: `field 'Answer' is not a number: '${raw.slice(0, 40)}'` };
    const equation = typeof o.Equation === 'string' && o.Equation.trim() !== '' ? `${o.Equation.trim()} = ${answer}.` : '';
    const input = /[.?!]$/.test(body) ? `${body} ${question}` : `${body}. ${question}`;
    return arith(task, 'svamp', input, equation, answer);
  });
}

function choiceRecord(task: string, format: string, question: string, options: readonly string[], correct: number): OldRecord {
  const letter = OPTION_LETTERS[correct] as string;
  return { task, instruction: CHOICE_INSTRUCTION, input: `${question}\n${optionBlock(options)}`, output: `Answer: ${letter}`, answer: letter, format };
}

/** ARC's question and choices: AI2's `question: {stem, choices: [{text, label}]}`, or Hugging Face's `question` string with `choices: {text: [], label: []}`. */
function arcParts(o: Record<string, unknown>): { stem: string; choices: unknown[] } | { problem: string } {
  if (typeof o.question === 'string' && isObject(o.choices)) {
    const { text, label } = o.choices;
    if (!Array.isArray(text) || !Array.isArray(label) || text.length !== label.length) return { problem: "field 'choices' must hold 'text' and 'label' arrays of one length" };
    const stem = textField(o, 'question');
    return typeof stem === 'string' ? { stem, choices: text.map((t, i) => ({ text: t, label: label[i] })) } : stem;
  }
  if (!isObject(o.question)) return { problem: o.question === undefined ? "missing field 'question'" : "field 'question' must be an object with 'stem' and 'choices'" };
  const stem = textField(o.question, 'stem');
  if (typeof stem !== 'string') return { problem: `question: ${stem.problem}` };
  if (!Array.isArray(o.question.choices)) return { problem: "field 'question.choices' must be an array of choices" };
  return { stem, choices: o.question.choices };
}

/**
 * ARC: JSONL of `id`, `question: {stem, choices: [{text, label}]}` and `answerKey` (as AI2 publishes
 * it; Hugging Face's `question` + `choices: {text, label}` also reads). Labels may be letters or
 * 1-4; options are lettered A, B, ... in their given order and the answer follows its label.
 * @param paths - the input files.
 * @param options - the suite name for the records' `task` (default 'arc').
 * @returns the records (format 'arc'), the skipped items with file and line, and a count per file.
 * @throws DataError when a file is unreadable or empty, or none of its items is a usable ARC item.
 * @example
 * ```ts
 * const { records } = importArc(['ARC-Challenge-Test.jsonl'], { task: 'arc-challenge' });
 * // records[0].answer: 'C' (the option letter)
 * ```
 */
export function importArc(paths: readonly string[], options: OldImportOptions = {}): ImportResult {
  const task = options.task ?? 'arc';
  return importRows('arc', paths, (o): Converted => {
    const parts = arcParts(o);
    if ('problem' in parts) return parts;
    const { stem, choices } = parts;
    if (choices.length < 2) return { problem: `${choices.length} choices, at least 2 are needed` };
    if (choices.length > OPTION_LETTERS.length) return { problem: `${choices.length} choices, at most ${OPTION_LETTERS.length} are supported` };
    const texts: string[] = [];
    const labels: string[] = [];
    for (const [i, c] of choices.entries()) {
      const text = isObject(c) ? textField(c, 'text') : { problem: 'not an object' };
      const label = isObject(c) ? textField(c, 'label') : { problem: 'not an object' };
      if (typeof text !== 'string') return { problem: `choices[${i}]: ${text.problem}` };
      if (typeof label !== 'string') return { problem: `choices[${i}]: ${label.problem}` };
      texts.push(text);
      labels.push(label);
    }
    const key = textField(o, 'answerKey');
    if (typeof key !== 'string') return key;
    const correct = labels.indexOf(key);
    if (correct < 0) return { problem: `answerKey '${key}' is none of the labels ${labels.join(', ')}` };
    return choiceRecord(task, 'arc', stem, texts, correct);
  });
}

/**
 * MMLU-Pro: JSONL (or a JSON array) of `question`, `options` (up to 10, lettered A-J), `answer`
 * (the letter) and/or `answer_index`, and `category`, which becomes the task's suffix ("mmlu-pro/law").
 * A record whose letter and index disagree is skipped.
 * @param paths - the input files.
 * @param options - the suite name, the records' `task` before "/category" (default 'mmlu-pro').
 * @returns the records (format 'mmlu-pro'), the skipped items with file and line, and a count per file.
 * @throws DataError when a file is unreadable or empty, or none of its items is a usable MMLU-Pro item.
 * @example
 * ```ts
 * const { records } = importMmluPro(['mmlu-pro-test.jsonl']);
 * // records[0].task: 'mmlu-pro/law'
 * ```
 */
export function importMmluPro(paths: readonly string[], options: OldImportOptions = {}): ImportResult {
  const suite = options.task ?? 'mmlu-pro';
  return importRows('mmlu-pro', paths, (o): Converted => {
    const question = textField(o, 'question');
    if (typeof question !== 'string') return question;
    const opts = o.options;
    if (!Array.isArray(opts) || opts.length < 2) return { problem: "field 'options' must be an array of at least 2 options" };
    if (opts.length > OPTION_LETTERS.length) return { problem: `${opts.length} options, at most ${OPTION_LETTERS.length} (A-J)` };
    const texts = opts.map((v) => (typeof v === 'string' ? v.trim() : typeof v === 'number' ? String(v) : undefined));
    const bad = texts.findIndex((t) => t === undefined || t === '');
    if (bad >= 0) return { problem: `options[${bad}] must be a non-empty string` };
    const letter = typeof o.answer === 'string' ? o.answer.trim().toUpperCase() : undefined;
    const fromLetter = letter !== undefined ? OPTION_LETTERS.indexOf(letter as (typeof OPTION_LETTERS)[number]) : undefined;
    const index = o.answer_index;
    if (letter === undefined && index === undefined) return { problem: "missing field 'answer' (and 'answer_index')" };
    if (fromLetter !== undefined && (fromLetter < 0 || fromLetter >= texts.length)) return { problem: `answer '${letter}' is not one of the ${texts.length} option letters` };
    if (index !== undefined && (!Number.isInteger(index) || (index as number) < 0 || (index as number) >= texts.length)) {
      return { problem: `answer_index ${JSON.stringify(index)} is not an index of the ${texts.length} options` };
    }
    if (fromLetter !== undefined && index !== undefined && fromLetter !== index) return { problem: `answer '${letter}' and answer_index ${String(index)} disagree` };
    const category = typeof o.category === 'string' && o.category.trim() !== '' ? `/${o.category.trim()}` : '';
    return choiceRecord(`${suite}${category}`, 'mmlu-pro', question, texts as string[], fromLetter ?? (index as number));
  });
}

const stem = (file: string): string => basename(file).replace(/\.(jsonl?|txt)$/i, '');

/** BBH items: a task file's `examples` array, else rows. */
function bbhItems(contents: Contents): { items: Item[]; bad: Skip[] } {
  if (contents.kind === 'json' && isObject(contents.value) && 'examples' in contents.value) {
    const examples = contents.value.examples;
    if (!Array.isArray(examples)) return { items: [{ value: examples, line: 1 }], bad: [] };
    const lines = elementLines(contents.text, ['examples']);
    return { items: examples.map((value, i) => ({ value, line: lines[i] ?? 1 })), bad: [] };
  }
  return rows(contents);
}

/**
 * BBH: a task file `{"examples": [{input, target}]}`, or JSONL of `inputs` and `targets` (or `input`
 * and `target`). The task is the suite and the file name, "bbh/date_understanding" (just "bbh" for bbh.jsonl). A target "(A)" is scored as the
 * option letter A, any other target by exact match.
 * @param paths - the input files.
 * @param options - the suite name, the records' `task` before "/" and the file name (default 'bbh').
 * @returns the records (format 'bbh'), the skipped items with file and line, and a count per file.
 * @throws DataError when a file is unreadable or empty, or none of its items is a usable BBH item.
 * @example
 * ```ts
 * const { records } = importBbh(['bbh/date_understanding.json', 'bbh/boolean_expressions.json']);
 * // tasks 'bbh/date_understanding' and 'bbh/boolean_expressions'
 * ```
 */
export function importBbh(paths: readonly string[], options: OldImportOptions = {}): ImportResult {
  const suite = options.task ?? 'bbh';
  return importRows(
    'bbh',
    paths,
    (o, file): Converted => {
      const input = textField(o, 'inputs' in o ? 'inputs' : 'input');
      if (typeof input !== 'string') return input;
      const key = 'targets' in o ? 'targets' : 'target';
      const value = Array.isArray(o[key]) ? { [key]: (o[key] as unknown[])[0] } : o;
      const target = textField(value, key);
      if (typeof target !== 'string') return target;
      if (target.includes('\n')) return { problem: `field '${key}' spans several lines` };
      const letter = /^\(([A-J])\)$/.exec(target)?.[1];
      const answer = letter ?? target;
      return { task: stem(file) === suite ? suite : `${suite}/${stem(file)}`, instruction: LOGIC_INSTRUCTION, input, output: `The answer is ${target}${target.endsWith('.') ? '' : '.'}`, answer, format: 'bbh' };
    },
    bbhItems,
  );
}
