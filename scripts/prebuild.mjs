#!/usr/bin/env node
// `npm run prebuild`: prebuildify drives node-gyp, whose binding.gyp runs the one CMake build;
// the result lands in prebuilds/<platform>-<arch>/ with the preload module and the build record.
// Built against a CUDA libtorch (LIBTORCH or the venv it finds), it lands in
// prebuilds/<platform>-<arch>-cuXYZ/ instead (lib/native.ts prebuildFolder), beside the CPU one,
// which the loader takes only with a CUDA libtorch of that CUDA version.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const env = { ...process.env };
// Node's own headers ship with Debian's nodejs; without this node-gyp tries to download them.
if (!env.npm_config_nodedir && existsSync('/usr/include/node/node_api.h')) env.npm_config_nodedir = '/usr';
const nodeGyp = require.resolve('node-gyp/bin/node-gyp.js');
const out = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
// prebuildify always writes prebuilds/<platform>-<arch>: a CPU prebuild there is set aside meanwhile.
const aside = `${out}.cpu-aside`;
if (existsSync(out)) {
  rmSync(aside, { recursive: true, force: true });
  renameSync(out, aside);
}
const restore = () => {
  if (!existsSync(aside)) return;
  rmSync(out, { recursive: true, force: true });
  renameSync(aside, out);
};

const r = spawnSync(
  process.execPath,
  [require.resolve('prebuildify/bin.js'), '--napi', '--strip', '--node-gyp', nodeGyp],
  { stdio: 'inherit', cwd: root, env },
);
if (r.status !== 0) {
  restore();
  console.error(`prebuild: prebuildify exited with ${r.status ?? r.signal}`);
  process.exit(1);
}
// prebuildify moves the addon and copies the *.so beside it; the build record travels with them,
// and the checkout's build/Release gets its addon back.
copyFileSync(join(root, 'build', 'Release', 'jfa_torch.build.json'), join(out, 'jfa_torch.build.json'));
copyFileSync(join(root, 'build-cmake', 'Release', 'jfa_torch.node'), join(root, 'build', 'Release', 'jfa_torch.node'));
const record = JSON.parse(readFileSync(join(out, 'jfa_torch.build.json'), 'utf8'));
let dest = out;
if (record.torchCuda) {
  const { prebuildFolder } = await import('../dist/native.js');
  dest = join(root, 'prebuilds', prebuildFolder(record.torchVersion, true));
  rmSync(dest, { recursive: true, force: true });
  renameSync(out, dest);
  restore();
} else {
  rmSync(aside, { recursive: true, force: true }); // replaced by the new CPU prebuild
}
console.log(`prebuild: ${dest} (libtorch ${record.torchVersion})`);
