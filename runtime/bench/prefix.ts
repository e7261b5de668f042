// `npm run bench:prefix`: one `npuserve serve` replica with and without prefix caching under the same
// multi-turn chat workload (8 long system prompts shared by the conversations): time to first token
// per turn, client-side, and the prefix cache's hit ratio from the server's own counters.
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';

import OpenAI from 'openai';

import { type CommandSpec, type FlagValues, intFlag, runScript, stringFlag } from '../../common/flags.js';
import { chatConversations, DEFAULT_CHAT_WORKLOAD, runChatWorkload, summarizeTurns, type ChatWorkloadOptions, type TurnSummary } from './chat-workload.js';
import { defaultModel, startServer, stopServer } from './serve-process.js';

interface ModeResult {
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

async function measure(modelPath: string, prefixCaching: boolean, workload: ChatWorkloadOptions, concurrency: number, threads: string[]): Promise<ModeResult> {
  const server = await startServer(modelPath, [...threads, ...(prefixCaching ? [] : ['--no-enable-prefix-caching'])]);
  try {
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 600_000 });
    const t0 = performance.now();
    const timings = await runChatWorkload(client, 'bench', chatConversations(workload), { maxTokensPerTurn: workload.maxTokensPerTurn, concurrency });
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

function report(results: ModeResult[], loadAverages: number[]): string {
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

const COMMAND: CommandSpec = {
  name: 'npm run bench:prefix --',
  summary: 'One serve replica with and without prefix caching under a multi-turn chat workload with shared system prompts: TTFT per turn and the hit ratio.',
  flags: [
    { name: 'model', value: 'X.npu', defaultText: 'the 100m test model at INT8 (made once)', description: 'the model to serve' },
    { name: 'conversations', value: 'N', default: String(DEFAULT_CHAT_WORKLOAD.conversations), description: 'conversations (system prompt i % 8 each)' },
    { name: 'turns', value: 'N', default: String(DEFAULT_CHAT_WORKLOAD.turns), description: 'turns per conversation' },
    { name: 'concurrency', value: 'N', default: '2', description: 'conversations in flight at once' },
    { name: 'threads', value: 'N', defaultText: "serve's default", description: 'engine threads of the server' },
    { name: 'out', value: 'DIR', default: 'bench-results', description: 'folder of prefix.json' },
  ],
};

async function main(f: FlagValues): Promise<void> {
  const modelPath = stringFlag(f, 'model') ?? (await defaultModel());
  const workload: ChatWorkloadOptions = { ...DEFAULT_CHAT_WORKLOAD, conversations: intFlag(f, 'conversations', 1)!, turns: intFlag(f, 'turns', 2)! };
  const concurrency = intFlag(f, 'concurrency', 1)!;
  const threads = stringFlag(f, 'threads') === undefined ? [] : ['--threads', String(intFlag(f, 'threads', 1))];
  const loadAverages = [loadavg()[0]];
  const results: ModeResult[] = [];
  for (const prefixCaching of [true, false]) {
    console.error(`bench:prefix: ${workload.conversations} conversations of ${workload.turns} turns, prefix caching ${prefixCaching ? 'on' : 'off'}`);
    results.push(await measure(modelPath, prefixCaching, workload, concurrency, threads));
  }
  loadAverages.push(loadavg()[0]);
  process.stdout.write(report(results, loadAverages));
  const outDir = stringFlag(f, 'out')!;
  mkdirSync(outDir, { recursive: true });
  const json = join(outDir, 'prefix.json');
  writeFileSync(json, `${JSON.stringify({ createdAt: new Date().toISOString(), modelPath, workload, concurrency, loadAverages, results }, null, 2)}\n`);
  console.error(`wrote ${json}`);
}

void runScript(COMMAND, main);
