// Five old-task suites in the roles of GSM8K, SVAMP, ARC-Challenge, MMLU-Pro and BBH. Every record's
// `output` is a worked answer that the metrics in metrics.ts extract back to `answer`, so a model
// that reproduces the generator scores 100%.
import { createRng, type Rng } from './rng.js';
import type { OldRecord } from './records.js';

export type OldGenerator = (rng: Rng, n: number) => OldRecord[];

const NAMES = ['Ana', 'Ben', 'Carla', 'Dev', 'Emma', 'Farid', 'Grace', 'Hugo', 'Ines', 'Jonas', 'Kemi', 'Luis', 'Mei', 'Noor', 'Omar', 'Priya'];
const ITEMS = ['apples', 'pencils', 'stickers', 'marbles', 'cookies', 'books', 'shells', 'cards', 'eggs', 'balloons'];

const ARITH_INSTRUCTION = "Solve the math word problem. Show your steps and end with 'The answer is N.'";
const CHOICE_INSTRUCTION = "Answer the multiple-choice question. Explain briefly and end with 'Answer: X' where X is the letter of the correct option.";
const LOGIC_INSTRUCTION = "Solve the puzzle. Explain briefly and end with 'The answer is X.'";

function repeat(n: number, make: () => OldRecord): OldRecord[] {
  return Array.from({ length: n }, make);
}

function arith(task: string, input: string, steps: string[], answer: number): OldRecord {
  return { task, instruction: ARITH_INSTRUCTION, input, output: `${steps.join(' ')} The answer is ${answer}.`, answer: String(answer) };
}

// --- arith-gsm: 2-3 step problems about buying, sharing and rates.
const gsmTemplates: ((r: Rng) => OldRecord)[] = [
  (r) => {
    const [name, item] = [r.pick(NAMES), r.pick(ITEMS)];
    const [packs, per] = [r.int(2, 9), r.int(3, 12)];
    const total = packs * per;
    const given = r.int(1, total - 1);
    return arith('arith-gsm', `${name} buys ${packs} packs of ${item} with ${per} ${item} in each pack. ${name} then gives away ${given} ${item}. How many ${item} does ${name} have left?`,
      [`${name} buys ${packs} x ${per} = ${total} ${item}.`, `After giving away ${given}, ${name} has ${total} - ${given} = ${total - given}.`], total - given);
  },
  (r) => {
    const [name, item] = [r.pick(NAMES), r.pick(ITEMS)];
    const [friends, each] = [r.int(2, 8), r.int(2, 15)];
    const total = friends * each;
    const had = r.int(1, total - 1);
    const bought = total - had;
    return arith('arith-gsm', `${name} has ${had} ${item} and buys ${bought} more. ${name} shares all of them equally among ${friends} friends. How many ${item} does each friend get?`,
      [`${name} has ${had} + ${bought} = ${total} ${item}.`, `Each friend gets ${total} / ${friends} = ${each}.`], each);
  },
  (r) => {
    const rate = r.int(3, 40);
    const [h1, h2] = [r.int(2, 9), r.int(2, 9)];
    const [a, b] = [rate * h1, rate * h2];
    return arith('arith-gsm', `A machine makes ${rate} toys per hour. It runs for ${h1} hours on Monday and ${h2} hours on Tuesday. How many toys does it make on the two days together?`,
      [`On Monday it makes ${rate} x ${h1} = ${a}.`, `On Tuesday it makes ${rate} x ${h2} = ${b}.`, `Together ${a} + ${b} = ${a + b}.`], a + b);
  },
  (r) => {
    const [name, item] = [r.pick(NAMES), r.pick(ITEMS)];
    const [count, price] = [r.int(2, 9), r.int(2, 12)];
    const cost = count * price;
    const bill = (Math.floor(cost / 10) + r.int(1, 5)) * 10;
    return arith('arith-gsm', `${name} buys ${count} bags of ${item} at $${price} per bag and pays with a $${bill} bill. How many dollars of change does ${name} get?`,
      [`The bags cost ${count} x ${price} = ${cost} dollars.`, `The change is ${bill} - ${cost} = ${bill - cost}.`], bill - cost);
  },
  (r) => {
    const name = r.pick(NAMES);
    const [speed, hours, extra] = [r.int(20, 80), r.int(2, 6), r.int(5, 60)];
    const d = speed * hours;
    return arith('arith-gsm', `${name} drives at ${speed} km per hour for ${hours} hours, then walks ${extra} km more. How many km does ${name} travel in all?`,
      [`Driving covers ${speed} x ${hours} = ${d} km.`, `In all ${d} + ${extra} = ${d + extra} km.`], d + extra);
  },
];

