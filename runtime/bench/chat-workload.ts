// A multi-turn chat workload for benchmarks of prefix reuse (the engine's prefix cache here, a
// prefix-aware gateway later): a few long system prompts shared by many conversations, each
// conversation's turns sent in order with the history so far, streamed through the OpenAI chat API,
// and each turn's time to first token measured at the client.
import OpenAI from 'openai';

import { seededRandom } from '../../common/random.js';
import { CALIBRATION_PROMPTS } from '../convert/accuracy.js';
import { percentile } from './workload.js';

export interface ChatWorkloadOptions {
  /** Distinct system prompts; conversation i uses system prompt i % systemPrompts. */
  systemPrompts: number;
  /** Words per system prompt (the tokenizer makes about 1.3 tokens of a word of this text). */
  systemWords: number;
  conversations: number;
  turns: number;
  /** Words per user message (each distinct). */
  userWords: number;
  maxTokensPerTurn: number;
  /** Put in every system prompt's first words, so runs with different tags share no cached prefix. */
  tag?: string;
  /** How conversations take turns (default sequential). */
  order?: ChatOrder;
}

export const DEFAULT_CHAT_WORKLOAD: ChatWorkloadOptions = { systemPrompts: 8, systemWords: 300, conversations: 24, turns: 2, userWords: 30, maxTokensPerTurn: 24 };

export interface Conversation {
  id: number;
  system: string;
  /** One user message per turn. */
  users: string[];
  seed: number;
}

export interface TurnTiming {
  conversation: number;
  /** 0-based turn within the conversation. */
  turn: number;
  promptTokens: number;
  ttftMs: number;
  e2eMs: number;
}

/** The corpus's words from `start` on (cycling), as deterministic text of `n` words. */
function words(n: number, start: number): string {
  const corpus = CALIBRATION_PROMPTS.join(' ').split(/\s+/).filter(Boolean);
  return Array.from({ length: n }, (_, i) => corpus[(start + i * 7) % corpus.length]).join(' ');
}

export function chatConversations(o: ChatWorkloadOptions): Conversation[] {
  const systems = Array.from({ length: o.systemPrompts }, (_, s) => `You are assistant number ${s}${o.tag ? ` of run ${o.tag}` : ''}. ${words(o.systemWords, 1000 * s + 1)}`);
  return Array.from({ length: o.conversations }, (_, c) => ({
    id: c,
    system: systems[c % o.systemPrompts],
    users: Array.from({ length: o.turns }, (_, t) => `Question ${c}.${t}: ${words(o.userWords, 7919 * c + 104729 * t + 3)}`),
    seed: c,
  }));
}

/** One streamed turn: TTFT is the first chunk that carries text; the prompt's tokens come from usage. */
async function chatTurn(client: OpenAI, model: string, messages: OpenAI.Chat.ChatCompletionMessageParam[], maxTokens: number, seed: number) {
  const startMs = performance.now();
  const stream = await client.chat.completions.create({ model, messages, max_tokens: maxTokens, temperature: 1, seed, stream: true, stream_options: { include_usage: true } });
  let firstMs: number | undefined;
  let text = '';
  let promptTokens = 0;
  for await (const chunk of stream) {
    const delta = chunk.choices[0]?.delta?.content;
    if (delta) {
      firstMs ??= performance.now();
      text += delta;
    }
    if (chunk.usage) promptTokens = chunk.usage.prompt_tokens;
  }
  const endMs = performance.now();
  return { text, promptTokens, ttftMs: (firstMs ?? endMs) - startMs, e2eMs: endMs - startMs };
}

