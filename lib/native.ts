// Loads the native addon and is the only module that talks to it. Order of work:
// 1. find the binary as node-gyp-build resolves it (build/Release, else the prebuild under
//    prebuilds/<platform>-<arch>/ whose tags fit this Node), or the one JFA_ADDON names, and its
//    build record; with no build/Release and a CUDA libtorch, the CUDA prebuild for that CUDA
//    version first (prebuilds/<platform>-<arch>-cuXYZ/, see prebuildFolder);
// 2. find libtorch (lib/locate.ts) and refuse one whose version differs from the build's;
// 3. open libtorch through jfa_preload, so the addon's libtorch dependencies resolve to it;
// 4. load the addon. Anything missing gives one NativeLoadError listing what was looked for and the fix.
// The addon's exports are typed in addon-types.ts.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';

import { type NativeAddon } from './addon-types.js';
import { type CodedError, ERROR_CODES } from './errors.js';
import { baseVersion, isCheckout, type LibtorchLocation, locateLibtorch, packageRoot, torchCacheVenv } from './locate.js';

export type * from './addon-types.js';

/** What scripts/build-native.mjs records beside the binary. */
export interface BuildRecord {
  torchVersion: string;
  torchCuda: boolean;
  faissVersion: string;
  platform: string;
  builtAt: string;
}

export interface LoadedNative {
  addon: NativeAddon;
  binaryPath: string;
  binaryKind: 'prebuilt' | 'source build';
  build: BuildRecord;
  libtorch: LibtorchLocation;
  loadMs: number;
}

/**
 * Thrown on first use of the native layer when the addon or libtorch cannot be loaded: the message
 * lists what was looked for and the fix; `problems` holds the same as separate lines.
 *
 * @example
 * ```ts
 * try {
 *   runtimeInfo();
 * } catch (e) {
 *   if (e instanceof NativeLoadError) console.error(e.problems.join('\n'));
 * }
 * ```
 */
export class NativeLoadError extends Error implements CodedError {
  /** always 'ERR_JFA_NATIVE_LOAD' */
  readonly code = ERROR_CODES.nativeLoad;
  /**
   * An error whose message explains the failure and the fix.
   * @param message - the whole explanation, with the fix.
   * @param problems - each place looked in and what was wrong there.
   * @example
   * ```ts
   * throw new NativeLoadError('libtorch not found', ['LIBTORCH: /opt/x does not exist']);
   * ```
   */
  constructor(
    message: string,
    readonly problems: string[],
  ) {
    super(message);
    this.name = 'NativeLoadError';
  }
}

interface BinaryCandidate {
  path: string;
  kind: LoadedNative['binaryKind'];
  dir: string;
}

// Only node-gyp-build's resolver is used, not its loader: the addon loads after libtorch is opened.
const nodeGypBuild = createRequire(import.meta.url)('node-gyp-build') as { path(dir: string): string };

/**
 * The prebuilt binary's folder under prebuilds/ for a libtorch: `<platform>-<arch>` for a CPU
 * libtorch (what node-gyp-build reads), `<platform>-<arch>-cuXYZ` for a CUDA one, XYZ from its
 * version's local tag ("2.14.1+cu130" gives `linux-x64-cu130`; a CUDA libtorch without such a tag
 * gives `-cuda`).
 * @param torchVersion - the libtorch's version, e.g. "2.13.0+cpu".
 * @param cuda - whether that libtorch has CUDA (libtorch_cuda).
 * @returns the folder name.
 * @example
 * ```ts
 * prebuildFolder('2.14.1+cu130', true); // 'linux-x64-cu130' on Linux x64
 * ```
 */
export function prebuildFolder(torchVersion: string, cuda: boolean, platform: string = process.platform, arch: string = process.arch): string {
  const base = `${platform}-${arch}`;
  if (!cuda) return base;
  const tag = /\+(cu\d+)$/.exec(torchVersion)?.[1];
  return `${base}-${tag ?? 'cuda'}`;
}

