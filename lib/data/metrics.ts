// Scores for the benchmark: ROUGE-L, BLEU-4 and exact match for new tasks (the paper's ROUGE-L and
// BLEU-4), answer extraction + accuracy for old tasks (the paper's accuracy on GSM8K/SVAMP/ARC/
// MMLU-Pro/BBH), and the choice of scorer by a record's published format.
import type { InstanceRecord } from './records.js';

/**
 * Lowercased word tokens; punctuation and whitespace both separate.
 * @param text - the text.
 * @returns the tokens.
 * @example
 * ```ts
 * tokenize('Hello, World!'); // ['hello', 'world']
 * ```
 */
export function tokenize(text: string): string[] {
  return text.toLowerCase().split(/[^\p{L}\p{N}]+/u).filter((t) => t.length > 0);
}

function lcsLength(a: readonly string[], b: readonly string[]): number {
  // One row of the DP table is enough: O(len(b)) memory.
  const row = new Array<number>(b.length + 1).fill(0);
  for (let i = 1; i <= a.length; i++) {
    let diag = 0;
    for (let j = 1; j <= b.length; j++) {
      const up = row[j] as number;
      row[j] = a[i - 1] === b[j - 1] ? diag + 1 : Math.max(up, row[j - 1] as number);
      diag = up;
    }
  }
  return row[b.length] as number;
}

/**
 * ROUGE-L F1 between a prediction and a reference (1 when both are empty), on {@link tokenize}'s tokens.
 * @param prediction - the model's output.
 * @param reference - the target.
 * @returns the F1 of the longest common subsequence, from 0 to 1.
 * @example
 * ```ts
 * rougeL('the cat sat', 'the cat sat down'); // 0.857...
 * ```
 */
export function rougeL(prediction: string, reference: string): number {
  const [p, r] = [tokenize(prediction), tokenize(reference)];
  if (p.length === 0 || r.length === 0) return p.length === r.length ? 1 : 0;
  const lcs = lcsLength(p, r);
  if (lcs === 0) return 0;
  const [precision, recall] = [lcs / p.length, lcs / r.length];
  return (2 * precision * recall) / (precision + recall);
}

function normalize(text: string): string {
  return text.trim().replace(/\s+/g, ' ').toLowerCase();
}

/**
 * Whether prediction and reference are equal, ignoring case and runs of whitespace.
 * @param prediction - the model's output.
 * @param reference - the target.
 * @returns true when they match.
 * @example
 * ```ts
 * exactMatch(' Hello  World', 'hello world'); // true
 * ```
 */
export function exactMatch(prediction: string, reference: string): boolean {
  return normalize(prediction) === normalize(reference);
}

/** How an answer is extracted and compared: a number, an option letter, or an exact string. */
export type AnswerKind = 'numeric' | 'choice' | 'exact';

/**
 * How the generated suites are scored; unknown task names (user data) compare exact strings.
 * @param task - a record's task name.
 * @returns 'numeric' for arith-*, 'choice' for *-mc, else 'exact'.
 * @example
 * ```ts
 * answerKind('arith-gsm'); // 'numeric'
 * ```
 */
export function answerKind(task: string): AnswerKind {
  if (task.startsWith('arith-')) return 'numeric';
  if (task.endsWith('-mc')) return 'choice';
  return 'exact';
}

/** How records of each imported format are scored: by answer (numeric, option letter) or as text. */
export const FORMAT_SCORING = {
  /** GSM8K: accuracy of the final number. */
  gsm8k: 'numeric',
  /** SVAMP: accuracy of the final number. */
  svamp: 'numeric',
  /** ARC: accuracy of the option letter. */
  arc: 'choice',
  /** MMLU-Pro: accuracy of the option letter (A-J). */
  'mmlu-pro': 'choice',
  /** BBH: accuracy of the option letter when the answer is one ("(A)"), else of the exact answer text. */
  bbh: 'choice-or-exact',
  /** Super-NaturalInstructions: ROUGE-L, BLEU-4 and exact match against the output. */
  superni: 'text',
  /** Chat: ROUGE-L, BLEU-4 and exact match against the last assistant turn. */
  chat: 'text',
} as const satisfies Record<string, 'numeric' | 'choice' | 'choice-or-exact' | 'text'>;

