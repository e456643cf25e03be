// `jfa setup-torch` (and `jfa doctor --fix`): one line per step, a one-line reason on failure.
import { setupTorch, SetupTorchError } from '../setup-torch.js';

export function runSetupTorch(o: { python?: string; force?: boolean; quiet?: boolean } = {}): void {
  const started = Date.now();
  try {
    const r = setupTorch({ python: o.python, force: o.force, onStep: o.quiet ? undefined : (line) => console.log(`setup-torch ${line}`) });
    if (!o.quiet)
      console.log(`setup-torch: ${r.installed ? 'installed' : 'already had'} torch ${r.version} in ${r.venv} (${((Date.now() - started) / 1000).toFixed(0)} s)`);
  } catch (e) {
    if (!(e instanceof SetupTorchError)) throw e;
    console.error(e.message);
    process.exitCode = 1;
  }
}
