// Progress on stderr for long work: a bar on a terminal, one line per tenth of the work otherwise,
// nothing with --json. The total is learned from the first update.
import { SingleBar } from 'cli-progress';

export interface Progress {
  update(done: number, total: number, fields?: Record<string, string>): void;
  stop(): void;
}

const info = (fields: Record<string, string>) => Object.entries(fields).map(([k, v]) => `${k} ${v}`).join('  ');

export function progress(label: string, quiet: boolean): Progress {
  if (quiet) return { update: () => {}, stop: () => {} };
  if (!process.stderr.isTTY) {
    let shown = -1;
    return {
      update(done, total, fields = {}) {
        const tenth = Math.floor((10 * done) / total);
        if (tenth === shown && done !== total) return;
        shown = tenth;
        process.stderr.write(`${label} ${done}/${total}  ${info(fields)}\n`);
      },
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
    stop: () => bar?.stop(),
  };
}
