// Five old-task suites in the roles of GSM8K, SVAMP, ARC-Challenge, MMLU-Pro and BBH. Every record's
// `output` is a worked answer that the metrics in metrics.ts extract back to `answer`, so a model
// that reproduces the generator scores 100%.
import { createRng, type Rng } from './rng.js';
import type { OldRecord } from './records.js';

/** A generator of one old suite's records: `n` records drawn from `rng`. */
export type OldGenerator = (rng: Rng, n: number) => OldRecord[];

const NAMES = ['Ana', 'Ben', 'Carla', 'Dev', 'Emma', 'Farid', 'Grace', 'Hugo', 'Ines', 'Jonas', 'Kemi', 'Luis', 'Mei', 'Noor', 'Omar', 'Priya'];
const ITEMS = ['apples', 'pencils', 'stickers', 'marbles', 'cookies', 'books', 'shells', 'cards', 'eggs', 'balloons'];

/** The instructions of the old suites; importers of the paper's old-task datasets use the same ones. */
export const ARITH_INSTRUCTION = "Solve the math word problem step by step. End with 'The answer is N.'";
/** The instruction of multiple-choice records (science-mc, knowledge-mc, and imported ARC and MMLU-Pro). */
export const CHOICE_INSTRUCTION = "Answer the multiple-choice question. State the fact, then 'Answer: X' with the letter of the correct option.";
/** The instruction of logic-puzzle records (the logic suite and imported BBH). */
export const LOGIC_INSTRUCTION = "Solve the puzzle step by step. End with 'The answer is X.'";

function repeat(n: number, make: () => OldRecord): OldRecord[] {
  return Array.from({ length: n }, make);
}

function arith(task: string, input: string, steps: string[], answer: number): OldRecord {
  return { task, instruction: ARITH_INSTRUCTION, input, output: `${steps.join(' ')} The answer is ${answer}.`, answer: String(answer) };
}

// Sized for a small model: every step is one operation on numbers below 100, products are of
// one-digit factors, and each step is written out ("a op b = c"), as a worked solution.

// --- arith-gsm: 2-3 step problems about buying, sharing and rates.
const gsmTemplates: ((r: Rng) => OldRecord)[] = [
  (r) => {
    const [name, item] = [r.pick(NAMES), r.pick(ITEMS)];
    const [packs, per] = [r.int(2, 9), r.int(2, 9)];
    const total = packs * per;
    const given = r.int(1, total - 1);
    return arith('arith-gsm', `${name} buys ${packs} packs of ${item} with ${per} ${item} in each pack. ${name} then gives away ${given} ${item}. How many ${item} does ${name} have left?`,
      [`${packs} x ${per} = ${total}.`, `${total} - ${given} = ${total - given}.`], total - given);
  },
  (r) => {
    const [name, item] = [r.pick(NAMES), r.pick(ITEMS)];
    const [friends, each] = [r.int(2, 9), r.int(2, 9)];
    const total = friends * each;
    const had = r.int(1, total - 1);
    const bought = total - had;
    return arith('arith-gsm', `${name} has ${had} ${item} and buys ${bought} more. ${name} shares all of them equally among ${friends} friends. How many ${item} does each friend get?`,
      [`${had} + ${bought} = ${total}.`, `${total} / ${friends} = ${each}.`], each);
  },
  (r) => {
    const rate = r.int(2, 9);
    const [h1, h2] = [r.int(2, 9), r.int(2, 9)];
    const [a, b] = [rate * h1, rate * h2];
    return arith('arith-gsm', `A machine makes ${rate} toys per hour. It runs for ${h1} hours on Monday and ${h2} hours on Tuesday. How many toys does it make on the two days together?`,
      [`${rate} x ${h1} = ${a}.`, `${rate} x ${h2} = ${b}.`, `${a} + ${b} = ${a + b}.`], a + b);
  },
  (r) => {
    const [name, item] = [r.pick(NAMES), r.pick(ITEMS)];
    const [count, price] = [r.int(2, 9), r.int(2, 9)];
    const cost = count * price;
    const bill = Math.min(100, (Math.floor(cost / 10) + r.int(1, 3)) * 10);
    return arith('arith-gsm', `${name} buys ${count} bags of ${item} at $${price} per bag and pays with a $${bill} bill. How many dollars of change does ${name} get?`,
      [`${count} x ${price} = ${cost}.`, `${bill} - ${cost} = ${bill - cost}.`], bill - cost);
  },
  (r) => {
    const name = r.pick(NAMES);
    const [speed, hours, extra] = [r.int(2, 9), r.int(2, 9), r.int(2, 19)];
    const d = speed * hours;
    return arith('arith-gsm', `${name} cycles at ${speed} km per hour for ${hours} hours, then walks ${extra} km more. How many km does ${name} travel in all?`,
      [`${speed} x ${hours} = ${d}.`, `${d} + ${extra} = ${d + extra}.`], d + extra);
  },
];