/** A format name {@link FORMAT_SCORING} knows, as set in a record's `format` by the importers. */
export type ScoredFormat = keyof typeof FORMAT_SCORING;

const LETTER_ANSWER = /^\(?([A-J])\)?$/;

/**
 * The answer kind of one record: by its `format` when an importer set one (BBH: option letter
 * when the answer is one, else exact), otherwise by its task name as {@link answerKind}.
 * @param r - a record's task name, reference answer and format (any of them may be absent but the task).
 * @returns how the record's answer is extracted and compared.
 * @example
 * ```ts
 * answerKindOf({ task: 'bbh/date_understanding', answer: 'B', format: 'bbh' }); // 'choice'
 * answerKindOf({ task: 'bbh/word_sorting', answer: 'apple banana', format: 'bbh' }); // 'exact'
 * answerKindOf({ task: 'arith-gsm' }); // 'numeric'
 * ```
 */
export function answerKindOf(r: { task: string; answer?: string; format?: string }): AnswerKind {
  const scoring = r.format !== undefined ? (FORMAT_SCORING as Record<string, string>)[r.format] : undefined;
  if (scoring === 'numeric' || scoring === 'choice') return scoring;
  if (scoring === 'choice-or-exact') return LETTER_ANSWER.test((r.answer ?? '').trim()) ? 'choice' : 'exact';
  return answerKind(r.task);
}

const NUMBER = /-?\d[\d,]*(?:\.\d+)?|-?\.\d+/g;

function lastMatch(text: string, re: RegExp): RegExpExecArray | undefined {
  let last: RegExpExecArray | undefined;
  for (const m of text.matchAll(re)) last = m as RegExpExecArray;
  return last;
}

/**
 * The final answer in a model output, or undefined when none can be found.
 * @param output - the model's output.
 * @param kind - how to read it.
 * @returns the answer, normalised (a number's canonical text, an option letter, or a lowercased string).
 * @example
 * ```ts
 * extractAnswer('3 + 4 = 7. The answer is 7.', 'numeric'); // '7'
 * extractAnswer('Answer: (B)', 'choice'); // 'B'
 * ```
 */
export function extractAnswer(output: string, kind: AnswerKind): string | undefined {
  if (kind === 'numeric') {
    const stated = lastMatch(output, /the answer is\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)/gi);
    const raw = stated?.[1] ?? lastMatch(output, NUMBER)?.[0];
    if (raw === undefined) return undefined;
    const value = Number(raw.replace(/,/g, ''));
    return Number.isFinite(value) ? String(value) : undefined;
  }
  if (kind === 'choice') {
    // Case-sensitive letter: "the answer is a liquid" must not read as option A.
    // A-J: MMLU-Pro has ten options.
    const stated = lastMatch(output, /\b[Aa]nswer(?:\s+is)?\s*:?\s*\(?([A-J])\)?(?![A-Za-z])/g);
    if (stated) return stated[1];
    const leading = /^\s*\(?([A-J])\)/.exec(output);
    if (leading) return leading[1];
    const lone = /^\s*\(?([A-J])\)?\s*\.?\s*$/.exec(output);
    return lone?.[1];
  }
  const stated = lastMatch(output, /the answer is\s*([^\n]*)/gi);
  const raw = (stated?.[1] ?? output).trim().replace(/\.$/, '');
  return raw.length > 0 ? normalize(raw) : undefined;
}

/**
 * Whether `output` answers correctly, against the record's reference `answer`.
 * @param output - the model's output.
 * @param answer - the reference answer.
 * @param kind - how to compare.
 * @returns true when the extracted answer equals the reference.
 * @example
 * ```ts
 * isCorrect('The answer is 1,200', '1200', 'numeric'); // true
 * ```
 */
