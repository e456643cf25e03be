import { BaseSequencer, type TestSpecification } from 'vitest/node';
import { defineConfig } from 'vitest/config';

// Files run one after another, in the order of their numbers (a lifecycle: load, tensors, ops,
// errors, memory, async, CLI, packaging). `npm test` (scripts/vitest-groups.mjs) runs most files two
// at a time instead, then the ones that may not overlap another file alone: the packaging test
// rebuilds build/ through node-gyp, the memory tests measure the process RSS, and so on.
class ByName extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    return [...files].sort((a, b) => a.moduleId.localeCompare(b.moduleId));
  }
}

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    fileParallelism: false,
    sequence: { sequencer: ByName },
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 600_000,
    globalSetup: ['test/global-setup.ts'],
  },
});