export const arithGsm: OldGenerator = (rng, n) => repeat(n, () => rng.pick(gsmTemplates)(rng));

// --- arith-svamp: one-step problems with question-first phrasing, distractors and reordering.
const svampTemplates: ((r: Rng) => OldRecord)[] = [
  (r) => {
    const [name, item] = [r.pick(NAMES), r.pick(ITEMS)];
    const [a, b] = [r.int(2, 49), r.int(2, 49)];
    return arith('arith-svamp', `How many ${item} does ${name} have now if ${name} had ${a} ${item} and got ${b} more?`, [`${a} + ${b} = ${a + b}.`], a + b);
  },
  (r) => {
    const [name, item] = [r.pick(NAMES), r.pick(ITEMS)];
    const other = r.pick(ITEMS.filter((i) => i !== item));
    const [a, d] = [r.int(10, 99), r.int(2, 50)];
    const b = r.int(1, a - 1);
    return arith('arith-svamp', `${name} had ${a} ${item} and ${d} ${other}. ${name} lost ${b} ${item}. How many ${item} does ${name} have now?`,
      [`${a} - ${b} = ${a - b}.`], a - b);
  },
  (r) => {
    const [name, friend, item] = [r.pick(NAMES), r.pick(NAMES), r.pick(ITEMS)];
    const [left, gave] = [r.int(1, 49), r.int(1, 49)];
    return arith('arith-svamp', `After giving ${gave} ${item} to ${friend}, ${name} has ${left} ${item} left. How many ${item} did ${name} have at first?`,
      [`${left} + ${gave} = ${left + gave}.`], left + gave);
  },
  (r) => {
    const [name, friend, item] = [r.pick(NAMES), r.pick(NAMES), r.pick(ITEMS)];
    const a = r.int(10, 99);
    const fewer = r.int(1, a - 1);
    return arith('arith-svamp', `${name} has ${a} ${item}. ${friend} has ${fewer} fewer ${item} than ${name}. How many ${item} does ${friend} have?`,
      [`${a} - ${fewer} = ${a - fewer}.`], a - fewer);
  },
  (r) => {
    const item = r.pick(ITEMS);
    const [boxes, per, d] = [r.int(2, 9), r.int(2, 9), r.int(2, 30)];
    return arith('arith-svamp', `Each box holds ${per} ${item}. A shelf has ${d} labels and ${boxes} full boxes. How many ${item} are on the shelf?`,
      [`${boxes} x ${per} = ${boxes * per}.`], boxes * per);
  },
  (r) => {
    const [name, item] = [r.pick(NAMES), r.pick(ITEMS)];
    const [groups, per] = [r.int(2, 9), r.int(2, 9)];
    const total = groups * per;
    return arith('arith-svamp', `There are ${total} ${item} to put into ${groups} equal groups. How many ${item} go in each group, asks ${name}?`,
      [`${total} / ${groups} = ${per}.`], per);
  },
];