export function isCorrect(output: string, answer: string, kind: AnswerKind): boolean {
  const got = extractAnswer(output, kind);
  if (got === undefined) return false;
  if (kind === 'numeric') return Number(got) === Number(answer.replace(/,/g, ''));
  if (kind === 'choice') return got === answer.trim().replace(LETTER_ANSWER, '$1').toUpperCase();
  return got === normalize(answer).replace(/\.$/, '');
}

/**
 * The text of option `letter` in a prompt's option block ("B) text" lines), if it has one.
 * @param input - a multiple-choice prompt.
 * @param letter - an option letter, A-J.
 * @returns the option's text, or undefined.
 * @example
 * ```ts
 * optionText('Which is a gas?\nA) ice\nB) steam', 'B'); // 'steam'
 * ```
 */
export function optionText(input: string, letter: string): string | undefined {
  const m = new RegExp(`^\\(?${letter}\\)\\s*(.+?)\\s*$`, 'm').exec(input);
  return m?.[1];
}

/**
 * Whether a multiple-choice prediction is right beyond its letter. Where the reference output states
 * the right option's text before its letter (the generated suites: "<fact>. Answer: B"), a
 * prediction counts only when it states that text too, so a guessed letter after a wrong fact (right
 * one time in four) does not score; elsewhere (a bare letter) the letter alone decides.
 */
function statesChosenOption(r: { input?: string; output?: string; answer: string }, prediction: string): boolean {
  if (r.input === undefined || r.output === undefined) return true;
  const letter = r.answer.trim().replace(LETTER_ANSWER, '$1').toUpperCase();
  const text = optionText(r.input, letter);
  if (!text) return true;
  const stated = (o: string) => o.toLowerCase().includes(text.toLowerCase());
  return !stated(r.output) || stated(prediction);
}

/**
 * Accuracy of predictions against old-task records, the answer kind taken from each record's format, or else its task name ({@link answerKindOf}).
 * A multiple-choice record whose reference states the right option's text before its letter needs
 * the prediction to state it too: the letter alone would score a guess.
 * @param records - records with task and answer (and optionally the format they were imported from, the input and the reference output).
 * @param predictions - one output per record.
 * @returns the share correct, from 0 to 1 (0 for no records).
 * @throws Error when the counts differ.
 * @example
 * ```ts
 * accuracy([{ task: 'science-mc', answer: 'C' }], ['The answer is C']); // 1
 * ```
 */
export function accuracy(records: readonly { task: string; answer: string; format?: string; input?: string; output?: string }[], predictions: readonly string[]): number {
  if (records.length !== predictions.length) throw new Error(`accuracy: ${records.length} records but ${predictions.length} predictions`);
  if (records.length === 0) return 0;
  let correct = 0;
  records.forEach((r, i) => {
    const p = predictions[i] as string;
    const kind = answerKindOf(r);
    if (isCorrect(p, r.answer, kind) && (kind !== 'choice' || statesChosenOption(r, p))) correct++;
  });
  return correct / records.length;
}

/**
 * Mean ROUGE-L and exact-match rate over new-task predictions.
 * @param references - the targets.
 * @param predictions - one output per target.
 * @returns the means, from 0 to 1 (0 for none).
 * @throws Error when the counts differ.
 * @example
 * ```ts
 * newTaskScores(['a b c'], ['a b c']); // { rougeL: 1, exactMatch: 1 }
 * ```
 */
export function newTaskScores(references: readonly string[], predictions: readonly string[]): { rougeL: number; exactMatch: number } {
  if (references.length !== predictions.length) throw new Error(`newTaskScores: ${references.length} references but ${predictions.length} predictions`);
  if (references.length === 0) return { rougeL: 0, exactMatch: 0 };
  let [r, e] = [0, 0];
  references.forEach((ref, i) => {
    r += rougeL(predictions[i] as string, ref);
    if (exactMatch(predictions[i] as string, ref)) e++;
  });
  return { rougeL: r / references.length, exactMatch: e / references.length };
}

