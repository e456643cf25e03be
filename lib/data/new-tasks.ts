// New instruction tasks in the role of Super-NaturalInstructions: families of templated rules,
// each family x parameters giving one task whose instruction states the rule in words.
import { createRng, hashString, type Rng } from './rng.js';
import type { InstanceRecord } from './records.js';

/** A generated new task: a rule stated in words, and a generator of its instances. */
export interface NewTask {
  /** Unique name, e.g. "rotate-left-3". */
  name: string;
  /** the family of rules it belongs to, e.g. "rotate-left" */
  family: string;
  /** the rule, in words */
  instruction: string;
  /**
   * One instance of the task.
   * @param rng - the generator to draw from.
   * @returns an input and its output.
   */
  make(rng: Rng): { input: string; output: string };
}

const WORDS = ['apple', 'river', 'stone', 'cloud', 'tiger', 'lamp', 'garden', 'orange', 'bridge', 'pencil', 'window', 'forest',
  'candle', 'rocket', 'silver', 'honey', 'market', 'planet', 'violin', 'ladder', 'basket', 'island', 'mirror', 'desert',
  'kitten', 'jacket', 'anchor', 'button', 'engine', 'pepper', 'saddle', 'tunnel', 'wagon', 'yellow', 'zebra', 'echo',
  'ink', 'oak', 'umbrella', 'quilt', 'nest', 'fox', 'dune', 'harp', 'ivy', 'jewel', 'kite', 'moss'];
const ALPHABET = 'abcdefghijklmnopqrstuvwxyz'.split('');
const VOWELS = new Set(['a', 'e', 'i', 'o', 'u']);

const words = (r: Rng, lo = 4, hi = 8): string[] => Array.from({ length: r.int(lo, hi) }, () => r.pick(WORDS));
const numbers = (r: Rng, lo = 4, hi = 9, max = 99): number[] => Array.from({ length: r.int(lo, hi) }, () => r.int(0, max));
const list = (xs: readonly (string | number)[]): string => xs.join(', ');
/** Lists for tasks that are about a letter: make sure some items contain it, so outputs are rarely empty. */
const wordsWith = (r: Rng, c: string): string[] => {
  const ws = words(r);
  const having = WORDS.filter((w) => w.includes(c));
  if (having.length > 0) ws[r.int(0, ws.length - 1)] = r.pick(having);
  return ws;
};

function task(family: string, name: string, instruction: string, make: (r: Rng) => { input: string; output: string }): NewTask {
  return { family, name, instruction, make };
}

function wordListTask(family: string, name: string, instruction: string, f: (ws: string[]) => string, gen: (r: Rng) => string[] = (r) => words(r)): NewTask {
  return task(family, name, instruction, (r) => { const ws = gen(r); return { input: list(ws), output: f(ws) }; });
}

function numberListTask(family: string, name: string, instruction: string, f: (xs: number[]) => string, gen: (r: Rng) => number[] = (r) => numbers(r)): NewTask {
  return task(family, name, instruction, (r) => { const xs = gen(r); return { input: list(xs), output: f(xs) }; });
}

const range = (lo: number, hi: number, step = 1): number[] => Array.from({ length: Math.floor((hi - lo) / step) + 1 }, (_, i) => lo + i * step);
const ordinal = (k: number): string => `${k}${k % 100 >= 11 && k % 100 <= 13 ? 'th' : ['th', 'st', 'nd', 'rd'][k % 10] ?? 'th'}`;
const rotate = <T>(xs: T[], k: number): T[] => { const s = ((k % xs.length) + xs.length) % xs.length; return [...xs.slice(s), ...xs.slice(0, s)]; };
const caesar = (w: string, k: number): string => w.replace(/[a-z]/g, (c) => String.fromCharCode(((c.charCodeAt(0) - 97 + k) % 26) + 97));
const title = (w: string): string => w.charAt(0).toUpperCase() + w.slice(1);
const orNone = (xs: readonly (string | number)[]): string => (xs.length === 0 ? 'none' : list(xs));

