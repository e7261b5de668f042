// `npm run bench:prefix`: one `npuserve serve` replica with and without prefix caching under the same
// multi-turn chat workload (8 long system prompts shared by the conversations): time to first token
// per turn, client-side, and the prefix cache's hit ratio from the server's own counters.
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';

import { type CommandSpec, type FlagValues, intFlag, runScript, stringFlag } from '../../common/flags.js';
import { DEFAULT_CHAT_WORKLOAD, type ChatWorkloadOptions } from './chat-workload.js';
import { measurePrefixCaching, prefixReport, type ModeResult } from './prefix-modes.js';
import { defaultModel } from './serve-process.js';

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
    results.push(await measurePrefixCaching(modelPath, prefixCaching, workload, concurrency, threads));
  }
  loadAverages.push(loadavg()[0]);
  process.stdout.write(prefixReport(results, loadAverages));
  const outDir = stringFlag(f, 'out')!;
  mkdirSync(outDir, { recursive: true });
  const json = join(outDir, 'prefix.json');
  writeFileSync(json, `${JSON.stringify({ createdAt: new Date().toISOString(), modelPath, workload, concurrency, loadAverages, results }, null, 2)}\n`);
  console.error(`wrote ${json}`);
}

void runScript(COMMAND, main);
