// `npuserve serve`: its flags (defaults shared with the NPUModel spec) and the server's configuration
// made from them, checked for combinations that cannot work before anything loads.
import { writeFileSync } from 'node:fs';
import { basename } from 'node:path';

import { SPEC_DEFAULTS } from '../common/defaults.js';
import { UsageError } from '../common/errors.js';
import { choiceFlag, type FlagValues, intFlag, stringFlag } from '../common/flags.js';
import { createLogger, logFlags, logFormatOf, logLevelOf } from '../common/log.js';
import type { ServeConfig } from '../runtime/server/main.js';
import { type Command } from './command.js';
import { ENGINE_FLAGS, int8Activations, threads } from './model-commands.js';

const { maxBatchSize, maxSeqLen, maxWaitingRequests, kvCacheDtype } = SPEC_DEFAULTS.runtime;

/** The server's configuration from serve's flags and the environment (the API key's Secret arrives there). */
export function serveConfig(f: FlagValues): ServeConfig {
  const modelPath = stringFlag(f, 'model')!;
  const batch = intFlag(f, 'max-batch-size', 1)!;
  const seqLen = intFlag(f, 'max-seq-len', 2)!;
  const maxNumBatchedTokens = intFlag(f, 'max-num-batched-tokens', 1) ?? Math.max(256, batch);
  if (maxNumBatchedTokens < batch) throw new UsageError(`--max-num-batched-tokens ${maxNumBatchedTokens} must be at least --max-batch-size ${batch} (every running sequence decodes a token per step)`);
  const kvCacheTokens = intFlag(f, 'kv-cache-tokens', 1) ?? batch * seqLen;
  if (kvCacheTokens < seqLen) throw new UsageError(`--kv-cache-tokens ${kvCacheTokens} must hold at least one sequence of --max-seq-len ${seqLen}`);
  const port = intFlag(f, 'port', 0)!;
  if (port > 65535) throw new UsageError(`--port must be at most 65535, got ${port}`);
  const apiKey = stringFlag(f, 'api-key');
  if (apiKey !== undefined && apiKey.trim() === '') throw new UsageError(`--api-key / NPUSERVE_API_KEY is set but empty; set a key or unset it to serve without one`);
  if (f['protect-metrics'] && apiKey === undefined) throw new UsageError('--protect-metrics needs an API key (--api-key or NPUSERVE_API_KEY)');
  return {
    modelPath,
    servedModelName: stringFlag(f, 'served-model-name') ?? basename(modelPath).replace(/\.npu$/, ''),
    host: stringFlag(f, 'host')!,
    port,
    maxBatchSize: batch,
    maxSeqLen: seqLen,
    maxWaitingRequests: intFlag(f, 'max-waiting-requests', 1)!,
    maxNumBatchedTokens,
    kvCacheTokens,
    kvCacheDtype: choiceFlag(f, 'kv-cache-dtype', ['f16', 'f32'] as const)!,
    prefixCaching: f['enable-prefix-caching'] === true,
    memoryBudgetBytes: intFlag(f, 'memory-budget-bytes', 1),
    threads: threads(f),
    kernel: stringFlag(f, 'kernel'),
    int8Activations: int8Activations(f),
    scheduler: choiceFlag(f, 'scheduler', ['continuous', 'fixed'] as const)!,
    batchTimeoutMs: intFlag(f, 'batch-timeout-ms', 0)!,
    drainTimeoutSeconds: intFlag(f, 'drain-timeout-seconds', 0)!,
    bodyLimitBytes: intFlag(f, 'max-body-bytes', 1024)!,
    apiKey: apiKey?.trim(),
    protectMetrics: f['protect-metrics'] === true,
    templateLimits: { timeoutMs: intFlag(f, 'chat-template-timeout-ms', 10)!, heapMb: intFlag(f, 'chat-template-heap-mb', 16)! },
  };
}

