// `jfa setup-torch`: gives a project that installed jfa-torch the libtorch its addon was built
// against, without touching the project: pip installs that torch (for its shared libraries only,
// hence --no-deps) into a virtual environment in the per-user cache, where lib/locate.ts looks.
import { spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { baseVersion, type LibtorchLocation, locateLibtorch, packageRoot, torchCacheDir, torchCacheVenv } from './locate.js';
import { findAddon } from './native.js';

/**
 * The torch version this package needs: the one the addon was built against (its build record),
 * else the pin in scripts/python-requirements.txt (a package that has no addon yet builds against it).
 * @returns the version, e.g. "2.13.0+cpu".
 * @throws Error when neither is readable.
 * @example
 * ```ts
 * pinnedTorchVersion(); // '2.13.0+cpu'
 * ```
 */
export function pinnedTorchVersion(): string {
  const built = findAddon()?.build?.torchVersion;
  if (built) return built;
  const file = join(packageRoot, 'scripts', 'python-requirements.txt');
  const m = existsSync(file) ? /^torch==(\S+)/m.exec(readFileSync(file, 'utf8')) : null;
  if (!m?.[1]) throw new Error(`setup-torch: no addon build record and no torch==X pin in ${file}`);
  return m[1];
}

/** What a Python interpreter offers for installing torch (inspectPython). */
export interface PythonInfo {
  /** the command or path that was run */
  python: string;
  /** absolute path of the interpreter, when it ran */
  executable?: string;
  /** its version, e.g. "3.11.2", when it ran */
  version?: string;
  /** the venv module and ensurepip (Debian: python3-venv) are there */
  venv: boolean;
  /** pip is importable by this interpreter (used when ensurepip is missing) */
  pip: boolean;
  /** where its own torch package is, if it has one */
  torch?: string;
}

/**
 * What `python` (default $PYTHON, else python3) offers for installing torch. Never throws: a Python
 * that does not run reads as one with nothing.
 * @param python - the interpreter's command or path.
 * @returns its path, version, whether it has venv/ensurepip and pip, and where its torch is.
 * @example
 * ```ts
 * const py = inspectPython();
 * if (!py.venv) console.log('apt-get install python3-venv');
 * ```
 */
export function inspectPython(python: string = process.env.PYTHON ?? 'python3'): PythonInfo {
  const code = [
    'import importlib.util as u, json, sys',
    'has = lambda m: u.find_spec(m) is not None',
    "t = u.find_spec('torch')",
    "print(json.dumps({'executable': sys.executable, 'version': '.'.join(map(str, sys.version_info[:3])),",
    "  'venv': has('venv') and has('ensurepip'), 'pip': has('pip'), 'torch': t.submodule_search_locations[0] if t else None}))",
  ].join('\n');
  const r = spawnSync(python, ['-c', code], { encoding: 'utf8', timeout: 20_000 });
  if (r.status !== 0) return { python, venv: false, pip: false };
  try {
    const o = JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as Omit<PythonInfo, 'python'> & { torch: string | null };
    return { python, executable: o.executable, version: o.version, venv: o.venv, pip: o.pip, torch: o.torch ?? undefined };
  } catch {
    return { python, venv: false, pip: false };
  }
}

/** Options of setupTorch. */
export interface SetupTorchOptions {
  /** torch version to install (default: pinnedTorchVersion(), e.g. "2.13.0+cpu") */
  version?: string;
  /** Python to create the virtual environment with (default $PYTHON, else python3) */
  python?: string;
  /** extra pip flags (default: $JFA_PIP_ARGS split on spaces, else `--retries 1 --timeout 15`) */
  pipArgs?: string[];
  /** reinstall torch even when the right one is there */
  force?: boolean;
  /** environment for pip and the lookups (default process.env; pip honours PIP_INDEX_URL and the rest) */
  env?: NodeJS.ProcessEnv;
  /** one line per step */
  onStep?: (line: string) => void;
}

/** What setupTorch did and what the loader finds afterwards. */
export interface SetupTorchResult {
  /** the virtual environment torch is in */
  venv: string;
  /** the torch version installed (or found) there */
  version: string;
  /** false when the right torch was there already */
  installed: boolean;
  /** what the loader finds now */
  libtorch: LibtorchLocation;
  /** pip's output */
  logFile: string;
}

/** A failed step of setupTorch: `step` says which, the message says what to do. */
export class SetupTorchError extends Error {
  /**
   * A failed step of setupTorch.
   * @param step - the step that failed ('python', 'venv', 'pip', 'check').
   * @param message - what happened and how to fix it.
   * @example
   * ```ts
   * throw new SetupTorchError('pip', 'pip could not find torch==2.13.0+cpu: set PIP_EXTRA_INDEX_URL');
   * ```
   */
  constructor(
    /** the step that failed */
    readonly step: string,
    message: string,
  ) {
    super(message);
    this.name = 'SetupTorchError';
  }
}

/** The pip requirement for a build version: its local tag ("+cpu") is kept, so the variant matches too. */
export function torchRequirement(version: string): string {
  return `torch==${version}`;
}

function venvTorchVersion(venv: string): string | undefined {
  const lib = join(venv, 'lib');
  if (!existsSync(lib)) return undefined;
  for (const d of readdirSyncSafe(lib)) {
    const file = join(lib, d, 'site-packages', 'torch', 'version.py');
    // Both files: a pip run cut short may leave one without the other.
    if (!existsSync(file) || !existsSync(join(lib, d, 'site-packages', 'torch', 'lib', 'libtorch_cpu.so'))) continue;
    const m = /__version__\s*=\s*['"]([^'"]+)['"]/.exec(readFileSync(file, 'utf8'));
    if (m) return m[1];
  }
  return undefined;
}

function readdirSyncSafe(dir: string): string[] {
  try {
    return readdirSync(dir).filter((d) => d.startsWith('python'));
  } catch {
    return []; // unreadable reads as "no torch there"
  }
}

/**
 * Installs torch `version` into `<cache>/venv-<version>` ($JFA_TORCH_CACHE, else
 * $XDG_CACHE_HOME/jfa-torch, else ~/.cache/jfa-torch) with pip, where the addon loader finds it.
 * Idempotent: a venv that already holds that torch is left as it is (unless `force`).
 * @param o - version, python, pip flags, force, env, and onStep for one progress line per step.
 * @returns the venv, the version, whether it installed anything, and the libtorch the loader now finds.
 * @throws SetupTorchError naming the step that failed and the fix.
 * @example
 * ```ts
 * const r = setupTorch({ onStep: (line) => console.log(line) });
 * console.log(r.libtorch.libDir);
 * ```
 */
export function setupTorch(o: SetupTorchOptions = {}): SetupTorchResult {
  const env = o.env ?? process.env;
  const say = o.onStep ?? (() => {});
  const version = o.version ?? pinnedTorchVersion();
  const venv = torchCacheVenv(version, env);
  const cache = torchCacheDir(env);
  const logFile = join(cache, 'setup-torch.log');
  const pipArgs = o.pipArgs ?? (env.JFA_PIP_ARGS ?? '--retries 1 --timeout 15').split(/\s+/).filter(Boolean);
  const venvPython = join(venv, 'bin', 'python');
  const log = (text: string) => appendFileSync(logFile, text);
  mkdirSync(cache, { recursive: true });
  log(`\n== ${new Date().toISOString()} setup-torch ${version} into ${venv}\n`);

  const have = existsSync(venvPython) ? venvTorchVersion(venv) : undefined;
  const ready = have !== undefined && baseVersion(have) === baseVersion(version) && !o.force;

  let base: PythonInfo | undefined;
  if (ready) say(`[1/4] python: not needed (the venv exists)`);
  else {
    base = inspectPython(o.python ?? env.PYTHON ?? 'python3');
    if (!base.executable)
      throw new SetupTorchError(
        'python',
        `setup-torch: cannot run ${base.python}. Fix: install Python 3 with its venv module (Debian/Ubuntu: apt-get install python3 python3-venv) ` +
          `or point PYTHON at one, then run \`npx jfa setup-torch\` again; or download libtorch ${baseVersion(version)} (CPU, cxx11 ABI) from https://pytorch.org and set LIBTORCH to it.`,
      );
    if (!base.venv && !base.pip)
      throw new SetupTorchError(
        'python',
        `setup-torch: ${base.executable} (${base.version}) has neither the venv module with ensurepip nor pip. ` +
          'Fix: apt-get install python3-venv (Debian/Ubuntu), or point PYTHON at another Python 3, then run `npx jfa setup-torch` again.',
      );
    say(`[1/4] python: ${base.executable} ${base.version}`);
  }

  if (existsSync(venvPython)) say(`[2/4] venv: ${venv} (exists)`);
  else {
    say(`[2/4] venv: creating ${venv}`);
    // Without ensurepip (Debian's python3 without python3-venv) the venv gets no pip of its own
    // and the base Python's pip installs into it (pip --python).
    const args = ['-m', 'venv', ...(base!.venv ? [] : ['--without-pip']), venv];
    const r = spawnSync(base!.executable!, args, { encoding: 'utf8', env });
    log(`$ ${base!.executable} ${args.join(' ')}\n${r.stdout ?? ''}${r.stderr ?? ''}`);
    if (r.status !== 0)
      throw new SetupTorchError('venv', `setup-torch: \`${base!.executable} ${args.join(' ')}\` failed (${r.status ?? r.signal}): ${lastLine(r.stderr)}. Log: ${logFile}`);
  }

  if (ready) say(`[3/4] pip: torch ${have} is installed already`);
  else {
    const requirement = torchRequirement(version);
    say(`[3/4] pip: installing ${requirement} (several hundred MB; pip's output goes to ${logFile})`);
    const ownPip = spawnSync(venvPython, ['-c', 'import pip'], { stdio: 'ignore' }).status === 0;
    const pip = ownPip ? [venvPython, '-m', 'pip'] : [base!.executable!, '-m', 'pip', '--python', venvPython];
    // --no-deps: only the shared libraries under torch/lib are used, never `import torch`.
    const args = [...pip.slice(1), 'install', '--disable-pip-version-check', '--no-input', '-q', '--no-deps', ...(o.force ? ['--force-reinstall'] : []), ...pipArgs, requirement];
    const r = spawnSync(pip[0]!, args, { encoding: 'utf8', env, maxBuffer: 64 << 20 });
    log(`$ ${pip[0]} ${args.join(' ')}\n${r.stdout ?? ''}${r.stderr ?? ''}`);
    if (r.status !== 0) {
      const notFound = /No matching distribution|Could not find a version/.test(r.stderr ?? '');
      const hint = notFound
        ? ` pip's indexes have no ${requirement}. Its CPU builds are on PyTorch's own index: ` +
          `PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/${version.includes('+') ? version.split('+')[1] : 'cpu'} npx jfa setup-torch`
        : ' Check the network or the pip index settings (PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, pip.conf), then run it again.';
      throw new SetupTorchError('pip', `setup-torch: pip install ${requirement} failed (${r.status ?? r.signal}): ${lastLine(r.stderr)}.${hint} Log: ${logFile}`);
    }
  }

  const found = locateLibtorch(env, process.cwd(), version);
  const where = found.found;
  if (!where || baseVersion(where.version) !== baseVersion(version))
    throw new SetupTorchError(
      'check',
      `setup-torch: torch is in ${venv}, but the loader finds ${where ? `${where.version} at ${where.root} (${where.source})` : 'no libtorch'}. ` +
        'Fix: unset LIBTORCH/VIRTUAL_ENV if they point at another torch.',
    );
  const shadow = where.source !== 'setup-torch cache' ? ` (from ${where.source}, which comes first; same version)` : '';
  say(`[4/4] check: the loader finds libtorch ${where.version} at ${where.libDir}${shadow}`);
  return { venv, version, installed: !ready, libtorch: where, logFile };
}

function lastLine(text: string | undefined): string {
  const lines = (text ?? '').trim().split('\n').filter((l) => l.trim() && !/^\s*(WARNING|Retrying)/.test(l));
  return lines.pop()?.trim() ?? 'no output';
}