function sequenceFamilies(): NewTask[] {
  const out: NewTask[] = [];
  for (const k of range(1, 9)) {
    out.push(wordListTask('rotate', `rotate-left-${k}`, `Rotate the comma-separated list left by ${k} position${k > 1 ? 's' : ''}: move the first ${k} item${k > 1 ? 's' : ''} to the end, cyclically.`, (ws) => list(rotate(ws, k))));
    out.push(wordListTask('rotate', `rotate-right-${k}`, `Rotate the comma-separated list right by ${k} position${k > 1 ? 's' : ''}: move the last ${k} item${k > 1 ? 's' : ''} to the front, cyclically.`, (ws) => list(rotate(ws, -k))));
  }
  out.push(wordListTask('reverse', 'reverse-list', 'Reverse the order of the items in the list.', (ws) => list([...ws].reverse())));
  out.push(wordListTask('reverse', 'reverse-each-word', 'Reverse the letters of every word, keeping the word order.', (ws) => list(ws.map((w) => [...w].reverse().join('')))));
  out.push(wordListTask('reverse', 'reverse-string', 'Write the whole input backwards, character by character.', (ws) => [...list(ws)].reverse().join('')));
  out.push(wordListTask('sort', 'sort-alpha', 'Sort the words alphabetically.', (ws) => list([...ws].sort())));
  out.push(wordListTask('sort', 'sort-alpha-desc', 'Sort the words in reverse alphabetical order.', (ws) => list([...ws].sort().reverse())));
  out.push(wordListTask('sort', 'sort-length', 'Sort the words by length, shortest first; keep the input order between words of equal length.', (ws) => list([...ws].sort((a, b) => a.length - b.length))));
  out.push(numberListTask('sort', 'sort-numbers-asc', 'Sort the numbers in ascending order.', (xs) => list([...xs].sort((a, b) => a - b))));
  out.push(numberListTask('sort', 'sort-numbers-desc', 'Sort the numbers in descending order.', (xs) => list([...xs].sort((a, b) => b - a))));
  out.push(wordListTask('dedupe', 'dedupe-first', 'Remove repeated words, keeping the first occurrence of each.', (ws) => list([...new Set(ws)]), (r) => words(r, 6, 10).map((w, i, a) => (i > 0 && r.next() < 0.3 ? (a[r.int(0, i - 1)] as string) : w))));
  out.push(numberListTask('dedupe', 'dedupe-numbers', 'Remove repeated numbers, keeping the first occurrence of each.', (xs) => list([...new Set(xs)]), (r) => numbers(r, 6, 10, 12)));
  for (const k of range(1, 8)) {
    out.push(wordListTask('kth', `kth-item-${k}`, `Return the ${ordinal(k)} item of the list.`, (ws) => ws[k - 1] as string, (r) => words(r, 8, 10)));
    out.push(wordListTask('kth', `kth-from-end-${k}`, `Return the ${ordinal(k)} item counting from the end of the list.`, (ws) => ws[ws.length - k] as string, (r) => words(r, 8, 10)));
    out.push(wordListTask('slice', `first-${k}-items`, `Return only the first ${k} item${k > 1 ? 's' : ''} of the list.`, (ws) => list(ws.slice(0, k)), (r) => words(r, 8, 10)));
    out.push(wordListTask('slice', `last-${k}-items`, `Return only the last ${k} item${k > 1 ? 's' : ''} of the list.`, (ws) => list(ws.slice(-k)), (r) => words(r, 8, 10)));
  }
  return out;
}

