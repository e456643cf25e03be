#!/usr/bin/env node
// npm's install hook. A prebuilt binary for this platform means there is nothing to compile.
// In a checkout (not under node_modules) `npm run setup` builds the addon instead, so a plain
// `npm install` there does not need libtorch yet. Otherwise build from source through node-gyp,
// whose binding.gyp hands over to the CMake build (needs libtorch, FAISS and a C++ toolchain).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const prebuilt = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
const fromSource = ['true', '1'].includes(String(process.env.npm_config_build_from_source));

if (!fromSource && existsSync(prebuilt) && readdirSync(prebuilt).some((f) => f.endsWith('.node'))) {
  console.log(`jfa-torch: using the prebuilt binary in ${prebuilt}`);
  process.exit(0);
}
if (process.env.JFA_SKIP_INSTALL_BUILD || !root.split(sep).includes('node_modules')) {
  console.log('jfa-torch: checkout detected; `npm run setup` builds the addon');
  process.exit(0);
}
console.log(`jfa-torch: no prebuilt binary for ${process.platform}-${process.arch}; building from source`);
const gyp = process.env.npm_config_node_gyp;
const [cmd, args] = gyp ? [process.execPath, [gyp, 'rebuild']] : ['node-gyp', ['rebuild']];
const nodedir = existsSync('/usr/include/node/node_api.h') && !process.env.npm_config_nodedir ? { npm_config_nodedir: '/usr' } : {};
const r = spawnSync(cmd, args, { stdio: 'inherit', cwd: root, env: { ...process.env, ...nodedir } });
if (r.status !== 0) {
  console.error('jfa-torch: building from source failed. It needs libtorch (set LIBTORCH), FAISS (libfaiss-dev), nlohmann-json (nlohmann-json3-dev) and cmake + g++.');
  process.exit(1);
}