export const serve: Command = {
  spec: {
    name: 'npuserve serve',
    summary: 'Serves a .npu model over an OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions) with /healthz, /readyz and /metrics.',
    flags: [
      { name: 'model', value: 'X.npu', required: true, description: 'the converted model file' },
      { name: 'port', value: 'N', default: String(SPEC_DEFAULTS.service.port), description: 'listen port (0: any free port)' },
      { name: 'host', value: 'ADDR', env: 'NPUSERVE_BIND_ADDRESS', default: '0.0.0.0', description: 'listen address' },
      { name: 'served-model-name', value: 'NAME', defaultText: 'file name without .npu', description: 'the `model` clients must send' },
      { name: 'max-batch-size', value: 'N', default: String(maxBatchSize), description: 'sequences decoded together in one step' },
      { name: 'max-seq-len', value: 'N', default: String(maxSeqLen), description: 'longest prompt + completion in tokens' },
      { name: 'max-waiting-requests', value: 'N', default: String(maxWaitingRequests), description: 'queue beyond the batch; more get 429' },
      { name: 'max-num-batched-tokens', value: 'N', defaultText: 'max(256, --max-batch-size)', description: 'tokens per engine step (prefill chunk size)' },
      { name: 'kv-cache-tokens', value: 'N', defaultText: '--max-batch-size x --max-seq-len', description: 'KV cache capacity; admission waits when it is full' },
      { name: 'kv-cache-dtype', value: 'f16|f32', default: kvCacheDtype, description: 'KV cache element type; f32 doubles its memory' },
      {
        name: 'enable-prefix-caching',
        negatable: true,
        description: "keep full KV blocks and reuse them for prompts that start with the same tokens (a shared system prompt, a conversation's earlier turns): their prefill is skipped",
      },
      { name: 'memory-budget-bytes', value: 'N', defaultText: 'the memory limit (cgroup) less the weights and the runtime, else half of RAM', description: 'what the KV cache and RoPE tables may take; a larger cache is refused at load, before it is allocated (the weights come on top)' },
      ...ENGINE_FLAGS,
      { name: 'drain-timeout-seconds', value: 'N', default: '30', description: 'after SIGTERM: stop accepting, finish running requests for at most this long' },
      { name: 'scheduler', value: 'continuous|fixed', default: 'continuous', description: '`fixed` is the baseline that waits for a full batch or --batch-timeout-ms' },
      { name: 'batch-timeout-ms', value: 'N', default: '100', description: 'the fixed scheduler: longest wait for a full batch' },
      // A 4 MiB prompt fits in its JSON body, so it gets its context-length 400 rather than a 413.
      { name: 'max-body-bytes', value: 'N', default: String(8 * 2 ** 20), description: 'largest request body, counted after inflating Content-Encoding; more get 413' },
      // The environment is how a Secret reaches the pod (a flag would show the key in the process list).
      { name: 'api-key', value: 'KEY', env: 'NPUSERVE_API_KEY', defaultText: 'none: no key', description: 'every route but /healthz, /readyz (and /metrics) needs Authorization: Bearer KEY' },
      { name: 'protect-metrics', description: '/metrics needs the API key too' },
      { name: 'chat-template-timeout-ms', value: 'N', default: '1000', description: 'longest one chat template render may take' },
      { name: 'chat-template-heap-mb', value: 'N', default: '64', description: 'V8 heap of the chat template renderer process' },
      { name: 'termination-log', value: 'PATH', description: "write the error that stops the server to this file (a Kubernetes container's termination message)" },
      ...logFlags('text'),
    ],
  },
  async run(f) {
    const config = serveConfig(f);
    const log = createLogger({ format: logFormatOf(stringFlag(f, 'log-format')!), level: logLevelOf(stringFlag(f, 'log-level')!) });
    // The server's modules (express, prom-client) load only for this command.
    const { serve: runServer } = await import('../runtime/server/main.js');
    const terminationLog = stringFlag(f, 'termination-log');
    try {
      return await runServer(config, log);
    } catch (e) {
      if (terminationLog) writeFileSync(terminationLog, (e as Error).message.slice(0, 4000));
      throw e;
    }
  },
};
