// Files written so that a crash never leaves a half-written one under the final name.
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { basename, dirname, join } from 'node:path';

/** Writes to a temporary name beside `path`, fsyncs, then renames over `path`. */
export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    const fd = openSync(tmp, 'w');
    try {
      writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}

/** A text file's contents; an error says "PATH: cannot read (ENOENT)". */
export function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new Error(`${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

/** Parses a JSON file, naming the file in any error. */
export function readJson<T = unknown>(path: string): T {
  const text = readText(path);
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new Error(`${path}: not valid JSON (${(e as Error).message})`);
  }
}

/** An errno code of a failed file operation ('ENOSPC', ...), or the message when there is none. */
export function errnoOf(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? (e as Error).message;
}

/**
 * Puts the finished folder `tmp` in place of `dir`: `dir` is renamed to `dir.old`, `tmp` to `dir`,
 * then `dir.old` is removed. A process killed at any moment leaves `dir`, or `dir.old` (between the
 * two renames), complete.
 */
export function replaceDir(tmp: string, dir: string): void {
  // A `dir.old` with no `dir` is the complete folder a kill left between the two renames: keep it
  // as `dir` rather than delete it (the new one replaces it below all the same).
  if (!existsSync(dir) && existsSync(`${dir}.old`)) renameSync(`${dir}.old`, dir);
  removeDir(`${dir}.old`);
  if (existsSync(dir)) renameSync(dir, `${dir}.old`);
  renameSync(tmp, dir);
  removeDir(`${dir}.old`);
}

/**
 * Removes a folder so that a process killed meanwhile never leaves a half-deleted one under its
 * name: it is renamed to `<dir>.trash-<pid>` first (atomic), then deleted. Trash left by a kill
 * (of a folder that was being removed anyway) is deleted too.
 */
export function removeDir(dir: string): void {
  const parent = dirname(dir);
  const prefix = `${basename(dir)}.trash-`;
  let names: string[] = [];
  try {
    names = readdirSync(parent);
  } catch {
    return; // no parent: nothing to remove
  }
  for (const name of names) if (name.startsWith(prefix)) rmSync(join(parent, name), { recursive: true, force: true });
  if (!existsSync(dir)) return;
  const trash = `${dir}.trash-${process.pid}`;
  renameSync(dir, trash);
  rmSync(trash, { recursive: true, force: true });
}

/** What a lock file holds: who writes to the folder. */
interface LockOwner {
  pid: number;
  host: string;
  /** the process's start time in clock ticks since boot (Linux), to tell a reused pid apart */
  startTicks?: number;
  since: string;
  command: string;
}

/** The lock file that marks an output folder as in use. */
export const LOCK_FILE = '.jfa.lock';

function startTicks(pid: number): number | undefined {
  try {
    // Field 22 of /proc/<pid>/stat, counted after the command name's closing parenthesis.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
  } catch {
    return undefined;
  }
}

/** Whether the process that wrote `owner` still runs (on another host: assumed so, it cannot be checked). */
function ownerAlive(owner: LockOwner): boolean {
  if (owner.host !== hostname()) return true;
  try {
    process.kill(owner.pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return false;
  }
  const ticks = startTicks(owner.pid);
  return owner.startTicks === undefined || ticks === undefined || ticks === owner.startTicks;
}

/**
 * An output folder held for one run. acquire() creates the folder if needed and a lock file in it;
 * a second run on the same folder is refused while the first lives, and a lock left by a dead
 * process is taken over. Errors name the folder: a file in its place, a folder that cannot be
 * created or written to, a live owner.
 */
export class OutputFolder implements Disposable {
  private released = false;

  private constructor(
    readonly dir: string,
    /** true when acquire() created the folder (it may then be removed again by discardIfEmpty) */
    readonly created: boolean,
  ) {}

  static acquire(dir: string, what: string): OutputFolder {
    if (existsSync(dir) && !statSync(dir).isDirectory()) throw new Error(`${what}: the output folder ${dir} is a file, not a folder`);
    const created = !existsSync(dir);
    try {
      mkdirSync(dir, { recursive: true });
    } catch (e) {
      let code = errnoOf(e);
      // Node's recursive mkdir says ENOENT for a read-only parent: ask once more without recursion for the real cause.
      if (code === 'ENOENT' && existsSync(dirname(dir))) {
        try {
          mkdirSync(dir);
        } catch (again) {
          code = errnoOf(again);
        }
      }
      throw new Error(
        code === 'ENOTDIR' || code === 'EEXIST'
          ? `${what}: cannot create the output folder ${dir}: a part of its path is a file, not a folder (${code})`
          : `${what}: cannot write to the output folder ${dir} (${code})`,
      );
    }
    const folder = new OutputFolder(dir, created);
    try {
      folder.lock(what);
    } catch (e) {
      if (created) rmSync(dir, { recursive: true, force: true });
      throw e;
    }
    return folder;
  }

  private lock(what: string): void {
    const file = join(this.dir, LOCK_FILE);
    const me: LockOwner = { pid: process.pid, host: hostname(), startTicks: startTicks(process.pid), since: new Date().toISOString(), command: process.argv.slice(1).join(' ') };
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const fd = openSync(file, 'wx');
        try {
          writeSync(fd, `${JSON.stringify(me)}\n`);
        } finally {
          closeSync(fd);
        }
        return;
      } catch (e) {
        const code = errnoOf(e);
        if (code !== 'EEXIST') throw new Error(`${what}: cannot write to the output folder ${this.dir} (${code})`);
      }
      let seen = '';
      let owner: LockOwner | undefined;
      try {
        seen = readFileSync(file, 'utf8');
        owner = JSON.parse(seen) as LockOwner;
      } catch {
        // Gone, being written right now (a fresh empty file), or cut short by a crash long ago.
        owner = undefined;
        if (seen === '' && existsSync(file) && Date.now() - statSync(file).mtimeMs < 5000)
          throw new Error(`${what}: the output folder ${this.dir} is being taken by another run (${file} was just created)`);
      }
      if (owner && typeof owner.pid === 'number' && ownerAlive(owner))
        throw new Error(
          `${what}: the output folder ${this.dir} is in use by another run (pid ${owner.pid} on ${owner.host}, since ${owner.since}). ` +
            `Wait for it, or choose another folder; if that process is gone, delete ${file}.`,
        );
      // A stale lock: remove it, unless another run replaced it meanwhile, and try again.
      try {
        if (readFileSync(file, 'utf8') === seen) rmSync(file, { force: true });
      } catch {
        // already gone: the next attempt decides
      }
    }
    throw new Error(`${what}: cannot take the lock ${file}: other runs keep taking it`);
  }

  /** Removes the folder when this run created it and `keep` (what would be worth keeping) is absent. */
  discardIfEmpty(keep: string[]): void {
    if (this.created && !keep.some((name) => existsSync(join(this.dir, name)))) rmSync(this.dir, { recursive: true, force: true });
  }

  /** Removes the lock file (if it is still this process's). */
  release(): void {
    if (this.released) return;
    this.released = true;
    const file = join(this.dir, LOCK_FILE);
    try {
      const owner = JSON.parse(readFileSync(file, 'utf8')) as LockOwner;
      if (owner.pid === process.pid && owner.host === hostname()) rmSync(file, { force: true });
    } catch {
      // no lock left (the folder was discarded) or not readable: nothing to release
    }
  }

  [Symbol.dispose](): void {
    this.release();
  }
}

/**
 * Runs `fn` holding the output folder `dir` (see OutputFolder): when `fn` fails and the folder was
 * created for it, the folder is removed unless it holds one of `keep` (what is worth keeping, such as
 * a checkpoint to resume from). The lock is released either way.
 */
export async function inOutputFolder<T>(dir: string, what: string, keep: string[], fn: () => Promise<T>): Promise<T> {
  const folder = OutputFolder.acquire(dir, what);
  try {
    return await fn();
  } catch (e) {
    folder.discardIfEmpty(keep);
    throw e;
  } finally {
    folder.release();
  }
}