// --- BLEU-4 (Papineni et al. 2002) on the same lowercased word tokens as ROUGE-L.

/** Clipped n-gram matches of a prediction against one reference, and the prediction's n-gram count. */
function ngramMatches(prediction: readonly string[], reference: readonly string[], n: number): { matched: number; total: number } {
  const counts = (tokens: readonly string[]): Map<string, number> => {
    const m = new Map<string, number>();
    for (let i = 0; i + n <= tokens.length; i++) {
      const gram = tokens.slice(i, i + n).join('\u0000');
      m.set(gram, (m.get(gram) ?? 0) + 1);
    }
    return m;
  };
  const [p, r] = [counts(prediction), counts(reference)];
  let matched = 0;
  for (const [gram, c] of p) matched += Math.min(c, r.get(gram) ?? 0);
  return { matched, total: Math.max(prediction.length - n + 1, 0) };
}

const brevityPenalty = (predicted: number, reference: number): number => (predicted > reference ? 1 : Math.exp(1 - reference / predicted));

/**
 * Corpus-level BLEU-4 in [0, 1]: n-gram matches (n = 1..4, clipped by the reference's counts)
 * summed over all pairs, the geometric mean of the four precisions with equal weights, times the
 * brevity penalty exp(1 - r/c) of the total lengths when the predictions are shorter. No smoothing:
 * a corpus without a single matching 4-gram scores 0. Empty predictions and references score 1.
 * This is the BLEU `jfa eval` reports.
 * @param predictions - the model's outputs.
 * @param references - one target per prediction.
 * @returns the corpus BLEU-4, from 0 to 1.
 * @throws Error when the counts differ.
 * @example
 * ```ts
 * corpusBleu(['the cat sat on the mat'], ['the cat sat on the mat']); // 1
 * corpusBleu(['the cat sat on a mat'], ['the cat sat on the mat']); // 0.537...
 * ```
 */
export function corpusBleu(predictions: readonly string[], references: readonly string[]): number {
  if (references.length !== predictions.length) throw new Error(`corpusBleu: ${references.length} references but ${predictions.length} predictions`);
  const matched = [0, 0, 0, 0];
  const total = [0, 0, 0, 0];
  let [c, r] = [0, 0];
  predictions.forEach((prediction, i) => {
    const [p, ref] = [tokenize(prediction), tokenize(references[i] as string)];
    c += p.length;
    r += ref.length;
    for (let n = 1; n <= 4; n++) {
      const m = ngramMatches(p, ref, n);
      matched[n - 1]! += m.matched;
      total[n - 1]! += m.total;
    }
  });
  if (c === 0) return r === 0 ? 1 : 0;
  if (matched.some((m) => m === 0)) return 0;
  const logMean = matched.reduce((acc, m, i) => acc + Math.log(m / total[i]!), 0) / 4;
  return brevityPenalty(c, r) * Math.exp(logMean);
}

/**
 * Sentence-level BLEU-4 in [0, 1], smoothed as BLEU+1 (Lin and Och 2004): 1 is added to the
 * matches and the count of 2-, 3- and 4-grams (unigrams unsmoothed), so short outputs with some
 * overlap do not score 0; brevity penalty as in {@link corpusBleu}. An empty prediction scores 0
 * (1 when the reference is empty too).
 * @param prediction - the model's output.
 * @param reference - the target.
 * @returns the smoothed BLEU-4, from 0 to 1.
 * @example
 * ```ts
 * sentenceBleu('the cat sat', 'the cat sat on the mat'); // 0.367...
 * ```
 */