export const arithGsm: OldGenerator = (rng, n) => repeat(n, () => rng.pick(gsmTemplates)(rng));

// --- arith-svamp: one/two-step problems with question-first phrasing, distractors and reordering.
const svampTemplates: ((r: Rng) => OldRecord)[] = [
  (r) => {
    const [name, item] = [r.pick(NAMES), r.pick(ITEMS)];
    const [a, b] = [r.int(2, 60), r.int(2, 60)];
    return arith('arith-svamp', `How many ${item} does ${name} have now if ${name} had ${a} ${item} and got ${b} more?`, [`${a} + ${b} = ${a + b}.`], a + b);
  },
  (r) => {
    const [name, item] = [r.pick(NAMES), r.pick(ITEMS)];
    const other = r.pick(ITEMS.filter((i) => i !== item));
    const [a, d, b] = [r.int(10, 80), r.int(2, 50), r.int(1, 9)];
    return arith('arith-svamp', `${name} had ${a} ${item} and ${d} ${other}. ${name} lost ${b} ${item}. How many ${item} does ${name} have now?`,
      [`The ${other} do not matter.`, `${a} - ${b} = ${a - b}.`], a - b);
  },
  (r) => {
    const [name, friend, item] = [r.pick(NAMES), r.pick(NAMES), r.pick(ITEMS)];
    const [left, gave] = [r.int(1, 50), r.int(1, 50)];
    return arith('arith-svamp', `After giving ${gave} ${item} to ${friend}, ${name} has ${left} ${item} left. How many ${item} did ${name} have at first?`,
      [`${name} had ${left} + ${gave} = ${left + gave}.`], left + gave);
  },
  (r) => {
    const [name, friend, item] = [r.pick(NAMES), r.pick(NAMES), r.pick(ITEMS)];
    const a = r.int(10, 60);
    const fewer = r.int(1, a - 1);
    const b = a - fewer;
    return arith('arith-svamp', `${name} has ${a} ${item}. ${friend} has ${fewer} fewer ${item} than ${name}. How many ${item} do they have together?`,
      [`${friend} has ${a} - ${fewer} = ${b}.`, `Together ${a} + ${b} = ${a + b}.`], a + b);
  },
  (r) => {
    const item = r.pick(ITEMS);
    const [boxes, per, d] = [r.int(2, 12), r.int(2, 12), r.int(2, 30)];
    return arith('arith-svamp', `Each box holds ${per} ${item}. A shelf has ${d} labels and ${boxes} full boxes. How many ${item} are on the shelf?`,
      [`The labels do not matter.`, `${boxes} x ${per} = ${boxes * per}.`], boxes * per);
  },
  (r) => {
    const [name, item] = [r.pick(NAMES), r.pick(ITEMS)];
    const [groups, per] = [r.int(2, 9), r.int(2, 12)];
    const total = groups * per;
    return arith('arith-svamp', `There are ${total} ${item} to put into ${groups} equal groups. How many ${item} go in each group, asks ${name}?`,
      [`${total} / ${groups} = ${per}.`], per);
  },
];

export const arithSvamp: OldGenerator = (rng, n) => repeat(n, () => rng.pick(svampTemplates)(rng));

const LETTERS = ['A', 'B', 'C', 'D', 'E', 'F'];

