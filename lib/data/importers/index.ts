// Importers from the paper's published dataset formats to jfa's JSONL records, by format name.
import { type ChatOptions, importChat } from './chat.js';
import type { ImportResult } from './common.js';
import { importArc, importBbh, importGsm8k, importMmluPro, importSvamp, type OldImportOptions } from './old.js';
import { importSuperNi, type SuperNiOptions } from './superni.js';

export { type ChatOptions, importChat } from './chat.js';
export { elementLines, type FileCount, formatSkip, type ImportResult, type Skip, summary as importSummary } from './common.js';
export { drawFlashbacks, type FlashbackDrawOptions, suiteOf } from './flashbacks.js';
export { importArc, importBbh, importGsm8k, importMmluPro, importSvamp, type OldImportOptions } from './old.js';
export { parseTaskList, splitByTask, type TaskSplit } from './split.js';
export { importSuperNi, type SuperNiOptions, superNiTaskName } from './superni.js';

/** The formats `jfa data import --format` reads. */
export const IMPORT_FORMATS = ['superni', 'gsm8k', 'svamp', 'arc', 'mmlu-pro', 'bbh', 'chat'] as const;
/** One of {@link IMPORT_FORMATS}: a format {@link importFiles} reads. */
export type ImportFormat = (typeof IMPORT_FORMATS)[number];

/** Options of {@link importFiles}: each format reads the ones that apply to it. */
export type ImportOptions = OldImportOptions & SuperNiOptions & ChatOptions;

/**
 * Imports files of one published format into records (see the format's own importer for its fields).
 * Items that cannot be used are skipped and listed in the result with file and line.
 * @param format - the published format of every file.
 * @param paths - the input files, at least one.
 * @param options - the format's options (task name; SuperNI's cap, examples and seed; chat's template and tokens).
 * @returns the records, the skipped items with file and line, a count per file, and notes.
 * @throws DataError when a file is unreadable, empty or not in the format, or nothing is imported.
 * @throws RangeError when `paths` is empty, the format is unknown, or a SuperNI option is not a non-negative integer.
 * @example
 * ```ts
 * const { records, skipped } = importFiles('gsm8k', ['gsm8k-test.jsonl']);
 * writeJsonl('old-gsm8k-eval.jsonl', records);
 * ```
 */
export function importFiles(format: ImportFormat, paths: readonly string[], options: ImportOptions = {}): ImportResult {
  if (paths.length === 0) throw new RangeError('importFiles: no input files');
  switch (format) {
    case 'superni': return importSuperNi(paths, options);
    case 'gsm8k': return importGsm8k(paths, options);
    case 'svamp': return importSvamp(paths, options);
    case 'arc': return importArc(paths, options);
    case 'mmlu-pro': return importMmluPro(paths, options);
    case 'bbh': return importBbh(paths, options);
    case 'chat': return importChat(paths, options);
    default: throw new RangeError(`unknown format '${String(format)}' (known: ${IMPORT_FORMATS.join(', ')})`);
  }
}