function letterFamilies(): NewTask[] {
  const out: NewTask[] = [];
  for (const c of ALPHABET) {
    const gen = (r: Rng): string[] => wordsWith(r, c);
    out.push(wordListTask('count-letter', `count-letter-${c}`, `Count how many times the letter '${c}' occurs in the whole input. Answer with a number.`, (ws) => String(ws.join('').split(c).length - 1), gen));
    out.push(wordListTask('filter-start', `words-starting-${c}`, `List the words that start with the letter '${c}', in order; answer 'none' if there are none.`, (ws) => orNone(ws.filter((w) => w.startsWith(c))), (r) => { const ws = words(r); const s = WORDS.filter((w) => w.startsWith(c)); if (s.length > 0) ws[0] = r.pick(s); return r.shuffle(ws); }));
    out.push(wordListTask('filter-contain', `words-containing-${c}`, `List the words that contain the letter '${c}', in order; answer 'none' if there are none.`, (ws) => orNone(ws.filter((w) => w.includes(c))), gen));
    out.push(wordListTask('filter-contain', `words-without-${c}`, `List the words that do not contain the letter '${c}', in order; answer 'none' if there are none.`, (ws) => orNone(ws.filter((w) => !w.includes(c))), gen));
    out.push(wordListTask('remove-letter', `remove-letter-${c}`, `Delete every letter '${c}' from each word.`, (ws) => list(ws.map((w) => w.split(c).join(''))), gen));
    for (const shift of [1, 2, 13]) {
      const to = ALPHABET[(ALPHABET.indexOf(c) + shift) % 26] as string;
      out.push(wordListTask('replace-letter', `replace-${c}-with-${to}`, `Replace every letter '${c}' with '${to}'.`, (ws) => list(ws.map((w) => w.split(c).join(to))), gen));
    }
    out.push(wordListTask('filter-end', `words-ending-${c}`, `List the words that end with the letter '${c}', in order; answer 'none' if there are none.`, (ws) => orNone(ws.filter((w) => w.endsWith(c))), gen));
    out.push(wordListTask('count-letter', `count-letter-${c}-per-word`, `For each word, write how many times the letter '${c}' occurs in it, as a comma-separated list of numbers.`, (ws) => list(ws.map((w) => w.split(c).length - 1)), gen));
    out.push(task('classify-letter', `starts-with-${c}`, `Answer 'true' if the word starts with the letter '${c}', otherwise 'false'.`, (r) => { const w = r.pick(r.next() < 0.5 ? WORDS.filter((x) => x.startsWith(c)).concat(WORDS.slice(0, 1)) : WORDS); return { input: w, output: w.startsWith(c) ? 'true' : 'false' }; }));
    const [yes, no] = c < 'n' ? ['yes', 'no'] : ['present', 'absent'];
    out.push(task('classify-letter', `has-letter-${c}`, `Answer '${yes}' if the word contains the letter '${c}', otherwise '${no}'.`, (r) => { const w = r.next() < 0.5 ? r.pick(WORDS.filter((x) => x.includes(c)).concat(WORDS.slice(0, 1))) : r.pick(WORDS); return { input: w, output: w.includes(c) ? yes : no }; }));
  }
  for (const k of range(1, 25)) {
    out.push(wordListTask('caesar', `caesar-${k}`, `Shift every letter ${k} place${k > 1 ? 's' : ''} forward in the alphabet, wrapping from z to a.`, (ws) => list(ws.map((w) => caesar(w, k)))));
  }
  for (const n of range(1, 5)) {
    out.push(wordListTask('prefix', `first-${n}-letters`, `Keep only the first ${n} letter${n > 1 ? 's' : ''} of every word.`, (ws) => list(ws.map((w) => w.slice(0, n)))));
    out.push(wordListTask('prefix', `last-${n}-letters`, `Keep only the last ${n} letter${n > 1 ? 's' : ''} of every word.`, (ws) => list(ws.map((w) => w.slice(-n)))));
  }
  for (const k of range(1, 6)) {
    out.push(wordListTask('swap', `swap-${k}-${k + 1}`, `Swap the ${ordinal(k)} and ${ordinal(k + 1)} items of the list and keep the rest in place.`, (ws) => { const c = [...ws]; [c[k - 1], c[k]] = [c[k] as string, c[k - 1] as string]; return list(c); }, (r) => words(r, 7, 9)));
  }
  for (const len of range(3, 8)) {
    for (const [long, short] of [['long', 'short'], ['yes', 'no'], ['1', '0'], ['big', 'small']] as const) {
      out.push(task('classify-length', `length-over-${len}-${long}-${short}`, `Answer '${long}' if the word has more than ${len} letters, otherwise '${short}'.`, (r) => { const w = r.pick(WORDS); return { input: w, output: w.length > len ? long : short }; }));
    }
  }
  for (const len of range(2, 8)) {
    out.push(wordListTask('length', `words-of-length-${len}`, `List the words with exactly ${len} letters, in order; answer 'none' if there are none.`, (ws) => orNone(ws.filter((w) => w.length === len))));
    out.push(wordListTask('length', `words-longer-than-${len}`, `List the words with more than ${len} letters, in order; answer 'none' if there are none.`, (ws) => orNone(ws.filter((w) => w.length > len))));
  }
  out.push(wordListTask('count', 'count-vowels', 'Count the vowels (a, e, i, o, u) in the whole input. Answer with a number.', (ws) => String([...ws.join('')].filter((ch) => VOWELS.has(ch)).length)));
  out.push(wordListTask('count', 'count-consonants', 'Count the consonants (letters other than a, e, i, o, u) in the whole input. Answer with a number.', (ws) => String([...ws.join('')].filter((ch) => !VOWELS.has(ch)).length)));
  out.push(wordListTask('count', 'count-words', 'Count the words in the list. Answer with a number.', (ws) => String(ws.length)));
  out.push(wordListTask('count', 'count-distinct-words', 'Count the distinct words in the list. Answer with a number.', (ws) => String(new Set(ws).size), (r) => words(r, 6, 10).map((w, i, a) => (i > 0 && r.next() < 0.3 ? (a[0] as string) : w))));
  return out;
}

