#!/usr/bin/env node
// `npm run prebuild`: prebuildify drives node-gyp, whose binding.gyp runs the one CMake build;
// the result lands in prebuilds/<platform>-<arch>/ with the preload module and the build record.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const env = { ...process.env };
// Node's own headers ship with Debian's nodejs; without this node-gyp tries to download them.
if (!env.npm_config_nodedir && existsSync('/usr/include/node/node_api.h')) env.npm_config_nodedir = '/usr';
const nodeGyp = require.resolve('node-gyp/bin/node-gyp.js');

const r = spawnSync(
  process.execPath,
  [require.resolve('prebuildify/bin.js'), '--napi', '--strip', '--node-gyp', nodeGyp],
  { stdio: 'inherit', cwd: root, env },
);
if (r.status !== 0) {
  console.error(`prebuild: prebuildify exited with ${r.status ?? r.signal}`);
  process.exit(1);
}
// prebuildify moves the addon and copies the *.so beside it; the build record travels with them,
// and the checkout's build/Release gets its addon back.
const out = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
copyFileSync(join(root, 'build', 'Release', 'jfa_torch.build.json'), join(out, 'jfa_torch.build.json'));
copyFileSync(join(root, 'build-cmake', 'Release', 'jfa_torch.node'), join(root, 'build', 'Release', 'jfa_torch.node'));
console.log(`prebuild: ${out}`);
