// libgomp's wait policy, chosen before libtorch loads (lib/omp.ts): passive when another process is
// running at start, libgomp's defaults when none is, and the user's own setting always wins.
import { describe, expect, it } from 'vitest';
import { chooseOmpPolicy, otherRunnable } from '../lib/omp.js';

describe("libgomp's wait policy", () => {
  it('passive on shared cores, the defaults on idle ones; the user and JFA_OMP_AUTO=0 win', () => {
    expect(chooseOmpPolicy({}, 1, 2).set).toEqual({ OMP_WAIT_POLICY: 'passive' });
    expect(chooseOmpPolicy({}, 3, 2).set).toEqual({ OMP_WAIT_POLICY: 'passive' });
    expect(chooseOmpPolicy({}, 0, 2).set).toEqual({});
    expect(chooseOmpPolicy({}, null, 2).set).toEqual({});
    expect(chooseOmpPolicy({ OMP_WAIT_POLICY: 'active' }, 3, 2)).toEqual({ set: {}, reason: 'OMP_WAIT_POLICY=active (set by you)' });
    expect(chooseOmpPolicy({ GOMP_SPINCOUNT: '1000' }, 3, 2).set).toEqual({});
    expect(chooseOmpPolicy({ JFA_OMP_AUTO: '0' }, 3, 2).set).toEqual({});
    expect(chooseOmpPolicy({}, 1, 2).reason).toBe('OMP_WAIT_POLICY=passive: the cores are shared (1 other process running at start, 2 cores)');
  });

  it("counts the other runnable processes from /proc/loadavg, the median of five reads, without this one", () => {
    const reads = ['0.5 0.4 0.3 3/120 99', '0.5 0.4 0.3 1/120 99', '0.5 0.4 0.3 3/120 99', '0.5 0.4 0.3 2/120 99', '0.5 0.4 0.3 9/120 99'];
    let i = 0;
    expect(otherRunnable(() => reads[i++]!)).toBe(2);
    expect(otherRunnable(() => '0.1 0.1 0.1 1/80 5')).toBe(0);
    expect(otherRunnable(() => 'garbage')).toBeNull();
    expect(otherRunnable(() => { throw new Error('ENOENT'); })).toBeNull();
  });
});
