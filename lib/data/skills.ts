// General instruction-following skills for pretraining the demo's base model: the competence an
// instruction-tuned model has before it meets new tasks (copy, spell, look up, pick, count, answer
// in a stated format). LoRA adapts what a base can already do, so without these a small base has
// nothing for the new tasks to build on. The families and their instructions are distinct from the
// new tasks' (new-tasks.ts): a new task, held out or not, is never trained here as a task.
import type { InstanceRecord } from './records.js';
import type { Rng } from './rng.js';

// Word and number pools shared with the new tasks' vocabulary on purpose: the skills are about
// the same material, so the new tasks can reuse them.
const NOUNS = ['apple', 'river', 'stone', 'cloud', 'tiger', 'lamp', 'garden', 'orange', 'bridge', 'pencil', 'window', 'forest',
  'candle', 'rocket', 'silver', 'honey', 'market', 'planet', 'violin', 'ladder', 'basket', 'island', 'mirror', 'desert',
  'kitten', 'jacket', 'anchor', 'button', 'engine', 'pepper', 'saddle', 'tunnel', 'wagon', 'yellow', 'zebra', 'echo',
  'ink', 'oak', 'umbrella', 'quilt', 'nest', 'fox', 'dune', 'harp', 'ivy', 'jewel', 'kite', 'moss',
  'table', 'horse', 'paper', 'music', 'water', 'bread', 'train', 'sugar', 'chair', 'storm', 'cotton', 'lemon'];
const CODES = ['red', 'blue', 'green', 'gold', 'gray', 'pink', 'teal', 'navy', 'lime', 'plum', 'rust', 'sand'];
const LETTERS = ['A', 'B', 'C', 'D', 'E', 'F'];
const ORD = ['first', 'second', 'third', 'fourth', 'fifth', 'sixth', 'seventh', 'eighth'];

type Skill = (r: Rng) => { instruction: string; input: string; output: string };

/**
 * A lookup table of `lo..hi` distinct keys with distinct values, and the record that asks for some
 * of them. The answer starts with `Values:` so that its first key is the same token as in the table
 * (a word after a newline is another token than the word after a space).
 */
function lookupTable(r: Rng, lo: number, hi: number, pools: { keys: (n: number) => string[]; values: (n: number) => string[] } = { keys: (n) => r.sample(NOUNS, n), values: (n) => r.sample(CODES, n) }) {
  const keys = pools.keys(r.int(lo, hi));
  const values = pools.values(keys.length);
  const pair = (i: number): string => `${keys[i]} ${values[i]}`;
  return {
    keys,
    record: (asked: number[]) => ({
      instruction: 'Look up each key in the table and write it with its value.',
      input: `Table: ${keys.map((_, i) => pair(i)).join('; ')}. Keys: ${asked.map((i) => keys[i]).join(' ')}`,
      output: `Values: ${asked.map(pair).join('; ')}`,
    }),
  };
}

const words = (r: Rng, lo: number, hi: number): string[] => Array.from({ length: r.int(lo, hi) }, () => r.pick(NOUNS));

// Coined words: made-up strings of one to three syllables, which the tokenizer cuts into pieces that
// no real word of the pools gives. Copying and looking them up teaches the in-context skills on any
// tokens, not only on the pool's words (a skill learned on the pool alone did not carry over to
// made-up words: docs/demo.md).
const ONSETS = ['b', 'd', 'f', 'g', 'h', 'k', 'l', 'm', 'n', 'p', 'r', 's', 't', 'v', 'z', 'ch', 'sh', 'tr', 'gr', 'pl', 'kw', 'gh'];
const NUCLEI = ['a', 'e', 'i', 'o', 'u', 'ai', 'ou', 'ee'];
const CODAS = ['', '', '', 'n', 'r', 's', 'k', 'l', 'm'];
const cap = (w: string): string => w.charAt(0).toUpperCase() + w.slice(1);
const coined = (r: Rng): string => Array.from({ length: r.int(1, 3) }, () => r.pick(ONSETS) + r.pick(NUCLEI) + r.pick(CODAS)).join('');
/** `n` distinct coined words. */
function coinedWords(r: Rng, n: number): string[] {
  const out = new Set<string>();
  while (out.size < n) out.add(coined(r));
  return [...out];
}
/**
 * A multiple-choice record with its fact given: the fact, the question, the lettered options; the
 * answer restates the fact, then the letter of the option `named`.
 */