// A CUDA prebuild for the CUDA libtorch this process would find, when the package ships one and no
// source build (build/Release) takes precedence. Looks for libtorch only when a CUDA prebuild exists.
function cudaPrebuild(): BinaryCandidate | undefined {
  const prebuilds = join(packageRoot, 'prebuilds');
  if (existsSync(join(packageRoot, 'build', 'Release', 'jfa_torch.node')) || !existsSync(prebuilds)) return undefined;
  const prefix = `${process.platform}-${process.arch}-cu`;
  if (!readdirSync(prebuilds).some((d) => d.startsWith(prefix))) return undefined;
  const torch = locateLibtorch(process.env, process.cwd()).found;
  if (!torch?.cuda) return undefined;
  const dir = join(prebuilds, prebuildFolder(torch.version, true));
  const path = join(dir, 'jfa_torch.node');
  return existsSync(path) ? { path, dir, kind: 'prebuilt' } : undefined;
}

function findBinary(tried: string[]): BinaryCandidate | undefined {
  // JFA_ADDON names one jfa_torch.node to load instead (with jfa_preload.so and the build record
  // beside it): the sanitizer build in build-asan/Release, for instance.
  const override = process.env.JFA_ADDON;
  if (override) {
    const path = resolve(override);
    if (existsSync(path) && statSync(path).isFile()) return { path, dir: dirname(path), kind: 'source build' };
    tried.push(`JFA_ADDON=${override} (not a file)`);
    return undefined;
  }
  const cuda = cudaPrebuild();
  if (cuda) return cuda;
  try {
    const path = nodeGypBuild.path(packageRoot);
    const dir = dirname(path);
    return { path, dir, kind: basename(dirname(dir)) === 'prebuilds' ? 'prebuilt' : 'source build' };
  } catch (e) {
    const why = (e as Error).message.trim().split(/\s*\n\s*/).join('; ');
    tried.push(
      `${rel(join(packageRoot, 'build', 'Release'))}/*.node (missing)`,
      `${rel(join(packageRoot, 'prebuilds', `${process.platform}-${process.arch}`))}/*.node (none fits; node-gyp-build: ${why})`,
    );
    return undefined;
  }
}

const rel = (p: string): string => relative(process.cwd(), p) || '.';

/** The fix for a missing or unusable addon, for a checkout or for a project that installed the package. */
export function fixBuildHint(checkout: boolean = isCheckout()): string {
  return checkout
    ? 'Fix: in this checkout, run `npm run setup` (builds the addon).'
    : 'Fix: reinstall jfa-torch (`npm rebuild jfa-torch --build-from-source` compiles it, with LIBTORCH set).';
}

/** The fix for a missing libtorch: the command that installs torch `version` where the loader finds it. */
export function fixTorchHint(version: string | undefined, checkout: boolean = isCheckout()): string {
  if (checkout) return 'Fix: run `npm run setup` (installs torch into .venv), or set LIBTORCH to an unpacked libtorch or a torch Python package directory.';
  const v = version ? ` ${baseVersion(version)}` : '';
  const where = version ? ` into ${torchCacheVenv(version)}` : '';
  return `Fix: run \`npx jfa setup-torch\` (installs torch${v}${where} with pip), or set LIBTORCH to an unpacked libtorch${v} or a torch${v} Python package directory.`;
}

/** The binary node-gyp-build would load and its build record, without loading anything. */
export function findAddon(): { path: string; kind: LoadedNative['binaryKind']; build?: BuildRecord; tried: string[] } | undefined {
  const tried: string[] = [];
  const binary = findBinary(tried);
  return binary && { path: binary.path, kind: binary.kind, build: readBuildRecord(binary.dir), tried };
}

function readBuildRecord(dir: string): BuildRecord | undefined {
  const file = join(dir, 'jfa_torch.build.json');
  if (!existsSync(file)) return undefined;
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as BuildRecord;
  } catch {
    return undefined;
  }
}

// Dependency order: each library is opened after the ones it needs.
const TORCH_LIBRARIES = ['libc10.so', 'libtorch_cpu.so', 'libc10_cuda.so', 'libtorch_cuda.so', 'libtorch.so'];