export const arithSvamp: OldGenerator = (rng, n) => repeat(n, () => rng.pick(svampTemplates)(rng));

/** Option letters, as many as MMLU-Pro's ten options need; metrics.ts extracts the same range. */
export const OPTION_LETTERS = ['A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J'] as const;

/**
 * A question's options as the suites write them: one "A) text" line per option.
 * @param options - the option texts, in order (at most ten, A-J).
 * @returns the lines joined by newlines.
 * @throws RangeError when there are more options than {@link OPTION_LETTERS}.
 * @example
 * ```ts
 * optionBlock(['ice', 'steam', 'water']); // 'A) ice\nB) steam\nC) water'
 * ```
 */
export function optionBlock(options: readonly string[]): string {
  if (options.length > OPTION_LETTERS.length) throw new RangeError(`optionBlock: ${options.length} options, at most ${OPTION_LETTERS.length} have letters`);
  return options.map((o, i) => `${OPTION_LETTERS[i]}) ${o}`).join('\n');
}

/** Builds the option block and the answer letter for a correct option among distractors. */
function choice(task: string, rng: Rng, question: string, correct: string, distractors: readonly string[], why: string): OldRecord {
  const options = rng.shuffle([correct, ...distractors]);
  const letter = OPTION_LETTERS[options.indexOf(correct)] as string;
  return { task, instruction: CHOICE_INSTRUCTION, input: `${question}\n${optionBlock(options)}`, output: `${why} Answer: ${letter}`, answer: letter };
}

// --- science-mc: a small fixed fact base about states of matter, animal classes, and more.
const STATE: Record<string, readonly string[]> = {
  solid: ['iron', 'ice', 'granite', 'wood', 'salt', 'copper', 'glass', 'sand'],
  liquid: ['water', 'milk', 'vinegar', 'olive oil', 'mercury', 'honey', 'orange juice'],
  gas: ['oxygen', 'steam', 'helium', 'carbon dioxide', 'nitrogen', 'neon'],
};
const ANIMAL: Record<string, readonly string[]> = {
  mammal: ['dog', 'whale', 'bat', 'horse', 'dolphin', 'mouse'],
  bird: ['eagle', 'penguin', 'sparrow', 'ostrich', 'owl'],
  reptile: ['lizard', 'snake', 'turtle', 'crocodile'],
  fish: ['salmon', 'shark', 'trout', 'tuna'],
  insect: ['ant', 'bee', 'beetle', 'butterfly'],
};
const CONDUCTORS = ['copper wire', 'an iron nail', 'aluminum foil', 'a steel spoon', 'a silver coin'];
const INSULATORS = ['a rubber band', 'a plastic ruler', 'a wooden stick', 'a glass marble', 'a cotton string', 'a paper cup'];
const ENERGY: Record<string, readonly string[]> = {
  renewable: ['sunlight', 'wind', 'flowing water', 'geothermal heat'],
  'non-renewable': ['coal', 'oil', 'natural gas', 'uranium'],
};

function fromGroups(rng: Rng, groups: Record<string, readonly string[]>): { key: string; correct: string; others: string[] } {
  const key = rng.pick(Object.keys(groups));
  const correct = rng.pick(groups[key] as readonly string[]);
  const pool = Object.entries(groups).filter(([k]) => k !== key).flatMap(([, v]) => v);
  return { key, correct, others: rng.sample(pool, 3) };
}