function numberFamilies(): NewTask[] {
  const out: NewTask[] = [];
  for (const k of range(1, 60)) out.push(numberListTask('add', `add-${k}`, `Add ${k} to every number.`, (xs) => list(xs.map((x) => x + k))));
  for (const k of range(1, 20)) out.push(numberListTask('subtract', `subtract-${k}`, `Subtract ${k} from every number.`, (xs) => list(xs.map((x) => x - k))));
  for (const k of range(2, 15)) out.push(numberListTask('multiply', `multiply-${k}`, `Multiply every number by ${k}.`, (xs) => list(xs.map((x) => x * k)), (r) => numbers(r, 4, 8, 30)));
  for (const t of range(5, 95, 5)) out.push(numberListTask('count-threshold', `count-greater-than-${t}`, `Count the numbers greater than ${t}. Answer with a number.`, (xs) => String(xs.filter((x) => x > t).length)));
  for (const d of range(2, 12)) out.push(numberListTask('count-divisible', `count-divisible-by-${d}`, `Count the numbers divisible by ${d}. Answer with a number.`, (xs) => String(xs.filter((x) => x % d === 0).length)));
  for (const m of range(2, 15)) out.push(numberListTask('modulo', `mod-${m}`, `Replace every number by its remainder after division by ${m}.`, (xs) => list(xs.map((x) => x % m))));
  for (const d of range(2, 12)) out.push(numberListTask('filter-divisible', `divisible-by-${d}`, `List the numbers divisible by ${d}, in order; answer 'none' if there are none.`, (xs) => orNone(xs.filter((x) => x % d === 0))));
  for (const t of range(5, 95, 5)) {
    out.push(numberListTask('filter-threshold', `greater-than-${t}`, `List the numbers greater than ${t}, in order; answer 'none' if there are none.`, (xs) => orNone(xs.filter((x) => x > t))));
    out.push(numberListTask('filter-threshold', `less-than-${t}`, `List the numbers less than ${t}, in order; answer 'none' if there are none.`, (xs) => orNone(xs.filter((x) => x < t))));
  }
  const labelPairs = [['high', 'low'], ['big', 'small'], ['pass', 'fail'], ['yes', 'no']] as const;
  for (const t of range(100, 500, 25)) {
    for (const [hi, lo] of labelPairs) {
      out.push(numberListTask('classify-sum', `sum-over-${t}-${hi}-${lo}`, `Label the list '${hi}' if the sum of its numbers is greater than ${t}, otherwise '${lo}'.`, (xs) => (xs.reduce((a, b) => a + b, 0) > t ? hi : lo)));
    }
  }
  for (const [even, odd] of [['even', 'odd'], ['A', 'B'], ['yes', 'no'], ['0', '1']] as const) {
    out.push(numberListTask('classify-parity', `sum-parity-${even}-${odd}`, `Label the list '${even}' if the sum of its numbers is even, otherwise '${odd}'.`, (xs) => (xs.reduce((a, b) => a + b, 0) % 2 === 0 ? even : odd)));
    out.push(numberListTask('classify-parity', `count-parity-${even}-${odd}`, `Label the list '${even}' if it has an even count of odd numbers, otherwise '${odd}'.`, (xs) => (xs.filter((x) => x % 2 === 1).length % 2 === 0 ? even : odd)));
  }
  out.push(numberListTask('aggregate', 'sum', 'Return the sum of the numbers.', (xs) => String(xs.reduce((a, b) => a + b, 0))));
  out.push(numberListTask('aggregate', 'max', 'Return the largest number.', (xs) => String(Math.max(...xs))));
  out.push(numberListTask('aggregate', 'min', 'Return the smallest number.', (xs) => String(Math.min(...xs))));
  out.push(numberListTask('aggregate', 'range', 'Return the largest number minus the smallest number.', (xs) => String(Math.max(...xs) - Math.min(...xs))));
  out.push(task('extract-numbers', 'extract-numbers', 'Extract all the numbers from the sentence, in order, separated by commas.', (r) => {
    const parts = words(r, 4, 7).map((w) => (r.next() < 0.4 ? String(r.int(0, 999)) : w));
    const nums = parts.filter((p) => /^\d+$/.test(p));
    return { input: parts.join(' '), output: orNone(nums) };
  }));
  return out;
}

