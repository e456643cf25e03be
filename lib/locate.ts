// Finds the native dependencies on disk: libtorch (LIBTORCH, else a project .venv's torch,
// else the active Python's torch) and the FAISS CMake package. Used by the build scripts,
// by the addon loader and by `jfa doctor`, so all three agree on what "found" means.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package's root directory (holds package.json, build/, prebuilds/, .venv/). */
export const packageRoot: string = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Where a libtorch was found, and what it is. */
export interface LibtorchLocation {
  /** Directory holding lib/ and share/cmake/ (an unpacked libtorch or a `torch` Python package). */
  root: string;
  /** the folder of libtorch_cpu.so and the other shared libraries */
  libDir: string;
  /** For CMAKE_PREFIX_PATH. */
  cmakePrefix: string;
  /** e.g. "2.13.0+cpu" */
  version: string;
  /** whether it is a CUDA build (has libtorch_cuda) */
  cuda: boolean;
  /** How it was found, e.g. "LIBTORCH" or ".venv". */
  source: string;
}

export interface Attempt {
  source: string;
  path: string;
  problem: string;
}

export interface LibtorchSearch {
  found?: LibtorchLocation;
  tried: Attempt[];
}

/** Reads the version from a torch package (version.py) or an unpacked libtorch (build-version). */
function readTorchVersion(root: string): string | undefined {
  const py = join(root, 'version.py');
  if (existsSync(py)) {
    const m = /__version__\s*=\s*['"]([^'"]+)['"]/.exec(readFileSync(py, 'utf8'));
    if (m) return m[1];
  }
  const plain = join(root, 'build-version');
  if (existsSync(plain)) return readFileSync(plain, 'utf8').trim();
  return undefined;
}

function inspect(root: string, source: string, tried: Attempt[]): LibtorchLocation | undefined {
  const libDir = join(root, 'lib');
  const problem = !existsSync(root)
    ? 'does not exist'
    : !existsSync(join(libDir, 'libtorch_cpu.so')) && !existsSync(join(libDir, 'libtorch_cpu.dylib'))
      ? 'has no lib/libtorch_cpu.so'
      : !existsSync(join(root, 'share', 'cmake', 'Torch', 'TorchConfig.cmake'))
        ? 'has no share/cmake/Torch/TorchConfig.cmake'
        : undefined;
  const version = problem ? undefined : readTorchVersion(root);
  if (problem || !version) {
    tried.push({ source, path: root, problem: problem ?? 'has no version.py or build-version' });
    return undefined;
  }
  const cuda = existsSync(join(libDir, 'libtorch_cuda.so'));
  return { root, libDir, cmakePrefix: join(root, 'share', 'cmake'), version, cuda, source };
}

/** torch package dirs inside a virtual environment (any lib/pythonX.Y). */
function venvTorchDirs(venv: string): string[] {
  const lib = join(venv, 'lib');
  if (!existsSync(lib)) return [join(lib, 'python3', 'site-packages', 'torch')];
  return readdirSync(lib)
    .filter((d) => d.startsWith('python'))
    .sort()
    .reverse()
    .map((d) => join(lib, d, 'site-packages', 'torch'));
}

/** The cache's venvs, the one for `want` first, then the others newest version first. */
function cachedVenvs(env: NodeJS.ProcessEnv, want: string | undefined): string[] {
  const dir = torchCacheDir(env);
  const wanted = want ? torchCacheVenv(want, env) : undefined;
  const found = existsSync(dir)
    ? readdirSync(dir)
        .filter((d) => d.startsWith('venv-'))
        .map((d) => join(dir, d))
        .sort((a, b) => compareVersions(basename(b).slice(5), basename(a).slice(5)))
    : [];
  if (wanted) return [wanted, ...found.filter((v) => v !== wanted)];
  return found.length ? found : [join(dir, 'venv-<version>')];
}

function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d) return d;
  }
  return 0;
}

function pythonTorchDir(python: string): string | undefined {
  // find_spec locates torch without importing it (an import takes seconds).
  const r = spawnSync(
    python,
    ['-c', "import importlib.util as u; s = u.find_spec('torch'); print(s.submodule_search_locations[0] if s else '')"],
    { encoding: 'utf8', timeout: 10_000 },
  );
  const out = r.status === 0 ? r.stdout.trim() : '';
  return out || undefined;
}

