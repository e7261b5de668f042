// One `npuserve serve` replica with or without prefix caching under the multi-turn chat workload:
// TTFT per turn at the client and the prefix cache's hit ratio from the server's own counters
// (`npm run bench:prefix`, and the one-replica part of `npm run bench:gateway`).
import OpenAI from 'openai';

import { chatConversations, runChatWorkload, summarizeTurns, type ChatWorkloadOptions, type TurnSummary } from './chat-workload.js';
import { startServer, stopServer } from './serve-process.js';

export interface ModeResult {
  prefixCaching: boolean;
  turns: TurnSummary[];
  queriedTokens: number;
  hitTokens: number;
  seconds: number;
}

/** A counter's value for the served model in a Prometheus exposition (0 when absent). */
function counter(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`));
  return line ? Number(line.split(' ').at(-1)) : 0;
}

export async function measurePrefixCaching(modelPath: string, prefixCaching: boolean, workload: ChatWorkloadOptions, concurrency: number, threads: string[]): Promise<ModeResult> {
  const server = await startServer(modelPath, [...threads, ...(prefixCaching ? [] : ['--no-enable-prefix-caching'])]);
  try {
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 600_000 });
    const t0 = performance.now();
    const timings = await runChatWorkload(client, 'bench', chatConversations(workload), { maxTokensPerTurn: workload.maxTokensPerTurn, order: workload.order, concurrency });
    const seconds = (performance.now() - t0) / 1000;
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    return {
      prefixCaching,
      turns: summarizeTurns(timings),
      queriedTokens: counter(metrics, 'npuserve_prefix_cache_queries_total'),
      hitTokens: counter(metrics, 'npuserve_prefix_cache_hits_total'),
      seconds,
    };
  } finally {
    await stopServer(server);
  }
}

export function prefixReport(results: ModeResult[], loadAverages: number[]): string {
  const [on, off] = results;
  const lines = [
    '| prefix caching | turn | requests | prompt tokens (mean) | TTFT p50 ms | TTFT p95 ms |',
    '|---|---:|---:|---:|---:|---:|',
    ...results.flatMap((r) => r.turns.map((t) => `| ${r.prefixCaching ? 'on' : 'off'} | ${t.turn + 1} | ${t.requests} | ${t.promptTokensMean.toFixed(0)} | ${t.ttftP50Ms.toFixed(1)} | ${t.ttftP95Ms.toFixed(1)} |`)),
    '',
    `hit ratio with the cache: ${on.hitTokens} of ${on.queriedTokens} prompt tokens (${((100 * on.hitTokens) / on.queriedTokens).toFixed(1)}%); workload ${on.seconds.toFixed(1)} s with, ${off.seconds.toFixed(1)} s without`,
  ];
  for (let i = 0; i < on.turns.length; i++) {
    lines.push(`turn ${i + 1}: TTFT p50 ${(off.turns[i].ttftP50Ms / on.turns[i].ttftP50Ms).toFixed(1)}x lower with the cache, p95 ${(off.turns[i].ttftP95Ms / on.turns[i].ttftP95Ms).toFixed(1)}x`);
  }
  lines.push(`load average (1 min) before and after: ${loadAverages.map((l) => l.toFixed(2)).join(', ')}`);
  return `${lines.join('\n')}\n`;
}

