import OpenAI from 'openai';
import { describe, expect, it } from 'vitest';

import { chatConversations, runChatWorkload, type ChatOrder } from './chat-workload.js';

interface Seen {
  seed: number;
  messages: Array<{ role: string; content: string }>;
}

/**
 * The official client over a stand-in server: each request streams one chunk naming its seed after
 * a delay that differs by request, then usage; the requests are recorded in the order they start.
 */
function standIn(delayMs: (seed: number) => number = (seed) => 2 + ((seed * 7) % 5) * 3) {
  const started: Seen[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const fetcher: typeof fetch = async (_input, init) => {
    const body = JSON.parse(String(init!.body)) as Seen;
    started.push({ seed: body.seed, messages: body.messages });
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    await new Promise((r) => setTimeout(r, delayMs(body.seed)));
    inFlight--;
    const chunk = (o: object) => `data: ${JSON.stringify({ id: 'x', object: 'chat.completion.chunk', created: 0, model: 'm', ...o })}\n\n`;
    const sse = chunk({ choices: [{ index: 0, delta: { content: `answer ${body.seed}` }, finish_reason: null }] }) + chunk({ choices: [], usage: { prompt_tokens: body.messages.length, completion_tokens: 1, total_tokens: body.messages.length + 1 } }) + 'data: [DONE]\n\n';
    return new Response(sse, { headers: { 'content-type': 'text/event-stream' } });
  };
  const client = new OpenAI({ baseURL: 'http://stand-in/v1', apiKey: 'x', maxRetries: 0, fetch: fetcher });
  return { client, started, maxInFlight: () => maxInFlight };
}

const WORKLOAD = { systemPrompts: 3, systemWords: 5, conversations: 7, turns: 3, userWords: 4, maxTokensPerTurn: 2 };

async function run(order: ChatOrder) {
  const s = standIn();
  const timings = await runChatWorkload(s.client, 'm', chatConversations(WORKLOAD), { maxTokensPerTurn: 2, concurrency: 2, order });
  // seed = conversation * 100 + turn
  return { ...s, timings, starts: s.started.map((r) => ({ conversation: Math.floor(r.seed / 100), turn: r.seed % 100, messages: r.messages })) };
}

describe('runChatWorkload', () => {
  for (const order of ['sequential', 'interleaved'] as const) {
    it(`${order}: every turn once, with the conversation's history and its own earlier answers, at most \`concurrency\` at once`, async () => {
      const r = await run(order);
      expect(r.maxInFlight()).toBe(2);
      expect(r.timings).toHaveLength(WORKLOAD.conversations * WORKLOAD.turns);
      const conversations = chatConversations(WORKLOAD);
      for (const { conversation, turn, messages } of r.starts) {
        const conv = conversations[conversation];
        const expected = [{ role: 'system', content: conv.system }];
        for (let t = 0; t < turn; t++) expected.push({ role: 'user', content: conv.users[t] }, { role: 'assistant', content: `answer ${conversation * 100 + t}` });
        expected.push({ role: 'user', content: conv.users[turn] });
        expect(messages).toEqual(expected);
      }
      // A timing per (conversation, turn), with the prompt size the usage chunk reported.
      expect(new Set(r.timings.map((t) => `${t.conversation}.${t.turn}`)).size).toBe(r.timings.length);
      for (const t of r.timings) expect(t.promptTokens).toBe(2 * t.turn + 2);
    });
  }

  it('sequential: a conversation runs its turns back to back, only `concurrency` conversations open', async () => {
    const { starts } = await run('sequential');
    // Conversation 2 starts only after conversation 0 or 1 has sent its last turn.
    const firstOf2 = starts.findIndex((s) => s.conversation === 2);
    const lastTurns = starts.map((s, i) => (s.turn === WORKLOAD.turns - 1 && s.conversation < 2 ? i : -1)).filter((i) => i >= 0);
    expect(Math.min(...lastTurns)).toBeLessThan(firstOf2);
    // The first turn of the last conversation comes after some second turns.
    expect(starts.findIndex((s) => s.turn === 1)).toBeLessThan(starts.findIndex((s) => s.conversation === WORKLOAD.conversations - 1));
  });

  it('interleaved: all conversations open at once, the next turn drawn from the waiting ones by the seed', async () => {
    const order = async (seed: number) => {
      const s = standIn(() => 0);
      await runChatWorkload(s.client, 'm', chatConversations(WORKLOAD), { maxTokensPerTurn: 2, concurrency: 1, order: 'interleaved', seed });
      return s.started.map((r) => r.seed);
    };
    const [a, again, b] = [await order(1), await order(1), await order(2)];
    expect(again).toEqual(a);
    expect(b).not.toEqual(a);
    // Conversations open at once (first turn sent, last not yet): one at a time in sequential order.
    const open = (starts: number[]) => {
      let most = 0;
      const live = new Set<number>();
      for (const seed of starts) {
        const [conversation, turn] = [Math.floor(seed / 100), seed % 100];
        if (turn === 0) live.add(conversation);
        most = Math.max(most, live.size);
        if (turn === WORKLOAD.turns - 1) live.delete(conversation);
      }
      return most;
    };
    expect(open(a)).toBeGreaterThanOrEqual(5);
    expect(open(b)).toBeGreaterThanOrEqual(5);
    const s = standIn(() => 0);
    await runChatWorkload(s.client, 'm', chatConversations(WORKLOAD), { maxTokensPerTurn: 2, concurrency: 1, order: 'sequential' });
    expect(open(s.started.map((r) => r.seed))).toBe(1);
    // Not a fixed rotation: a conversation's next turn does not come a fixed number of turns later.
    const gaps = new Set<number>();
    for (let c = 0; c < WORKLOAD.conversations; c++) {
      const at = a.map((seed, i) => (Math.floor(seed / 100) === c ? i : -1)).filter((i) => i >= 0);
      for (let t = 1; t < at.length; t++) gaps.add(at[t] - at[t - 1]);
    }
    expect(gaps.size).toBeGreaterThan(3);
  });
});