/** Builds the option block and the answer letter for a correct option among distractors. */
function choice(task: string, rng: Rng, question: string, correct: string, distractors: readonly string[], why: string): OldRecord {
  const options = rng.shuffle([correct, ...distractors]);
  const letter = LETTERS[options.indexOf(correct)] as string;
  const block = options.map((o, i) => `${LETTERS[i]}) ${o}`).join('\n');
  return { task, instruction: CHOICE_INSTRUCTION, input: `${question}\n${block}`, output: `${why} Answer: ${letter}`, answer: letter };
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

// --- logic: ordering, boolean expressions, date arithmetic; answers are exact strings.
function logicRecord(input: string, why: string, answer: string): OldRecord {
  return { task: 'logic', instruction: LOGIC_INSTRUCTION, input, output: `${why} The answer is ${answer}.`, answer };
}

function ordering(r: Rng): OldRecord {
  const people = r.sample(NAMES, r.int(3, 5));
  const [more, most, least] = r.pick([['taller', 'tallest', 'shortest'], ['older', 'oldest', 'youngest'], ['faster', 'fastest', 'slowest']] as const);
  // people[0] ranks first; each fact compares neighbours, shuffled so the chain must be rebuilt.
  const facts = r.shuffle(people.slice(0, -1).map((p, i) => `${p} is ${more} than ${people[i + 1]}.`));
  const askMost = r.next() < 0.5;
  const answer = (askMost ? people[0] : people[people.length - 1]) as string;
  return logicRecord(`${facts.join(' ')} Who is the ${askMost ? most : least}?`, `The order from ${most} to ${least} is ${people.join(', ')}.`, answer);
}

type BoolExpr = { text: string; value: boolean };
function boolExpr(r: Rng, depth: number, root = false): BoolExpr {
  // The root is always an operator, so no puzzle is a bare constant.
  if (depth === 0 || (!root && r.next() < 0.25)) {
    const value = r.next() < 0.5;
    return { text: value ? 'True' : 'False', value };
  }
  const kind = r.int(0, 2);
  if (kind === 0) {
    const e = boolExpr(r, depth - 1);
    return { text: `not ${wrap(e.text)}`, value: !e.value };
  }
  const [a, b] = [boolExpr(r, depth - 1), boolExpr(r, depth - 1)];
  return kind === 1 ? { text: `${wrap(a.text)} and ${wrap(b.text)}`, value: a.value && b.value } : { text: `${wrap(a.text)} or ${wrap(b.text)}`, value: a.value || b.value };
}
const wrap = (t: string): string => (t === 'True' || t === 'False' ? t : `(${t})`);

function booleans(r: Rng): OldRecord {
  const e = boolExpr(r, 3, true);
  const v = e.value ? 'True' : 'False';
  return logicRecord(`Evaluate: ${e.text}`, `Evaluating the expression step by step gives ${v}.`, v);
}

function dates(r: Rng): OldRecord {
  const start = Date.UTC(r.int(1990, 2030), r.int(0, 11), r.int(1, 28));
  const days = r.int(1, 60);
  const after = r.next() < 0.5;
  const end = start + (after ? days : -days) * 86_400_000;
  const iso = (t: number): string => new Date(t).toISOString().slice(0, 10);
  return logicRecord(`What date is ${days} days ${after ? 'after' : 'before'} ${iso(start)}? Answer in YYYY-MM-DD format.`,
    `Counting ${days} days ${after ? 'forward' : 'back'} from ${iso(start)} gives ${iso(end)}.`, iso(end));
}

export const logic: OldGenerator = (rng, n) => repeat(n, () => rng.pick([ordering, booleans, dates])(rng));

function cap(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

export const OLD_SUITES = {
  'arith-gsm': arithGsm,
  'arith-svamp': arithSvamp,
  'science-mc': scienceMc,
  'knowledge-mc': knowledgeMc,
  logic,
} as const satisfies Record<string, OldGenerator>;

export type OldSuiteName = keyof typeof OLD_SUITES;
export const OLD_SUITE_NAMES = Object.keys(OLD_SUITES) as OldSuiteName[];
