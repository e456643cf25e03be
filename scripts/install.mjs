#!/usr/bin/env node
// npm's install hook. A prebuilt binary for this platform means there is nothing to compile; "fits"
// is decided by node-gyp-build, the resolver lib/native.ts loads the addon with.
// In a checkout (not under node_modules) `npm run setup` builds the addon instead, so a plain
// `npm install` there does not need libtorch yet. Otherwise build from source through node-gyp,
// whose binding.gyp hands over to the CMake build (needs libtorch, FAISS and a C++ toolchain).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const fromSource = ['true', '1'].includes(String(process.env.npm_config_build_from_source));

function fittingPrebuild() {
  // PREBUILDS_ONLY (read when node-gyp-build is loaded): a leftover build/ must not count as a prebuild.
  const before = process.env.PREBUILDS_ONLY;
  process.env.PREBUILDS_ONLY = '1';
  try {
    return createRequire(import.meta.url)('node-gyp-build').path(root);
  } catch {
    return undefined; // "No native build was found for platform=... abi=... libc=..."
  } finally {
    if (before === undefined) delete process.env.PREBUILDS_ONLY;
    else process.env.PREBUILDS_ONLY = before;
  }
}
const prebuilt = fromSource ? undefined : fittingPrebuild();
if (prebuilt) {
  console.log(`jfa-torch: using the prebuilt binary ${prebuilt}`);
  process.exit(0);
}
if (process.env.JFA_SKIP_INSTALL_BUILD || !root.split(sep).includes('node_modules')) {
  console.log('jfa-torch: checkout detected; `npm run setup` builds the addon');
  process.exit(0);
}
console.log(
  fromSource
    ? 'jfa-torch: --build-from-source; building from source'
    : `jfa-torch: no prebuilt binary fits ${process.platform}-${process.arch}; building from source`,
);
const gyp = process.env.npm_config_node_gyp;
const [cmd, args] = gyp ? [process.execPath, [gyp, 'rebuild']] : ['node-gyp', ['rebuild']];
const nodedir = existsSync('/usr/include/node/node_api.h') && !process.env.npm_config_nodedir ? { npm_config_nodedir: '/usr' } : {};
const r = spawnSync(cmd, args, { stdio: 'inherit', cwd: root, env: { ...process.env, ...nodedir } });
if (r.status !== 0) {
  console.error('jfa-torch: building from source failed. It needs libtorch (set LIBTORCH), FAISS (libfaiss-dev), nlohmann-json (nlohmann-json3-dev) and cmake + g++.');
  process.exit(1);
}