function optionRecord(options: string[], named: string, fact: string, asked: string): ReturnType<Skill> {
  const block = options.map((o, i) => `${LETTERS[i]}) ${o}`).join('\n');
  return {
    instruction: "Read the fact and answer. State the fact, then 'Answer: X' with the letter of the option.",
    input: `Fact: ${fact}.\nWhich of these ${asked}?\n${block}`,
    output: `${cap(fact)}. Answer: ${LETTERS[options.indexOf(named)]}`,
  };
}
const nums = (r: Rng, lo: number, hi: number, max = 99): number[] => Array.from({ length: r.int(lo, hi) }, () => r.int(0, max));

const SKILLS: Record<string, Skill> = {
  'copy-list': (r) => {
    const ws = r.next() < 0.5 ? words(r, 2, 9) : nums(r, 2, 9).map(String);
    return { instruction: 'Copy the input exactly.', input: ws.join(', '), output: ws.join(', ') };
  },
  'copy-words': (r) => {
    const ws = words(r, 2, 8);
    return { instruction: 'Repeat the words after me.', input: ws.join(' '), output: ws.join(' ') };
  },
  spell: (r) => {
    const w = r.pick(NOUNS);
    return { instruction: 'Spell the word with a space between the letters.', input: w, output: [...w].join(' ') };
  },
  unspell: (r) => {
    const w = r.pick(NOUNS);
    return { instruction: 'Join the letters into one word.', input: [...w].join(' '), output: w };
  },
  'word-at': (r) => {
    const ws = words(r, 3, 8);
    const k = r.int(1, ws.length);
    return { instruction: `Which word is in position ${k}?`, input: ws.join(' '), output: ws[k - 1]! };
  },
  'letter-at': (r) => {
    const w = r.pick(NOUNS);
    const k = r.int(1, Math.min(w.length, ORD.length));
    return { instruction: `What is the ${ORD[k - 1]} letter of the word?`, input: w, output: w[k - 1]! };
  },
  lookup: (r) => {
    // A table in the input, then keys to look up. The answer restates each key before its value, as
    // the table does, so every value is read right after its key: one induction step. (Values alone,
    // in the order the keys were asked, need a second hop that a small model forms far later: an
    // associative-recall probe in PyTorch, 2 layers, one seed, was still at its plateau after 2,750
    // steps that way and at 82% by step 500 this way; docs/demo.md has the runs.)
    const t = lookupTable(r, 3, 6);
    return t.record(r.shuffle(t.keys.map((_, i) => i)).slice(0, r.int(2, t.keys.length)));
  },
  'continue-from': (r) => {
    // Distinct words, then one of them: the answer is the list from that word on. Copying by
    // position cannot do it (the start is anywhere); the model must find the word by its content
    // and read what follows it, the step a lookup needs.
    const ws = r.sample(NOUNS, r.int(4, 9));
    const k = r.int(0, ws.length - 2);
    return { instruction: 'Continue the list from the word.', input: `${ws.join(' ')}. From: ${ws[k]}`, output: `List: ${ws.slice(k).join(' ')}` };
  },
  'lookup-one': (r) => {
    // A lookup of one key: the value follows the only other place the key stands. Lookups of several
    // keys formed after these had (docs/demo.md).
    const t = lookupTable(r, 2, 6);
    return t.record([r.int(0, t.keys.length - 1)]);
  },
  'count-items': (r) => {
    const ws = words(r, 1, 9);
    return { instruction: 'How many items are there? Answer with a number.', input: ws.join(' '), output: String(ws.length) };
  },
  'count-word': (r) => {
    const target = r.pick(NOUNS);
    const ws = words(r, 3, 8).map((w) => (r.next() < 0.35 ? target : w));
    return { instruction: `How many times does '${target}' appear? Answer with a number.`, input: ws.join(' '), output: String(ws.filter((w) => w === target).length) };
  },
  'say-label': (r) => {
    // Answering with exactly the word a question asks for: the format of every classification task.
    const [yes, no] = r.sample([...CODES, 'yes', 'no', 'true', 'false', 'high', 'low'], 2);
    const probe = r.pick(NOUNS);
    const w = r.next() < 0.5 ? probe : r.pick(NOUNS);
    return { instruction: `Reply '${yes}' if the word is '${probe}', otherwise reply '${no}'.`, input: w, output: w === probe ? yes! : no! };
  },
  'larger-number': (r) => {
    const [a, b] = [r.int(0, 99), r.int(0, 99)];
    return { instruction: 'Which number is larger? Write it.', input: `${a} and ${b}`, output: String(Math.max(a, b)) };
  },
  'add-pair': (r) => {
    const [a, b] = [r.int(0, 50), r.int(0, 49)];
    return { instruction: 'Add the two numbers.', input: `${a} + ${b}`, output: String(a + b) };
  },
  'subtract-pair': (r) => {
    const a = r.int(1, 99);
    const b = r.int(0, a);
    return { instruction: 'Subtract the second number from the first.', input: `${a} - ${b}`, output: String(a - b) };
  },
  'times-table': (r) => {
    const [a, b] = [r.int(1, 9), r.int(1, 9)];
    return { instruction: 'Multiply the two numbers.', input: `${a} x ${b}`, output: String(a * b) };
  },
  'next-number': (r) => {
    const a = r.int(0, 98);
    return { instruction: 'Write the number that comes after this one.', input: String(a), output: String(a + 1) };
  },
  'first-last': (r) => {
    const ws = words(r, 2, 8);
    const first = r.next() < 0.5;
    return { instruction: `Write the ${first ? 'first' : 'last'} word of the input.`, input: ws.join(' '), output: (first ? ws[0] : ws[ws.length - 1])! };
  },
  'drop-word': (r) => {
    const ws = words(r, 3, 8);
    const gone = r.pick(ws);
    return { instruction: `Write the input without the word '${gone}'.`, input: ws.join(' '), output: ws.filter((w) => w !== gone).join(' ') };
  },
  'option-letter': (r) => {
    // A fact stated in the input, then the letter of the option it names: how every multiple-choice
    // answer ends ("<fact>. Answer: X"), here with the fact given so only the matching is learned.
    const options = r.sample(NOUNS, r.int(3, 5));
    const named = r.pick(options);
    const code = r.pick(CODES);
    return optionRecord(options, named, `the ${named} is ${code}`, `is ${code}`);
  },
  'word-length': (r) => {
    const w = r.pick(NOUNS);
    return { instruction: 'How many letters does the word have? Answer with a number.', input: w, output: String(w.length) };
  },
};