export function sentenceBleu(prediction: string, reference: string): number {
  const [p, r] = [tokenize(prediction), tokenize(reference)];
  if (p.length === 0) return r.length === 0 ? 1 : 0;
  let logSum = 0;
  for (let n = 1; n <= 4; n++) {
    const m = ngramMatches(p, r, n);
    const precision = n === 1 ? m.matched / m.total : (m.matched + 1) / (m.total + 1);
    if (precision === 0) return 0;
    logSum += Math.log(precision);
  }
  return brevityPenalty(p.length, r.length) * Math.exp(logSum / 4);
}

/** One group of {@link autoScores}: the records of one format, scored as that format is. */
export interface FormatScores {
  /** The format name, or 'unlabeled' for records without one. */
  format: string;
  /** How many records the group has. */
  records: number;
  /** Scored by answer: the fraction correct. */
  accuracy?: number;
  /** Scored as text: the mean ROUGE-L F1. */
  rougeL?: number;
  /** Scored as text: the corpus BLEU-4 ({@link corpusBleu}). */
  bleu?: number;
  /** Scored as text: the fraction of exact matches (ignoring case and whitespace runs). */
  exactMatch?: number;
}

/**
 * Scores predictions per format, each with its paper's metric: accuracy by exact numeric answer
 * (gsm8k, svamp), by option letter (arc, mmlu-pro, bbh; bbh answers that are not letters by exact
 * match), ROUGE-L and BLEU-4 (superni, chat). A record's format is `formatHint` when given, else
 * its `format` field; records with neither are scored by answer when they all have one (kind by
 * task name), else as text. Groups come in order of first appearance.
 * @param records - the records scored, with their outputs as references (and `answer` where scored by answer).
 * @param predictions - one output per record.
 * @param formatHint - a format of {@link FORMAT_SCORING} that every record is scored as, instead of its own.
 * @returns one score group per format: `accuracy` for formats scored by answer, else `rougeL`, `bleu` and `exactMatch`.
 * @throws Error when the counts differ, a format scored by answer has a record without `answer`, or the hint is unknown.
 * @example
 * ```ts
 * const records = readJsonl('eval-mixed.jsonl', 'instance');
 * const { predictions } = await evaluateNew(model, tokenizer, records);
 * for (const s of autoScores(records, predictions)) console.log(s.format, s.accuracy ?? s.rougeL);
 * ```
 */
export function autoScores(records: readonly InstanceRecord[], predictions: readonly string[], formatHint?: string): FormatScores[] {
  if (records.length !== predictions.length) throw new Error(`autoScores: ${records.length} records but ${predictions.length} predictions`);
  if (formatHint !== undefined && !(formatHint in FORMAT_SCORING)) throw new Error(`unknown format '${formatHint}' (known: ${Object.keys(FORMAT_SCORING).join(', ')})`);
  const groups = new Map<string, number[]>();
  records.forEach((r, i) => {
    const format = formatHint ?? r.format ?? 'unlabeled';
    groups.set(format, [...(groups.get(format) ?? []), i]);
  });
  return [...groups].map(([format, indices]) => {
    const rs = indices.map((i) => (formatHint !== undefined ? { ...records[i]!, format: formatHint } : records[i]!));
    const ps = indices.map((i) => predictions[i] as string);
    const scoring = (FORMAT_SCORING as Record<string, string>)[format];
    const byAnswer = scoring === undefined ? rs.every((r) => r.answer !== undefined) : scoring !== 'text';
    if (!byAnswer) {
      const text = newTaskScores(rs.map((r) => r.output), ps);
      return { format, records: rs.length, rougeL: text.rougeL, bleu: corpusBleu(ps, rs.map((r) => r.output)), exactMatch: text.exactMatch };
    }
    const missing = rs.findIndex((r) => r.answer === undefined);
    if (missing >= 0) throw new Error(`record ${indices[missing]! + 1} (format ${format}) has no 'answer': ${format} is scored by its answer`);
    return { format, records: rs.length, accuracy: accuracy(rs as { task: string; answer: string; format?: string }[], ps) };
  });
}
