// `--latent auto|on|off` of `jfa eval` and `jfa generate`: whether the latent pool saved beside an
// adapter serves with it. auto uses a pool trained in 'retrieve' mode and not one trained in 'drop'
// mode (that adapter was trained to stand alone). One line on stderr says what was decided.
import { findLatentPool, LATENT_POOL_FILE, LatentPool } from '../jfa/pool.js';
import { type LlamaModel } from '../model/llama.js';

export const LATENT_CHOICES = ['auto', 'on', 'off'] as const;
export type LatentChoice = (typeof LATENT_CHOICES)[number];

/** Loads and attaches the pool in `adapterDir` when `choice` says so; a bad pool file is an error naming it. */
export function servingPool(model: LlamaModel, adapterDir: string | undefined, choice: LatentChoice): LatentPool | undefined {
  if (!adapterDir) {
    if (choice === 'on') throw new Error(`--latent on needs --adapter (a directory with ${LATENT_POOL_FILE})`);
    return undefined;
  }
  const file = findLatentPool(adapterDir);
  if (!file) {
    if (choice === 'on') throw new Error(`${adapterDir}: no ${LATENT_POOL_FILE} for --latent on`);
    console.error(`latent pool: none in ${adapterDir} (plain adapter)`);
    return undefined;
  }
  if (choice === 'off') {
    console.error(`latent pool: not used (--latent off): ${file}`);
    return undefined;
  }
  const pool = LatentPool.load(file, model);
  if (choice === 'auto' && pool.mode === 'drop') {
    pool.dispose();
    console.error(`latent pool: not used: ${file} was trained in 'drop' mode (--latent on applies it)`);
    return undefined;
  }
  const t = pool.tasks;
  console.error(`latent pool: used: ${file} (${t.groups} x ${t.perGroup} tasks, top ${t.k}, layer ${pool.layer}, ${pool.mode} mode)`);
  return pool;
}
