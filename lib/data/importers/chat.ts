// Chat data (JSONL of `messages` with system/user/assistant roles) to new-task records. The turns
// before the last assistant turn are rendered with a chat template (jfa's own by default) and split
// into instruction and input so that the prompt the trainer builds, "instruction\ninput\n", is
// exactly the rendered template; the last assistant turn is the output.
import { Template } from '@huggingface/jinja';

import { CHAT_TEMPLATE } from '../../model/chat-template.js';
import { DataError } from '../jsonl.js';
import type { InstanceRecord } from '../records.js';
import { importRows, type ImportResult, isObject } from './common.js';

/** Options of {@link importChat}. */
export interface ChatOptions {
  /** The records' task when a line has no string `task` field (default 'chat'). */
  task?: string;
  /** A Jinja chat template (a model's tokenizer_config.json `chat_template`); default jfa's own. */
  template?: string;
  /** The BOS token's text: given to the template, and removed from the front of the prompt (the tokenizer adds BOS itself). */
  bosToken?: string;
  /** The EOS token's text, given to the template as `eos_token` (default ''). */
  eosToken?: string;
}

const ROLES = new Set(['system', 'user', 'assistant']);

interface Message { role: string; content: string }

/** A message's text: a string, or OpenAI-style parts `[{type: 'text', text}]` joined; undefined if it has other parts. */
function contentText(content: unknown): string | undefined {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return undefined;
  const texts = content.map((p) => (isObject(p) && p.type === 'text' && typeof p.text === 'string' ? p.text : undefined));
  return texts.every((t) => t !== undefined) ? texts.join('') : undefined;
}

/**
 * Splits a rendered prompt into instruction and input with `${instruction}\n${input}\n` equal to
 * it: at the newline before the last user turn's content, or else at the prompt's last inner newline.
 */
function split(prompt: string, lastUser: string): { instruction: string; input: string } | undefined {
  if (!prompt.endsWith('\n')) return undefined;
  const at = lastUser === '' ? -1 : prompt.lastIndexOf(lastUser);
  if (at > 0 && prompt[at - 1] === '\n') return { instruction: prompt.slice(0, at - 1), input: prompt.slice(at, -1) };
  const k = prompt.lastIndexOf('\n', prompt.length - 2);
  return k < 0 ? undefined : { instruction: prompt.slice(0, k), input: prompt.slice(k + 1, -1) };
}

/**
 * Reads chat JSONL (or a JSON array): each item's `messages` is a list of `{role, content}` with
 * roles system, user and assistant, ending with an assistant turn, its output. Items with another
 * role, no user turn, turns after the last assistant turn or an empty reply are skipped and reported.
 * @param paths - the chat files (JSONL, or a JSON array of items).
 * @param options - the default task name, the chat template and its BOS/EOS token texts.
 * @returns the records (format 'chat'), the skipped items with file and line, and a count per file.
 * @throws DataError when the template does not parse, renders a prompt that does not end in a newline
 * or has no other newline to split it at, a file is unreadable or empty, or a file gives no record.
 * @example
 * ```ts
 * const { records, skipped } = importChat(['chats.jsonl'], { task: 'support' });
 * skipped.forEach((s) => console.warn(formatSkip(s)));
 * ```
 */
export function importChat(paths: readonly string[], options: ChatOptions = {}): ImportResult {
  let template: Template;
  try {
    template = new Template(options.template ?? CHAT_TEMPLATE);
  } catch (e) {
    throw new DataError([`chat template: ${(e as Error).message}`]);
  }
  const bos = options.bosToken ?? '';
  return importRows('chat', paths, (o): InstanceRecord | { problem: string } => {
    if (!Array.isArray(o.messages) || o.messages.length === 0) return { problem: o.messages === undefined ? "missing field 'messages'" : "field 'messages' must be a non-empty array" };
    const messages: Message[] = [];
    for (const [i, m] of (o.messages as unknown[]).entries()) {
      const content = isObject(m) ? contentText(m.content) : undefined;
      if (!isObject(m) || typeof m.role !== 'string' || content === undefined) return { problem: `messages[${i}] must be an object with a string 'role' and a 'content' string (or list of text parts)` };
      if (!ROLES.has(m.role)) return { problem: `messages[${i}] has role '${m.role}' (system, user or assistant)` };
      messages.push({ role: m.role, content });
    }
    const last = messages.map((m) => m.role).lastIndexOf('assistant');
    if (last < 0) return { problem: 'no assistant turn' };
    if (last < messages.length - 1) return { problem: `${messages.length - 1 - last} message(s) after the last assistant turn` };
    const output = messages[last]!.content;
    if (output.trim() === '') return { problem: 'the last assistant turn is empty' };
    const lastUser = messages.slice(0, last).filter((m) => m.role === 'user').pop();
    if (!lastUser) return { problem: 'no user turn before the last assistant turn' };
    let prompt: string;
    try {
      prompt = template.render({ messages: messages.slice(0, last), add_generation_prompt: true, bos_token: bos, eos_token: options.eosToken ?? '' });
    } catch (e) {
      return { problem: `the chat template failed: ${(e as Error).message}` };
    }
    if (bos !== '' && prompt.startsWith(bos)) prompt = prompt.slice(bos.length);
    const parts = split(prompt, lastUser.content);
    if (!parts) throw new DataError([`chat template: its prompts must end in a newline and hold another one, to fit jfa's "instruction\\ninput\\n" prompt; got ${JSON.stringify(prompt.slice(-80))}`]);
    const task = typeof o.task === 'string' && o.task.trim() !== '' ? o.task.trim() : options.task ?? 'chat';
    return { task, ...parts, output, format: 'chat' };
  });
}
