// Public surface of lib/data: the generated benchmark, JSONL I/O and metrics.
export { createRng, hashString, type Rng } from './rng.js';
export type { FlashbackRecord, InstanceRecord, OldRecord } from './records.js';
export { OLD_SUITES, OLD_SUITE_NAMES, type OldGenerator, type OldSuiteName } from './old-tasks.js';
export { HELD_OUT_FAMILIES, instances, newTasks, splitTasks, type NewTask } from './new-tasks.js';
export { DataError, parseJsonl, readJsonl, writeJsonl, type RecordKind } from './jsonl.js';
export { accuracy, answerKind, exactMatch, extractAnswer, isCorrect, newTaskScores, rougeL, tokenize, type AnswerKind } from './metrics.js';
export { generateSuite, sampleFlashbacks, suiteFiles, writeSuite, type Suite, type SuiteOptions } from './suite.js';
export { generalSkills, SKILL_NAMES } from './skills.js';
