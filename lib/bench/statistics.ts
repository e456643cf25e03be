// The statistics the harness reports: a mean and a sample standard deviation, over seeds or suites.

/** The arithmetic mean (NaN for no values). */
export const mean = (xs: number[]): number => xs.reduce((s, x) => s + x, 0) / xs.length;

/** The sample standard deviation (n - 1); 0 for fewer than two values. */
export const sd = (xs: number[]): number => (xs.length < 2 ? 0 : Math.sqrt(xs.reduce((s, x) => s + (x - mean(xs)) ** 2, 0) / (xs.length - 1)));