/**
 * Skills on coined words, drawn only where a pretraining phase names them (`mix.named`): kept out of
 * {@link SKILL_NAMES}, whose uniform draw the committed base's commands reproduce.
 */
const CODED: Record<string, Skill> = {
  'copy-coined': (r) => {
    // Coined words and pool words mixed, as a list or as words.
    const ws = coinedWords(r, r.int(2, 8)).map((w) => (r.next() < 0.25 ? r.pick(NOUNS) : w));
    const text = ws.join(r.next() < 0.5 ? ', ' : ' ');
    return { instruction: 'Copy the input exactly.', input: text, output: text };
  },
  'option-coined': (r) => {
    // option-letter's matching on made-up options, capitalised or not, some with a suffix, as the
    // fictional world's names are: the letter is the one before the option the fact names.
    const shape = r.int(0, 3);
    const dress = (w: string) => (shape === 0 ? w : shape === 1 ? cap(w) : shape === 2 ? `${cap(w)} City` : `${cap(w)}ish`);
    const options = coinedWords(r, r.int(3, 6)).map(dress);
    const named = r.pick(options);
    const code = r.pick(CODES);
    return optionRecord(options, named, `the ${code} one is ${named}`, `is the ${code} one`);
  },
  'lookup-coined': (r) => {
    // Keys, values or both coined: the table's words are whatever the prompt holds.
    const side = r.int(0, 2);
    const pool = (real: readonly string[]) => (n: number) => r.sample(real, n);
    const made = (n: number) => coinedWords(r, n);
    const t = lookupTable(r, 2, 6, { keys: side === 1 ? pool(NOUNS) : made, values: side === 0 ? pool(NOUNS) : made });
    return t.record(r.shuffle(t.keys.map((_, i) => i)).slice(0, r.int(1, t.keys.length)));
  },
  'lookup-values': (r) => {
    // The second hop: the values alone, in the order of the keys, which may repeat; keys and values
    // pool words or coined, as in lookup-coined. Formed after the lookups that restate each key.
    const side = r.int(0, 3);
    const keys = side === 1 || side === 3 ? r.sample(NOUNS, r.int(2, 6)) : coinedWords(r, r.int(2, 6));
    const values = side === 0 || side === 3 ? r.sample(CODES, keys.length) : coinedWords(r, keys.length);
    const asked = Array.from({ length: r.int(1, 6) }, () => r.int(0, keys.length - 1));
    return {
      instruction: 'Replace each key by its value from the table.',
      input: `Table: ${keys.map((k, i) => `${k} ${values[i]}`).join('; ')}. Keys: ${asked.map((i) => keys[i]).join(' ')}`,
      output: `Values: ${asked.map((i) => values[i]).join(' ')}`,
    };
  },
  'lookup-table': (r) => {
    // lookup-values' second hop in the shapes a table takes in a prompt: key and value joined by '='
    // (most often), ':', ': ', ' = ' or ' -> ', pairs by ', ', '; ' or lines, the table in the instruction or the
    // input; asked by key (the value is written) or by value (the key is written). A value after '='
    // or ':' is other tokens than the same value after a space, as it is written in the answer.
    const n = r.int(3, 10);
    const side = r.int(0, 3);
    const nouns = r.sample(NOUNS, 2 * n);
    const keys = side === 1 || side === 3 ? nouns.slice(0, n) : coinedWords(r, n);
    const values = side === 0 || side === 3 ? nouns.slice(n) : coinedWords(r, n);
    const sep = r.pick(['=', '=', '=', ':', ': ', ' = ', ' -> ']);
    const table = keys.map((k, i) => `${k}${sep}${values[i]}`).join(r.pick([', ', ', ', '; ', '\n']));
    const byValue = r.next() < 0.35;
    const [from, to] = byValue ? [values, keys] : [keys, values];
    const asked = Array.from({ length: r.int(1, 6) }, () => r.int(0, n - 1));
    const join = r.pick([' ', ' ', ', ']);
    const query = asked.map((i) => from[i]).join(join);
    const output = asked.map((i) => to[i]).join(join);
    const ask = byValue
      ? r.pick(['Replace each word with the word it is paired with on the left in this table', 'Write the key of each value, using these pairs'])
      : r.pick(['Replace each word with its value from this table', 'Write what each word maps to, using these pairs', 'Look up each word and write its entry from this list']);
    return r.next() < 0.6 ? { instruction: `${ask}: ${table}.`, input: query, output } : { instruction: `${ask}.`, input: `${table}\nWords: ${query}`, output };
  },
};