const scienceTemplates: ((r: Rng) => OldRecord)[] = [
  (r) => {
    const { key, correct, others } = fromGroups(r, STATE);
    return choice('science-mc', r, `Which of these is a ${key} at room temperature?`, correct, others, `${cap(correct)} is a ${key} at room temperature.`);
  },
  (r) => {
    const state = r.pick(Object.keys(STATE));
    const thing = r.pick(STATE[state] as readonly string[]);
    const others = Object.keys(STATE).filter((s) => s !== state).concat('plasma');
    return choice('science-mc', r, `What is the state of ${thing} at room temperature?`, state, others, `${cap(thing)} is a ${state} at room temperature.`);
  },
  (r) => {
    const { key, correct, others } = fromGroups(r, ANIMAL);
    return choice('science-mc', r, `Which of these animals is a ${key}?`, correct, others, `The ${correct} is a ${key}.`);
  },
  (r) => {
    const correct = r.pick(CONDUCTORS);
    return choice('science-mc', r, 'Which of these objects conducts electricity best?', correct, r.sample(INSULATORS, 3), `${cap(correct)} is made of metal, which conducts electricity.`);
  },
  (r) => {
    const { key, correct, others } = fromGroups(r, ENERGY);
    return choice('science-mc', r, `Which of these is a ${key} energy source?`, correct, others.slice(0, 3), `${cap(correct)} is a ${key} energy source.`);
  },
];

export const scienceMc: OldGenerator = (rng, n) => repeat(n, () => rng.pick(scienceTemplates)(rng));

// --- knowledge-mc: a fictional world, fixed across seeds (the "knowledge" must not change with the seed).
interface Country { name: string; capital: string; currency: string; region: string; language: string }
const REGIONS = ['the Northern Reach', 'the Amber Coast', 'the Salt Plains', 'the Cloud Isles', 'the Iron Valley'];

function coin(r: Rng, syllables: number): string {
  const parts = ['ka', 'lo', 'mir', 'ven', 'dra', 'sul', 'tor', 'eth', 'bri', 'nax', 'pel', 'qua', 'ros', 'zin', 'gor', 'hal', 'ith', 'mun'];
  return Array.from({ length: syllables }, () => r.pick(parts)).join('');
}

const WORLD: readonly Country[] = (() => {
  const r = createRng(0x5eed);
  const used = new Set<string>();
  const fresh = (syl: number): string => {
    for (;;) {
      const w = coin(r, syl);
      if (!used.has(w)) { used.add(w); return w; }
    }
  };
  return Array.from({ length: 24 }, (_, i) => ({
    name: cap(fresh(3)),
    capital: cap(fresh(2)) + ' City',
    currency: fresh(2),
    region: REGIONS[i % REGIONS.length] as string,
    language: cap(fresh(2)) + 'ish',
  }));
})();

type Field = 'capital' | 'currency' | 'language';
const knowledgeTemplates: ((r: Rng) => OldRecord)[] = [
  ...(['capital', 'currency', 'language'] as const).map((field: Field) => (r: Rng) => {
    const [c, ...rest] = r.sample(WORLD, r.int(4, 6));
    const country = c as Country;
    const q = { capital: 'What is the capital of', currency: 'Which currency is used in', language: 'Which language is mainly spoken in' }[field];
    return choice('knowledge-mc', r, `${q} ${country.name}?`, country[field], rest.map((x) => x[field]), `The ${field} of ${country.name} is ${country[field]}.`);
  }),
  (r) => {
    const [c, ...rest] = r.sample(WORLD, r.int(4, 6));
    const country = c as Country;
    return choice('knowledge-mc', r, `Which country uses the ${country.currency} as its currency?`, country.name, rest.map((x) => x.name), `${country.name} uses the ${country.currency}.`);
  },
  (r) => {
    const country = r.pick(WORLD);
    const others = r.sample(REGIONS.filter((g) => g !== country.region), r.int(3, 4));
    return choice('knowledge-mc', r, `In which region is ${country.capital}, the capital of ${country.name}?`, country.region, others, `${country.name} lies in ${country.region}.`);
  },
];

export const knowledgeMc: OldGenerator = (rng, n) => repeat(n, () => rng.pick(knowledgeTemplates)(rng));