function formatFamilies(): NewTask[] {
  const out: NewTask[] = [];
  const seps = [['semicolons', '; '], ['pipes', ' | '], ['slashes', ' / '], ['spaces', ' '], ['dashes', ' - '], ['plus signs', ' + ']] as const;
  for (const [label, sep] of seps) out.push(wordListTask('join', `join-${label.replace(' ', '-')}`, `Rewrite the comma-separated list with the items separated by ${label} instead.`, (ws) => ws.join(sep)));
  out.push(wordListTask('format', 'to-json-array', 'Rewrite the list as a JSON array of strings.', (ws) => JSON.stringify(ws)));
  out.push(wordListTask('format', 'to-csv-quoted', 'Rewrite the list as one CSV row with every item in double quotes.', (ws) => ws.map((w) => `"${w}"`).join(',')));
  out.push(wordListTask('format', 'to-numbered', 'Rewrite the list as numbered lines "1. item".', (ws) => ws.map((w, i) => `${i + 1}. ${w}`).join('\n')));
  out.push(wordListTask('format', 'to-key-value', 'Rewrite the list as "position=item" pairs separated by spaces, counting from 1.', (ws) => ws.map((w, i) => `${i + 1}=${w}`).join(' ')));
  out.push(wordListTask('case', 'uppercase', 'Convert every word to uppercase.', (ws) => list(ws.map((w) => w.toUpperCase()))));
  out.push(wordListTask('case', 'title-case', 'Capitalise the first letter of every word.', (ws) => list(ws.map(title))));
  out.push(wordListTask('case', 'alternate-case', 'Write every other word in uppercase, starting with the first.', (ws) => list(ws.map((w, i) => (i % 2 === 0 ? w.toUpperCase() : w)))));
  out.push(task('case', 'lowercase', 'Convert every word to lowercase.', (r) => { const ws = words(r).map((w) => (r.next() < 0.5 ? w.toUpperCase() : title(w))); return { input: list(ws), output: list(ws.map((w) => w.toLowerCase())) }; }));
  const brackets = [['square brackets', '[', ']'], ['parentheses', '(', ')'], ['angle brackets', '<', '>'], ['braces', '{', '}'], ['asterisks', '*', '*'], ['underscores', '_', '_']] as const;
  for (const [label, open, close] of brackets) out.push(wordListTask('wrap', `wrap-${label.replace(' ', '-')}`, `Wrap every word in ${label}.`, (ws) => list(ws.map((w) => `${open}${w}${close}`))));
  for (const affix of ['ly', 'ing', 'er', 'ness', 'ful', 'pre', 'un', 're', 'anti', 'co']) {
    const isPrefix = ['pre', 'un', 're', 'anti', 'co'].includes(affix);
    out.push(wordListTask('affix', `${isPrefix ? 'prefix' : 'suffix'}-${affix}`, `Add the ${isPrefix ? 'prefix' : 'suffix'} '${affix}' to every word.`, (ws) => list(ws.map((w) => (isPrefix ? affix + w : w + affix)))));
  }
  for (const n of range(2, 4)) out.push(wordListTask('repeat', `repeat-${n}`, `Repeat every word ${n} times, joined without spaces.`, (ws) => list(ws.map((w) => w.repeat(n)))));
  return out;
}

