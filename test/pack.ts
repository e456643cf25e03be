// The packed package, made once per vitest run and shared by the files that install it (test/08,
// test/26): `npm run prebuild`, then `npm pack` into the run's directory (test/global-setup.ts).
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { inject } from 'vitest';

import { root } from './helpers.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** a directory that lives as long as the vitest run */
    runDir: string;
  }
}

export function sh(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = process.env, timeout = 600_000): string {
  const r = spawnSync(cmd, args, { cwd, env, encoding: 'utf8', timeout });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status ?? r.signal}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** The path of the tarball `npm pack` made of this checkout (with its prebuilt binary), made on first use in a run. */
export function packedTarball(): string {
  const record = join(inject('runDir'), 'packed.json');
  if (existsSync(record)) return (JSON.parse(readFileSync(record, 'utf8')) as { tarball: string }).tarball;
  const prebuilds = join(root, 'prebuilds');
  const hadPrebuilds = existsSync(prebuilds);
  sh('npm', ['run', 'prebuild'], root);
  const packed = JSON.parse(sh('npm', ['pack', '--json', '--pack-destination', inject('runDir')], root)) as Array<{ filename: string }>;
  const tarball = join(inject('runDir'), packed[0]!.filename);
  // The checkout keeps loading build/Release unless prebuilds were there before.
  if (!hadPrebuilds) rmSync(prebuilds, { recursive: true, force: true });
  writeFileSync(record, JSON.stringify({ tarball }));
  return tarball;
}
