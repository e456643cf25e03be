// Progress on stderr for long work: a bar on a terminal, one line per tenth of the work otherwise,
// nothing with --json. The total is learned from the first update.
import { SingleBar } from 'cli-progress';

export interface Progress {
  update(done: number, total: number, fields?: Record<string, string>): void;
  /** a line of its own above the bar (or among the lines), e.g. an evaluation's scores */
  note(line: string): void;
  stop(): void;
}

const info = (fields: Record<string, string>) => Object.entries(fields).map(([k, v]) => `${k} ${v}`).join('  ');

export function progress(label: string, quiet: boolean): Progress {
  if (quiet) return { update: () => {}, note: () => {}, stop: () => {} };
  if (!process.stderr.isTTY) {
    let shown = -1;
    return {
      update(done, total, fields = {}) {
        // the last tenth is shown once, however often the end is updated
        const tenth = Math.floor((10 * done) / total);
        if (tenth === shown) return;
        shown = tenth;
        process.stderr.write(`${label} ${done}/${total}  ${info(fields)}\n`);
      },
      note: (line) => void process.stderr.write(`${line}\n`),
      stop: () => {},
    };
  }
  let bar: SingleBar | undefined;
  return {
    update(done, total, fields = {}) {
      if (!bar) {
        bar = new SingleBar({ format: `${label} [{bar}] {value}/{total}  {info}  eta {eta_formatted}`, stream: process.stderr, hideCursor: true });
        bar.start(total, 0, { info: '' });
      }
      bar.update(done, { info: info(fields) });
    },
    note(line) {
      // over the bar's line; the bar draws itself again below on its next update
      process.stderr.write(`\r\x1b[K${line}\n`);
      bar?.render();
    },
    stop: () => bar?.stop(),
  };
}