/** The general skills {@link generalSkills} draws from (copy, spell, look up, count, ...). */
export const SKILL_NAMES = Object.keys(SKILLS);

/** Every skill a pretraining phase may name: {@link SKILL_NAMES} and the coined-word skills. */
export const NAMED_SKILLS: readonly string[] = [...SKILL_NAMES, ...Object.keys(CODED)];

/**
 * The in-context skills: the answer is read out of the prompt (copied, looked up, matched), which a
 * small model learns only once induction heads form. Pretraining can teach them first, alone.
 */
export const IN_CONTEXT_SKILLS: readonly string[] = ['copy-list', 'copy-words', 'lookup', 'word-at', 'first-last', 'drop-word', 'option-letter', 'say-label'];

/**
 * One record of a named skill (task: `skill-<name>`).
 * @param name - one of {@link SKILL_NAMES}.
 * @param rng - the generator to draw from.
 * @returns the record.
 * @throws RangeError for an unknown skill.
 * @example
 * ```ts
 * skillRecord('copy-list', createRng(1)); // { task: 'skill-copy-list', instruction: 'Copy the input exactly.', ... }
 * ```
 */
export function skillRecord(name: string, rng: Rng): InstanceRecord {
  const make = Object.hasOwn(SKILLS, name) ? SKILLS[name] : Object.hasOwn(CODED, name) ? CODED[name] : undefined;
  if (!make) throw new RangeError(`skillRecord: unknown skill '${name}' (known: ${NAMED_SKILLS.join(', ')})`);
  return { task: `skill-${name}`, ...make(rng) };
}

/**
 * `n` skill records, the skill drawn uniformly for each (task: `skill-<name>`).
 * @param rng - the generator to draw from.
 * @param n - how many.
 * @returns the records.
 * @example
 * ```ts
 * const skills = generalSkills(createRng(3), 100);
 * ```
 */
export function generalSkills(rng: Rng, n: number): InstanceRecord[] {
  return Array.from({ length: n }, () => skillRecord(rng.pick(SKILL_NAMES), rng));
}
