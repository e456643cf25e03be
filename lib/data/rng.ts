// Seeded PRNG for the generated benchmark: the same seed must give byte-identical suites on every
// machine, so nothing in lib/data may draw from the global, unseeded generator.

/** A seeded pseudo-random generator: what {@link createRng} returns. */
export interface Rng {
  /**
   * Uniform in [0, 1).
   * @returns the next number.
   */
  next(): number;
  /**
   * Uniform integer in [lo, hi], both ends included.
   * @param lo - the smallest value, an integer.
   * @param hi - the largest value, an integer >= lo.
   * @returns the integer.
   * @throws Error for a non-integer or empty range.
   */
  int(lo: number, hi: number): number;
  /**
   * One item, uniformly.
   * @param items - a non-empty list.
   * @returns the item.
   * @throws Error for an empty list.
   */
  pick<T>(items: readonly T[]): T;
  /**
   * A shuffled copy (Fisher-Yates).
   * @param items - the list (not changed).
   * @returns the copy.
   */
  shuffle<T>(items: readonly T[]): T[];
  /**
   * `k` distinct items in random order.
   * @param items - the list.
   * @param k - how many, at most items.length.
   * @returns the items.
   * @throws Error when k exceeds the list's length.
   */
  sample<T>(items: readonly T[], k: number): T[];
  /**
   * An independent stream, so adding draws in one generator does not shift another's.
   * @param label - names the stream: the same state and label give the same stream.
   * @returns the new generator.
   */
  fork(label: string): Rng;
}

/**
 * A seeded generator (mulberry32: 32-bit state, small and fast; quality is ample for templating).
 * The same seed gives the same draws on every machine.
 * @param seed - any number; its low 32 bits are the state.
 * @returns the generator.
 * @example
 * ```ts
 * const rng = createRng(42);
 * rng.int(1, 6); // a die roll, the same every run
 * const order = rng.shuffle([1, 2, 3]);
 * ```
 */
export function createRng(seed: number): Rng {
  let state = seed >>> 0;
  const next = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (lo: number, hi: number): number => {
    if (!Number.isInteger(lo) || !Number.isInteger(hi) || hi < lo) throw new Error(`rng.int: bad range [${lo}, ${hi}]`);
    return lo + Math.floor(next() * (hi - lo + 1));
  };
  const pick = <T>(items: readonly T[]): T => {
    if (items.length === 0) throw new Error('rng.pick: empty list');
    return items[int(0, items.length - 1)] as T;
  };
  const shuffle = <T>(items: readonly T[]): T[] => {
    const out = [...items];
    for (let i = out.length - 1; i > 0; i--) {
      const j = int(0, i);
      [out[i], out[j]] = [out[j] as T, out[i] as T];
    }
    return out;
  };
  const sample = <T>(items: readonly T[], k: number): T[] => {
    if (k > items.length) throw new Error(`rng.sample: ${k} from ${items.length}`);
    return shuffle(items).slice(0, k);
  };
  const fork = (label: string): Rng => createRng(hashString(`${state}:${label}`));
  return { next, int, pick, shuffle, sample, fork };
}

/**
 * FNV-1a, for turning labels into seeds.
 * @param s - the label.
 * @returns an unsigned 32-bit hash.
 * @example
 * ```ts
 * createRng(hashString('run-1:data'));
 * ```
 */
export function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}
