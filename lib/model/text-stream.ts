// Text from tokens as they come: whole characters only (a token can end inside a multi-byte UTF-8
// character), and stop strings, which end the text before them and of which no part is let out
// until it is known not to be one.

/** The one character a tokenizer decodes an incomplete (or invalid) UTF-8 sequence to. */
const REPLACEMENT = '\uFFFD';

/**
 * Decodes a growing list of tokens into the text they add, holding back what decodes to a trailing
 * U+FFFD: the bytes of a character not yet complete. Each push decodes only the tokens since the
 * last text let out plus the ones before that (as text-generation-inference does), so decoders
 * that change a token's text by what precedes it (SentencePiece's leading space) stay right.
 *
 * @example
 * ```ts
 * const generated: number[] = [72, 105];
 * const text = new IncrementalText((ids) => tokenizer.decode(ids));
 * for (const id of generated) process.stdout.write(text.push(id));
 * process.stdout.write(text.flush());
 * ```
 */
export class IncrementalText {
  private readonly ids: number[] = [];
  private prefix = 0;
  private read = 0;

  /**
   * An empty text.
   * @param decode - the text of token ids (e.g. `(ids) => tokenizer.decode(ids)`).
   * @example
   * ```ts
   * const text = new IncrementalText((ids) => tokenizer.decode(ids));
   * ```
   */
  constructor(private readonly decode: (ids: number[]) => string) {}

  /**
   * Adds one token.
   * @param id - the token.
   * @returns the text it completes: '' while a character is incomplete.
   * @example
   * ```ts
   * declare const text: IncrementalText;
   * const piece = text.push(105); // '' while the token ends inside a character
   * ```
   */
  push(id: number): string {
    this.ids.push(id);
    const before = this.decode(this.ids.slice(this.prefix, this.read));
    const now = this.decode(this.ids.slice(this.prefix));
    if (now.length <= before.length || now.endsWith(REPLACEMENT)) return '';
    this.prefix = this.read;
    this.read = this.ids.length;
    return now.slice(before.length);
  }

  /**
   * Ends the text: whatever was held back, an incomplete character's bytes decoded as U+FFFD.
   * @returns the rest of the text.
   * @example
   * ```ts
   * declare const text: IncrementalText;
   * process.stdout.write(text.flush());
   * ```
   */
  flush(): string {
    const before = this.decode(this.ids.slice(this.prefix, this.read));
    const now = this.decode(this.ids.slice(this.prefix));
    this.prefix = this.read = this.ids.length;
    return now.slice(before.length);
  }
}

/** A stop string found in a text. */
export interface StopHit {
  /** where the text is cut: the stop string's start */
  index: number;
  /** the stop string */
  stop: string;
}

/**
 * The stop string that a text growing from left to right reaches first: the occurrence that ends
 * first, and of two ending at one place, the longer.
 * @param text - the text.
 * @param stops - the stop strings (non-empty).
 * @param from - where to start looking.
 * @returns where the text is cut and the stop string, or undefined.
 */
export function findStop(text: string, stops: readonly string[], from = 0): StopHit | undefined {
  let best: StopHit | undefined;
  for (const stop of stops) {
    const index = text.indexOf(stop, from);
    if (index < 0) continue;
    const end = index + stop.length;
    if (!best || end < best.index + best.stop.length || (end === best.index + best.stop.length && index < best.index)) best = { index, stop };
  }
  return best;
}

/**
 * How much of the end of `text` (after `from`) could be the start of a stop string: the length of
 * its longest suffix that is a proper prefix of one of them.
 * @param text - the text.
 * @param stops - the stop strings.
 * @param from - text before this is never held back.
 * @returns that length (0: none).
 */
export function stopPrefixLength(text: string, stops: readonly string[], from = 0): number {
  const longest = Math.min(Math.max(0, ...stops.map((s) => s.length - 1)), text.length - from);
  for (let n = longest; n > 0; n--) {
    const tail = text.slice(text.length - n);
    if (stops.some((s) => s.length > n && s.startsWith(tail))) return n;
  }
  return 0;
}

/**
 * Text pieces of one sequence, for a stream: whole characters, ending before the first stop string,
 * with no part of a stop string let out. Feed it tokens; it says what to let out and when to stop.
 */
export class StopStream {
  private readonly tokens: IncrementalText;
  private text = '';
  private out = 0;
  /** the stop string reached, once one is */
  hit?: StopHit;

  /**
   * @param decode - the text of token ids.
   * @param stops - the stop strings (checked: non-empty, well-formed).
   */
  constructor(
    decode: (ids: number[]) => string,
    private readonly stops: readonly string[],
  ) {
    this.tokens = new IncrementalText(decode);
  }

  /**
   * Adds a token.
   * @param id - the token.
   * @returns the text to let out now ('' for none); after it, stop if {@link StopStream.hit} is set.
   */
  push(id: number): string {
    return this.take(this.tokens.push(id), false);
  }

  /**
   * Ends the sequence (end-of-sequence token, length): lets out what was held back.
   * @returns the rest of the text, up to a stop string if it completes one.
   */
  end(): string {
    return this.take(this.tokens.flush(), true);
  }

  private take(piece: string, last: boolean): string {
    if (this.hit) return '';
    this.text += piece;
    this.hit = findStop(this.text, this.stops, this.out);
    const upTo = this.hit ? this.hit.index : last ? this.text.length : this.text.length - stopPrefixLength(this.text, this.stops, this.out);
    const emitted = this.text.slice(this.out, upTo);
    this.out = upTo;
    return emitted;
  }
}

/**
 * Throws unless `stops` is an array of non-empty, well-formed strings.
 * @param stops - options.stopStrings as given.
 * @param op - the public function, for the message.
 * @returns the stop strings ([] when undefined).
 */
export function checkStopStrings(stops: unknown, op: string): string[] {
  if (stops === undefined) return [];
  if (!Array.isArray(stops)) throw new TypeError(`${op}: stopStrings must be an array of strings, got ${stops === null ? 'null' : typeof stops}`);
  stops.forEach((s: unknown, i) => {
    if (typeof s !== 'string') throw new TypeError(`${op}: stopStrings[${i}] must be a string, got ${s === null ? 'null' : typeof s}`);
    if (s.length === 0) throw new RangeError(`${op}: stopStrings[${i}] is empty`);
    if (/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(s)) throw new RangeError(`${op}: stopStrings[${i}] has a lone surrogate`);
  });
  return stops as string[];
}
