import { BaseSequencer, type TestSpecification } from 'vitest/node';
import { defineConfig } from 'vitest/config';

// Files run one after another, in the order of their numbers (a lifecycle: load, tensors, ops,
// errors, memory, async, CLI, packaging). The packaging test rebuilds build/ through node-gyp and
// the memory tests measure the process RSS: neither may overlap another file.
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
