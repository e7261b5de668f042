// `npuserve chat`: a conversation with a model in the terminal. Each line read is a user message;
// the whole conversation is rendered with the model's chat template and the answer is streamed as
// it is generated. Works the same when stdin is a pipe (one message per line).
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';

import { ChatTemplate, type ChatMessage } from './chat.js';
import type { Engine } from './engine.js';
import { generate } from './generate.js';
import { StreamDecoder, Tokenizer } from './tokenizer.js';

export interface ChatTerminalOptions {
  input: Readable;
  output: Writable;
  /** Prompt and answer together stay within this many tokens (the engine's max-seq-len). */
  maxSeqLen: number;
  maxTokens: number;
  temperature: number;
  topP: number;
  seed: number;
  system?: string;
  /** Show a "> " prompt before each message (on a terminal). */
  interactive: boolean;
}

/** Runs the conversation until the input ends; returns the messages exchanged. */
export async function chatInTerminal(engine: Engine, o: ChatTerminalOptions): Promise<ChatMessage[]> {
  const tokenizer = new Tokenizer(engine.metadata.tokenizer);
  const template = new ChatTemplate(tokenizer);
  const messages: ChatMessage[] = o.system ? [{ role: 'system', content: o.system }] : [];
  const lines = createInterface({ input: o.input, terminal: false });
  const ask = () => o.interactive && o.output.write('> ');
  ask();
  for await (const line of lines) {
    if (line.trim() === '') {
      ask();
      continue;
    }
    messages.push({ role: 'user', content: line });
    const prompt = template.encode(messages);
    const room = o.maxSeqLen - prompt.length;
    if (room < 1) throw new Error(`the conversation is ${prompt.length} tokens, it no longer fits the ${o.maxSeqLen}-token context (--max-seq-len)`);
    const decoder = new StreamDecoder(tokenizer);
    let answer = '';
    const show = (text: string) => {
      answer += text;
      o.output.write(text);
    };
    await generate(engine, prompt, {
      maxTokens: Math.min(o.maxTokens, room),
      temperature: o.temperature,
      topP: o.topP,
      seed: o.seed,
      onToken: (token) => show(decoder.push([token])),
    });
    show(decoder.flush());
    o.output.write('\n');
    messages.push({ role: 'assistant', content: answer });
    ask();
  }
  return messages;
}