/** True when the package runs from a source checkout (not installed under some node_modules/). */
export function isCheckout(root: string = packageRoot): boolean {
  return !root.split(sep).includes('node_modules');
}

/**
 * The per-user cache where `jfa setup-torch` puts its virtual environments:
 * $JFA_TORCH_CACHE, else $XDG_CACHE_HOME/jfa-torch, else ~/.cache/jfa-torch.
 */
export function torchCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.JFA_TORCH_CACHE) return resolve(env.JFA_TORCH_CACHE);
  const base = env.XDG_CACHE_HOME ? resolve(env.XDG_CACHE_HOME) : join(env.HOME || homedir(), '.cache');
  return join(base, 'jfa-torch');
}

/** The virtual environment `jfa setup-torch` makes for torch `version` (its base part, e.g. venv-2.13.0). */
export function torchCacheVenv(version: string, env: NodeJS.ProcessEnv = process.env): string {
  return join(torchCacheDir(env), `venv-${baseVersion(version)}`);
}

/**
 * Finds libtorch. Candidates in order: LIBTORCH (alone, when set), the package's .venv, ./.venv,
 * $VIRTUAL_ENV, the `jfa setup-torch` cache (the venv for `want` if given, else the newest), then
 * the torch package of `python3` ($PYTHON).
 */
export function locateLibtorch(
  env: NodeJS.ProcessEnv = process.env,
  cwd: string = process.cwd(),
  want?: string,
): LibtorchSearch {
  const tried: Attempt[] = [];
  if (env.LIBTORCH) {
    // An explicit LIBTORCH is the only candidate: silently using another one would hide the mistake.
    const root = resolve(env.LIBTORCH);
    const nested = join(root, 'torch');
    const found =
      existsSync(join(root, 'lib')) || !existsSync(nested) ? inspect(root, 'LIBTORCH', tried) : inspect(nested, 'LIBTORCH', tried);
    return { found, tried };
  }
  const venvs: Array<[string, string]> = [[join(packageRoot, '.venv'), 'package .venv']];
  if (resolve(cwd) !== packageRoot) venvs.push([join(cwd, '.venv'), './.venv']);
  if (env.VIRTUAL_ENV) venvs.push([env.VIRTUAL_ENV, 'VIRTUAL_ENV']);
  venvs.push(...cachedVenvs(env, want).map((v): [string, string] => [v, 'setup-torch cache']));
  for (const [venv, source] of venvs) {
    if (!existsSync(venv)) {
      tried.push({ source, path: venv, problem: 'does not exist' });
      continue;
    }
    for (const dir of venvTorchDirs(venv)) {
      const found = inspect(dir, source, tried);
      if (found) return { found, tried };
    }
  }
  const fromPython = pythonTorchDir(env.PYTHON ?? 'python3');
  if (fromPython) {
    const found = inspect(fromPython, 'python3', tried);
    if (found) return { found, tried };
  } else {
    tried.push({ source: 'python3', path: env.PYTHON ?? 'python3', problem: 'has no torch package' });
  }
  return { tried };
}

export interface FaissLocation {
  /** Directory holding faiss-config.cmake. */
  cmakeDir: string;
  version: string;
}

export function locateFaiss(env: NodeJS.ProcessEnv = process.env): { found?: FaissLocation; tried: string[] } {
  const dirs = [
    env.FAISS_DIR,
    ...['/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib', '/usr/local/lib'].map(
      (d) => join(d, 'cmake', 'faiss'),
    ),
  ].filter((d): d is string => Boolean(d));
  for (const dir of dirs) {
    const config = join(dir, 'faiss-config.cmake');
    if (!existsSync(config)) continue;
    const versionFile = join(dir, 'faiss-config-version.cmake');
    const m = existsSync(versionFile) ? /PACKAGE_VERSION "([^"]+)"/.exec(readFileSync(versionFile, 'utf8')) : null;
    return { found: { cmakeDir: dir, version: m?.[1] ?? 'unknown' }, tried: dirs };
  }
  return { tried: dirs };
}

/** "2.13.0+cpu" -> "2.13.0": the part that must match between build and run time. */
export function baseVersion(version: string): string {
  return version.split('+')[0] ?? version;
}
