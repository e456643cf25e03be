// Public surface of lib/data: the generated benchmark, JSONL I/O and metrics.
export { createRng, hashString, type Rng } from './rng.js';
export { type FlashbackRecord, type InstanceRecord, type OldRecord, promptKey } from './records.js';
export { OLD_SUITES, OLD_SUITE_NAMES, type OldGenerator, type OldSuiteName } from './old-tasks.js';
export { HELD_OUT_FAMILIES, instances, newTasks, splitTasks, taskFamily, type NewTask } from './new-tasks.js';
export { checkRecords, DataError, MAX_LINE_BYTES, parseJsonl, readJsonl, type ReadJsonlOptions, writeJsonl, type RecordKind } from './jsonl.js';
export { readJsonlStream } from './jsonl-stream.js';
export { accuracy, answerKind, exactMatch, extractAnswer, isCorrect, newTaskScores, optionText, rougeL, tokenize, type AnswerKind } from './metrics.js';
export { generateSuite, sampleFlashbacks, suiteFiles, writeSuite, type Suite, type SuiteOptions } from './suite.js';
export { generalSkills, IN_CONTEXT_SKILLS, NAMED_SKILLS, SKILL_NAMES, skillRecord } from './skills.js';
export { PROBE_NAMES, PROBE_SEED, PROBES, type ProbeName, probeRecords } from './probes.js';
export { createStream, type RecordStream, type StreamMix, type StreamOptions, type StreamPhase } from './stream.js';
export { corpusBleu, sentenceBleu, answerKindOf, autoScores, FORMAT_SCORING, type FormatScores, type ScoredFormat } from './metrics.js';
export { ARITH_INSTRUCTION, CHOICE_INSTRUCTION, LOGIC_INSTRUCTION, OPTION_LETTERS, optionBlock } from './old-tasks.js';
export * from './importers/index.js';
