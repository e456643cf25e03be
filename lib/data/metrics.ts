// Scores for the benchmark: ROUGE-L and exact match for new tasks (the paper's ROUGE-L), answer
// extraction + accuracy for old tasks (the paper's accuracy on GSM8K/SVAMP/ARC/MMLU-Pro/BBH).

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
    const stated = lastMatch(output, /\b[Aa]nswer(?:\s+is)?\s*:?\s*\(?([A-F])\)?(?![A-Za-z])/g);
    if (stated) return stated[1];
    const leading = /^\s*\(?([A-F])\)/.exec(output);
    if (leading) return leading[1];
    const lone = /^\s*\(?([A-F])\)?\s*\.?\s*$/.exec(output);
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
  if (kind === 'choice') return got === answer.trim().toUpperCase();
  return got === normalize(answer).replace(/\.$/, '');
}

/**
 * Accuracy of predictions against old-task records, the answer kind taken from each task name.
 * @param records - records with task and answer.
 * @param predictions - one output per record.
 * @returns the share correct, from 0 to 1 (0 for no records).
 * @throws Error when the counts differ.
 * @example
 * ```ts
 * accuracy([{ task: 'science-mc', answer: 'C' }], ['The answer is C']); // 1
 * ```
 */
export function accuracy(records: readonly { task: string; answer: string }[], predictions: readonly string[]): number {
  if (records.length !== predictions.length) throw new Error(`accuracy: ${records.length} records but ${predictions.length} predictions`);
  if (records.length === 0) return 0;
  let correct = 0;
  records.forEach((r, i) => { if (isCorrect(predictions[i] as string, r.answer, answerKind(r.task))) correct++; });
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