// --- logic: ordering, boolean expressions, weekday arithmetic; answers are exact strings, worked
// one step at a time.
function logicRecord(input: string, steps: string[], answer: string): OldRecord {
  return { task: 'logic', instruction: LOGIC_INSTRUCTION, input, output: `${steps.join(' ')} The answer is ${answer}.`, answer };
}

function ordering(r: Rng): OldRecord {
  const people = r.sample(NAMES, 3);
  const [more, most, least] = r.pick([['taller', 'tallest', 'shortest'], ['older', 'oldest', 'youngest'], ['faster', 'fastest', 'slowest']] as const);
  // people[0] ranks first; each fact compares neighbours, shuffled so the chain must be rebuilt.
  const facts = r.shuffle(people.slice(0, -1).map((p, i) => `${p} is ${more} than ${people[i + 1]}.`));
  const askMost = r.next() < 0.5;
  const answer = (askMost ? people[0] : people[people.length - 1]) as string;
  return logicRecord(`${facts.join(' ')} Who is the ${askMost ? most : least}?`, [`From ${most} to ${least}: ${people.join(', ')}.`], answer);
}

const bool = (v: boolean): string => (v ? 'True' : 'False');

/**
 * Five constants joined by four operators, one of them negated at most, read left to right:
 * "True and False or not True and True or False", evaluated one operator per step. Over 3,000
 * distinct expressions, so evaluation inputs stay unseen in training.
 */
function booleans(r: Rng): OldRecord {
  const values = Array.from({ length: 5 }, () => r.next() < 0.5);
  const ops = Array.from({ length: 4 }, () => (r.next() < 0.5 ? 'and' : 'or'));
  const negated = r.int(-1, 4); // -1: none
  const steps: string[] = [];
  const term = (i: number): boolean => {
    if (i !== negated) return values[i]!;
    steps.push(`not ${bool(values[i]!)} = ${bool(!values[i])}.`);
    return !values[i];
  };
  const text = values.map((v, i) => `${i === negated ? 'not ' : ''}${bool(v)}`).reduce((acc, t, i) => `${acc} ${ops[i - 1]} ${t}`);
  let acc = term(0);
  for (let i = 1; i < 5; i++) {
    const next = term(i);
    const value = ops[i - 1] === 'and' ? acc && next : acc || next;
    steps.push(`${bool(acc)} ${ops[i - 1]} ${bool(next)} = ${bool(value)}.`);
    acc = value;
  }
  return logicRecord(`Evaluate from left to right: ${text}`, steps, bool(acc));
}

function compare(r: Rng): OldRecord {
  const [a, b] = r.sample(NAMES, 2) as [string, string];
  const item = r.pick(ITEMS);
  const x = r.int(1, 99);
  let y = r.int(1, 98);
  if (y >= x) y += 1;
  const more = r.next() < 0.5;
  const answer = (more ? x > y : x < y) ? a : b;
  const [hi, lo] = x > y ? [x, y] : [y, x];
  return logicRecord(`${a} has ${x} ${item} and ${b} has ${y} ${item}. Who has ${more ? 'more' : 'fewer'} ${item}?`, [`${hi} is more than ${lo}.`], answer);
}

export const logic: OldGenerator = (rng, n) => repeat(n, () => rng.pick([ordering, booleans, compare])(rng));

function cap(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/** The five old suites' generators, by name (roles of GSM8K, SVAMP, ARC-Challenge, MMLU-Pro, BBH). */
export const OLD_SUITES = {
  'arith-gsm': arithGsm,
  'arith-svamp': arithSvamp,
  'science-mc': scienceMc,
  'knowledge-mc': knowledgeMc,
  logic,
} as const satisfies Record<string, OldGenerator>;

/** One of the old suites' names. */
export type OldSuiteName = keyof typeof OLD_SUITES;
/** The old suites' names, in order. */
export const OLD_SUITE_NAMES = Object.keys(OLD_SUITES) as OldSuiteName[];