/**
 * How conversations take turns. `sequential`: each of `concurrency` users runs one conversation's
 * turns back to back, then starts the next conversation (only `concurrency` conversations are open
 * at a time). `interleaved`: every conversation is open from the start, and when a turn finishes the
 * next one to go is drawn at random (seeded) from the conversations waiting, as users who read an
 * answer and type the next question while others are served, each taking their own time: between
 * two turns of a conversation, others take theirs, and which replica a prefix-blind balancer sends
 * the next turn to is not tied to the conversation (with turns in a fixed rotation, round-robin over
 * a number of replicas that divides the conversations would send each conversation to one replica).
 */
export type ChatOrder = 'sequential' | 'interleaved';

export const CHAT_ORDERS: readonly ChatOrder[] = ['sequential', 'interleaved'];

/** One conversation's turns in order, each sent with the history so far, through `send`. */
async function converse(conv: Conversation, send: (messages: OpenAI.Chat.ChatCompletionMessageParam[], turn: number) => Promise<string>): Promise<void> {
  const messages: OpenAI.Chat.ChatCompletionMessageParam[] = [{ role: 'system', content: conv.system }];
  for (let turn = 0; turn < conv.users.length; turn++) {
    messages.push({ role: 'user', content: conv.users[turn] });
    messages.push({ role: 'assistant', content: await send([...messages], turn) });
  }
}

/** At most `slots` holders at once; a freed slot goes to a waiter drawn by `random`. */
function randomGate(slots: number, random: () => number) {
  const waiting: Array<() => void> = [];
  let free = slots;
  return {
    acquire: () => new Promise<void>((resolve) => (free > 0 ? (free--, resolve()) : waiting.push(resolve))),
    release: () => {
      if (waiting.length === 0) return void free++;
      const [next] = waiting.splice(Math.floor(random() * waiting.length), 1);
      next();
    },
  };
}

/** Runs the conversations with `concurrency` turns in flight at most, in the given order (default sequential). */
export async function runChatWorkload(client: OpenAI, model: string, conversations: readonly Conversation[], o: Pick<ChatWorkloadOptions, 'maxTokensPerTurn' | 'order'> & { concurrency: number; /** Interleaved order: the seed of the draws. */ seed?: number }): Promise<TurnTiming[]> {
  const timings: TurnTiming[] = [];
  const turnOf = (conv: Conversation) => async (messages: OpenAI.Chat.ChatCompletionMessageParam[], turn: number) => {
    const r = await chatTurn(client, model, messages, o.maxTokensPerTurn, conv.seed * 100 + turn);
    timings.push({ conversation: conv.id, turn, promptTokens: r.promptTokens, ttftMs: r.ttftMs, e2eMs: r.e2eMs });
    return r.text;
  };
  if (o.order === 'interleaved') {
    const gate = randomGate(o.concurrency, seededRandom(o.seed ?? 1));
    await Promise.all(conversations.map((conv) => {
      const send = turnOf(conv);
      return converse(conv, async (messages, turn) => {
        await gate.acquire();
        try {
          return await send(messages, turn);
        } finally {
          gate.release();
        }
      });
    }));
    return timings;
  }
  let next = 0;
  const user = async () => {
    for (let c = next++; c < conversations.length; c = next++) await converse(conversations[c], turnOf(conversations[c]));
  };
  await Promise.all(Array.from({ length: o.concurrency }, user));
  return timings;
}

export interface TurnSummary {
  turn: number;
  requests: number;
  promptTokensMean: number;
  ttftP50Ms: number;
  ttftP95Ms: number;
}

export function summarizeTurns(timings: readonly TurnTiming[]): TurnSummary[] {
  const turns = [...new Set(timings.map((t) => t.turn))].sort((a, b) => a - b);
  return turns.map((turn) => {
    const of = timings.filter((t) => t.turn === turn);
    return {
      turn,
      requests: of.length,
      promptTokensMean: of.reduce((n, t) => n + t.promptTokens, 0) / of.length,
      ttftP50Ms: percentile(of.map((t) => t.ttftMs), 50),
      ttftP95Ms: percentile(of.map((t) => t.ttftMs), 95),
    };
  });
}