/** Made-up languages: a dictionary for 10 English words per language, stated in the instruction. */
function translationFamilies(languages: number): NewTask[] {
  const out: NewTask[] = [];
  const syll = ['ba', 'ko', 'ri', 'te', 'mu', 'sa', 'ne', 'lo', 'vi', 'da', 'zu', 'pe', 'gha', 'tor', 'ek'];
  for (let l = 0; l < languages; l++) {
    const r = createRng(hashString(`lang-${l}`));
    const src = r.sample(WORDS, 10);
    const dst: string[] = [];
    while (dst.length < src.length) {
      const w = r.pick(syll) + r.pick(syll) + (r.next() < 0.5 ? r.pick(syll) : '');
      if (!dst.includes(w)) dst.push(w);
    }
    const lang = `Lang${l + 1}`;
    const dict = src.map((s, i) => `${s}=${dst[i]}`).join(', ');
    const fwd = new Map(src.map((s, i) => [s, dst[i] as string]));
    const back = new Map(dst.map((d, i) => [d, src[i] as string]));
    out.push(task('translate', `translate-en-${lang.toLowerCase()}`, `Translate each English word into ${lang} with this dictionary: ${dict}.`, (rr) => { const ws = Array.from({ length: rr.int(3, 6) }, () => rr.pick(src)); return { input: ws.join(' '), output: ws.map((w) => fwd.get(w)).join(' ') }; }));
    out.push(task('translate', `translate-${lang.toLowerCase()}-en`, `Translate each ${lang} word into English with this dictionary (English=${lang}): ${dict}.`, (rr) => { const ws = Array.from({ length: rr.int(3, 6) }, () => rr.pick(dst)); return { input: ws.join(' '), output: ws.map((w) => back.get(w)).join(' ') }; }));
  }
  return out;
}

/**
 * All new tasks, in a fixed order; the task set does not depend on the suite seed.
 * @returns the tasks.
 * @example
 * ```ts
 * const { train, test } = splitTasks(newTasks());
 * ```
 */
export function newTasks(): NewTask[] {
  return [...sequenceFamilies(), ...letterFamilies(), ...numberFamilies(), ...formatFamilies(), ...translationFamilies(150)];
}

let familyByTask: Map<string, string> | undefined;

/**
 * The family of a generated new task, by the task's name.
 * @param task - a task name, as on {@link InstanceRecord.task}.
 * @returns its family, or undefined for a name {@link newTasks} does not make (user data).
 * @example
 * ```ts
 * taskFamily('rotate-left-3'); // 'rotate'
 * ```
 */
export function taskFamily(task: string): string | undefined {
  familyByTask ??= new Map(newTasks().map((t) => [t.name, t.family]));
  return familyByTask.get(task);
}

/**
 * Families whose every task is held out, so the test set has kinds of rule never seen in training.
 * Each is a new combination of skills the training families teach (wrapping words in symbols,
 * moving two items, labelling by a stated rule), so a model that learned those can do them from
 * the instruction alone; a rule with nothing to build on (e.g. caesar shifts) measures nothing.
 */
export const HELD_OUT_FAMILIES: readonly string[] = ['wrap', 'swap', 'classify-parity'];

/**
 * Deterministic split by task name: held-out families entirely, plus about 8% of the other tasks
 * (chosen by hash, so adding a task never moves another between train and test).
 * @param tasks - the tasks to split.
 * @param salt - changes which non-held-out tasks are tested (default 0).
 * @returns the training and the held-out tasks.
 * @example
 * ```ts
 * const { test } = splitTasks(newTasks(), 1);
 * ```
 */
export function splitTasks(tasks: readonly NewTask[], salt = 0): { train: NewTask[]; test: NewTask[] } {
  const isTest = (t: NewTask): boolean => HELD_OUT_FAMILIES.includes(t.family) || hashString(`${salt}:${t.name}`) % 100 < 8;
  return { train: tasks.filter((t) => !isTest(t)), test: tasks.filter(isTest) };
}

/**
 * `n` instances of a task; inputs repeat at most when the task has few distinct inputs.
 * @param t - the task.
 * @param rng - the generator to draw from.
 * @param n - how many.
 * @returns the records (fewer than n only if the task cannot make that many within its tries).
 * @example
 * ```ts
 * const records = instances(newTasks()[0]!, createRng(1), 20);
 * ```
 */
export function instances(t: NewTask, rng: Rng, n: number): InstanceRecord[] {
  const out: InstanceRecord[] = [];
  const seen = new Set<string>();
  for (let tries = 0; out.length < n && tries < n * 20; tries++) {
    const { input, output } = t.make(rng);
    if (seen.has(input) && tries < n * 10) continue;
    seen.add(input);
    out.push({ task: t.name, instruction: t.instruction, input, output });
  }
  return out;
}