/** Loads a Node-API module whatever its file name (require() only treats *.node as native). */
function dlopenModule<T>(path: string): T {
  const module = { exports: {} };
  process.dlopen(module, path);
  return module.exports as T;
}

function openLibtorch(binaryDir: string, libtorch: LibtorchLocation): void {
  const preload = dlopenModule<{ open(path: string): boolean }>(join(binaryDir, 'jfa_preload.so'));
  for (const name of TORCH_LIBRARIES) {
    const path = join(libtorch.libDir, name);
    if (existsSync(path)) preload.open(path);
  }
}

let loaded: LoadedNative | undefined;

/** Loads the addon once; later calls return the same result. Throws NativeLoadError. */
export function loadNative(): LoadedNative {
  if (loaded) return loaded;
  const started = performance.now();
  const tried: string[] = [];
  const binary = findBinary(tried);
  const build = binary && readBuildRecord(binary.dir);
  const torch = locateLibtorch(process.env, process.cwd(), build?.torchVersion);
  const problems: string[] = [];
  if (!binary) problems.push(`addon: not found; looked for ${tried.join(' and ')}. ${fixBuildHint()}`);
  if (!torch.found) {
    const where = torch.tried.map((t) => `${t.source} ${t.path} (${t.problem})`).join('; ');
    problems.push(`libtorch: not found; looked in ${where}. ${fixTorchHint(build?.torchVersion)}`);
  }
  if (binary && !build) problems.push(`addon: ${rel(binary.dir)}/jfa_torch.build.json is missing or unreadable. ${fixBuildHint()}`);
  if (build && torch.found && baseVersion(build.torchVersion) !== baseVersion(torch.found.version)) {
    const fix = isCheckout()
      ? `Fix: point LIBTORCH at libtorch ${baseVersion(build.torchVersion)} (e.g. \`pip install torch==${baseVersion(build.torchVersion)}\` into .venv), ` +
        `or rebuild the addon against this one with \`npm run build:native\`.`
      : `Fix: run \`npx jfa setup-torch\` (installs torch ${baseVersion(build.torchVersion)} into ${torchCacheVenv(build.torchVersion)}) ` +
        `and unset LIBTORCH/VIRTUAL_ENV if they point at this one, or set LIBTORCH to libtorch ${baseVersion(build.torchVersion)}.`;
    problems.push(
      `libtorch: the addon (${rel(binary!.path)}) was built against libtorch ${build.torchVersion}, but the libtorch found ` +
        `(${torch.found.source}: ${torch.found.root}) is ${torch.found.version}. ${fix}`,
    );
  }
  if (build?.torchCuda && torch.found && !torch.found.cuda && baseVersion(build.torchVersion) === baseVersion(torch.found.version)) {
    problems.push(
      `libtorch: the addon (${rel(binary!.path)}) was built against a CUDA libtorch (${build.torchVersion}), but the libtorch found ` +
        `(${torch.found.source}: ${torch.found.root}) is ${torch.found.version}, without libtorch_cuda.so. Fix: point LIBTORCH at a ` +
        `CUDA torch ${baseVersion(build.torchVersion)}, or rebuild the addon against this one with \`npm run build:native\`.`,
    );
  }
  if (problems.length || !binary || !build || !torch.found) {
    throw new NativeLoadError(`jfa-torch could not load its native addon:\n- ${problems.join('\n- ')}`, problems);
  }
  let addon: NativeAddon;
  try {
    openLibtorch(binary.dir, torch.found);
    addon = dlopenModule<NativeAddon>(binary.path);
  } catch (e) {
    const problem = `loading ${binary.path} with libtorch ${torch.found.version} from ${torch.found.libDir} failed: ${(e as Error).message}`;
    throw new NativeLoadError(`jfa-torch could not load its native addon:\n- ${problem}\n${fixBuildHint()}`, [problem]);
  }
  loaded = {
    addon,
    binaryPath: binary.path,
    binaryKind: binary.kind,
    build,
    libtorch: torch.found,
    loadMs: performance.now() - started,
  };
  return loaded;
}

/** The loaded addon's exports. */
export function native(): NativeAddon {
  return (loaded ?? loadNative()).addon;
}
