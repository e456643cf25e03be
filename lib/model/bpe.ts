// Learning byte-level BPE merges from a corpus, for the tokenizer of a model created from scratch.
// Words are split as GPT-2's ByteLevel pre-tokenizer splits them (the tokenizer applies merges
// within those pieces only), mapped to byte symbols, and the most frequent adjacent pair is merged
// until `merges` merges exist. Ties break by the pair's text, so the result is deterministic.
// By default no merge contains a digit: numbers stay one token per digit (as in Llama's
// tokenizers), which lets a small model learn arithmetic instead of a table of number tokens.
// With splitSpaces no merge contains the space either: a word is then the same tokens after a space,
// a newline or '=' (GPT-2's pieces carry their leading space, so ' apple' and 'apple' are otherwise
// different tokens, and copying a word from 'apple=kotor' into 'kotor dada' is no copy at all).
import { byteSymbols } from './create.js';

const PRETOKENIZE = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

const DIGIT = /[0-9]/;
/** The byte symbol of the space (GPT-2's 'Ġ'). */
const SPACE = byteSymbols()[0x20]!;

/**
 * Learns byte-level BPE merges from a corpus: the most frequent adjacent pair of symbols, again
 * and again, within GPT-2's pre-tokenized pieces; ties break by text, so the result is deterministic.
 * @param texts - the corpus.
 * @param merges - how many merges to learn at most (fewer when no pair occurs twice).
 * @param options - splitDigits (default true): no merge contains a digit, so numbers stay one token per digit;
 *   splitSpaces (default false): no merge contains the space, so a word is the same tokens wherever it
 *   stands and every space is a token of its own.
 * @returns the merges, "a b" pairs of byte symbols, in the order learned.
 * @example
 * ```ts
 * const merges = learnMerges(['the cat', 'the hat'], 10); // ['a t', 'h e', 't he']
 * createModel('tiny', { merges });
 * ```
 */
export function learnMerges(texts: readonly string[], merges: number, options: { splitDigits?: boolean; splitSpaces?: boolean } = {}): string[] {
  const splitDigits = options.splitDigits ?? true;
  const splitSpaces = options.splitSpaces ?? false;
  const symbols = byteSymbols();
  const encoder = new TextEncoder();
  // word (as symbol sequence) -> count
  const counts = new Map<string, number>();
  for (const text of texts)
    for (const piece of text.match(PRETOKENIZE) ?? []) {
      const word = Array.from(encoder.encode(piece), (b) => symbols[b]!).join('\u0000');
      counts.set(word, (counts.get(word) ?? 0) + 1);
    }
  const words = [...counts].map(([w, c]) => ({ parts: w.split('\u0000'), count: c }));
  // Pair counts kept up to date merge by merge: a merge rewrites only the words that hold its pair
  // (`holders`, which may also name words that lost it since: they are rewritten to themselves),
  // so each merge costs the words it touches, not the whole corpus.
  const pairs = new Map<string, number>();
  const holders = new Map<string, Set<number>>();
  const count = (id: number, sign: 1 | -1): void => {
    const { parts, count: n } = words[id]!;
    for (let i = 0; i + 1 < parts.length; i++) {
      if (splitDigits && (DIGIT.test(parts[i]!) || DIGIT.test(parts[i + 1]!))) continue;
      if (splitSpaces && (parts[i]!.includes(SPACE) || parts[i + 1]!.includes(SPACE))) continue;
      const key = `${parts[i]} ${parts[i + 1]}`;
      const c = (pairs.get(key) ?? 0) + sign * n;
      if (c === 0) pairs.delete(key);
      else pairs.set(key, c);
      if (sign > 0) {
        let h = holders.get(key);
        if (!h) holders.set(key, (h = new Set()));
        h.add(id);
      }
    }
  };
  for (let id = 0; id < words.length; id++) count(id, 1);
  const out: string[] = [];
  while (out.length < merges) {
    let best: string | undefined;
    let bestCount = 1; // a pair seen once is not worth a token
    for (const [pair, c] of pairs) if (c > bestCount || (c === bestCount && best !== undefined && pair < best)) [best, bestCount] = [pair, c];
    if (!best) break;
    out.push(best);
    const [a, b] = best.split(' ') as [string, string];
    const ids = [...(holders.get(best) ?? [])];
    holders.delete(best);
    for (const id of ids) {
      const { parts } = words[id]!;
      count(id, -1);
      const next: string[] = [];
      for (let i = 0; i < parts.length; i++) {
        if (i + 1 < parts.length && parts[i] === a && parts[i + 1] === b) {
          next.push(a + b);
          i++;
        } else next.push(parts[i]!);
      }
      words[id]!.parts = next;
      count(id, 1);
    }
  }
  return out;
}
