// `npuserve serve`: listens at once (so /healthz answers while loading), loads and warms the model,
// then serves until SIGTERM or SIGINT, when it drains: /readyz and new requests get 503, requests in
// flight finish (up to the drain timeout), and the process exits 0.
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

import type { Logger } from '../../common/log.js';
import { describeServingMemory, limitMebibytes, servingMemory, type KvCacheDtype } from '../../common/serving-memory.js';
import { cgroupLimits } from '../cgroup.js';
import { templateSpec } from '../chat.js';
import { SandboxedChatTemplate, type TemplateLimits } from '../chat-sandbox.js';
import { Engine, type EngineOptions, type Int8Activations } from '../engine.js';
import { readNpuFile } from '../format.js';
import { modelFootprint } from '../model-config.js';
import { ServerMetrics } from '../metrics.js';
import { Scheduler, type SchedulerOptions, type SchedulerPolicy } from '../scheduler.js';
import { Tokenizer } from '../tokenizer.js';
import { PromptEncoder } from '../tokenizer/encoder.js';
import { createApp } from './app.js';
import { ApiError, answerClientErrors } from './errors.js';
import { failInFlight, type ServingState } from './openai.js';

export interface ServeConfig {
  modelPath: string;
  servedModelName: string;
  host: string;
  port: number;
  maxBatchSize: number;
  maxSeqLen: number;
  maxWaitingRequests: number;
  maxNumBatchedTokens: number;
  kvCacheTokens: number;
  kvCacheDtype: KvCacheDtype;
  /** Automatic prefix caching in the engine (`--enable-prefix-caching`, on by default). */
  prefixCaching: boolean;
  /** What the KV cache and RoPE tables may take (default: the memory limit less the weights and the runtime, else the engine's, half of RAM). */
  memoryBudgetBytes?: number;
  threads: number;
  kernel?: string;
  /** INT8 models' activations (the engine's default, int16, when absent). */
  int8Activations?: Int8Activations;
  scheduler: SchedulerPolicy;
  batchTimeoutMs: number;
  drainTimeoutSeconds: number;
  bodyLimitBytes: number;
  /** Bearer key every route but health (and metrics, unless protectMetrics) requires; none: open. */
  apiKey?: string;
  protectMetrics: boolean;
  templateLimits: TemplateLimits;
}

export async function serve(config: ServeConfig, log: Logger): Promise<number> {
  const state: ServingState = { servedModelName: config.servedModelName, createdSeconds: Math.floor(Date.now() / 1000), phase: 'loading', inFlight: new Set() };
  const metrics = new ServerMetrics(config.servedModelName);
  metrics.setMaxBatchSize(config.maxBatchSize);
  const app = createApp({ state, metrics, bodyLimitBytes: config.bodyLimitBytes, apiKey: config.apiKey, protectMetrics: config.protectMetrics, log });
  const server = answerClientErrors(app.listen(config.port, config.host));
  await new Promise<void>((resolve, reject) => server.once('listening', resolve).once('error', reject));
  const { address, port } = server.address() as AddressInfo;
  log(`listening on http://${address.includes(':') ? `[${address}]` : address}:${port} (loading ${config.modelPath}; ${config.apiKey ? `API key required${config.protectMetrics ? ', /metrics too' : ''}` : 'no API key'})`);

  let stopSignal: (signal: string) => void = () => {};
  const stopped = new Promise<string>((resolve) => (stopSignal = resolve));
  const onSignal = (signal: NodeJS.Signals) => {
    if (state.phase !== 'draining') log(`${signal}: draining (readiness off, new requests refused)`);
    state.phase = 'draining';
    stopSignal(signal);
  };
  process.on('SIGTERM', onSignal).on('SIGINT', onSignal);

  try {
    const scheduler = await load(config, state, metrics, log);
    await stopped;
    await drain(scheduler, state, config.drainTimeoutSeconds, log);
  } finally {
    process.off('SIGTERM', onSignal).off('SIGINT', onSignal);
    await close(server);
    await state.model?.encoder.close();
    await state.model?.chatTemplate.close();
  }
  log('stopped');
  return 0;
}

/** Loads the engine, runs one warm-up step and opens the OpenAI routes (unless already draining). */
async function load(config: ServeConfig, state: ServingState, metrics: ServerMetrics, log: Logger): Promise<Scheduler> {
  // Checked even with an explicit budget: a limit below the weights and the cache cannot be served.
  const budgetUnderLimit = memoryBudgetWithin(config, cgroupLimits().memoryLimitBytes);
  const memoryBudgetBytes = config.memoryBudgetBytes ?? budgetUnderLimit;
  const engine = await Engine.load(config.modelPath, engineOptions(config, memoryBudgetBytes));
  const meta = engine.metadata;
  if (config.maxSeqLen > meta.config.maxPositionEmbeddings) {
    throw new Error(`--max-seq-len ${config.maxSeqLen} is longer than the model's ${meta.config.maxPositionEmbeddings} positions`);
  }
  const tokenizer = new Tokenizer(meta.tokenizer);
  const chatTemplate = await SandboxedChatTemplate.start(templateSpec(tokenizer), config.templateLimits);
  const encoder = new PromptEncoder(meta.tokenizer);
  await encoder.ready;
  const warmup = engine.createSequence();
  await engine.step([{ sequence: warmup, tokens: await encoder.encode('Hello') }]);
  engine.releaseSequence(warmup);

  const scheduler = new Scheduler(engine, { ...schedulerOptions(config), observer: metrics });
  const info = engine.info;
  metrics.setEngine({ backend: 'cpu', precision: meta.precision, kernel: info.kernel });
  state.model = {
    scheduler,
    tokenizer,
    encoder,
    chatTemplate,
    maxSeqLen: config.maxSeqLen,
    vocabSize: meta.config.vocabSize,
  };
  if (state.phase === 'loading') state.phase = 'ready';
  log(
    `ready: model '${config.servedModelName}' (${meta.precision}${meta.precision === 'INT8' ? ` with ${info.int8Activations} activations` : ''}, ${info.kernel} kernels, ${info.threads} threads), ${config.scheduler} batching up to ${config.maxBatchSize} sequences and ${config.maxNumBatchedTokens} tokens per step, ` +
      `max seq len ${config.maxSeqLen}, KV cache ${info.kvBlocksTotal * info.kvBlockTokens} tokens (${(info.kvCacheBytes / 2 ** 20).toFixed(0)} MiB), prefix caching ${info.prefixCaching ? 'on' : 'off'}`,
  );
  return scheduler;
}

/** The engine as `serve` loads it (benchmarks load it the same way to compare like with like). */
export function engineOptions(config: ServeConfig, memoryBudgetBytes?: number): EngineOptions {
  return {
    threads: config.threads,
    maxSeqLen: config.maxSeqLen,
    kvCacheTokens: config.kvCacheTokens,
    kernel: config.kernel,
    int8Activations: config.int8Activations,
    kvCacheDtype: config.kvCacheDtype,
    memoryBudgetBytes,
    prefixCaching: config.prefixCaching,
  };
}

export function schedulerOptions(config: ServeConfig): SchedulerOptions {
  return {
    policy: config.scheduler,
    maxBatchSize: config.maxBatchSize,
    maxNumBatchedTokens: config.maxNumBatchedTokens,
    maxWaitingRequests: config.maxWaitingRequests,
    batchTimeoutMs: config.batchTimeoutMs,
  };
}

/**
 * Under a memory limit (the pod's, as the kubelet sets it in the cgroup), the KV cache may take what
 * the weights and the runtime leave. A limit too small for the model is refused here, before
 * anything is allocated: the kernel would kill the process mid-load, again at every restart.
 */
export function memoryBudgetWithin(config: Pick<ServeConfig, 'modelPath' | 'kvCacheTokens' | 'maxSeqLen' | 'kvCacheDtype'>, limitBytes: number | undefined): number | undefined {
  if (limitBytes === undefined) return undefined;
  const { header, metadata } = readNpuFile(config.modelPath);
  const need = servingMemory(modelFootprint(metadata.config, header.fileBytes), config);
  if (limitBytes < need.totalBytes)
    throw new Error(
      `the memory limit of ${limitMebibytes(limitBytes)} (cgroup) is below what serving ${config.modelPath} needs: ${describeServingMemory(need)}; ` +
        `raise the limit (spec.runtime.resources.limits.memory), or lower --kv-cache-tokens, --max-batch-size or --max-seq-len`,
    );
  return limitBytes - need.weightBytes - need.overheadBytes;
}

/** Waits for the requests in flight; those still open at the deadline get a 503 error (streams as their last event). */
async function drain(scheduler: Scheduler, state: ServingState, timeoutSeconds: number, log: Logger): Promise<void> {
  const inFlight = scheduler.runningCount + scheduler.waitingCount;
  if (inFlight > 0) log(`waiting up to ${timeoutSeconds} s for ${inFlight} requests in flight`);
  const finished = await Promise.race([scheduler.idle().then(() => true), sleep(timeoutSeconds * 1000, false, { ref: false })]);
  if (finished) return;
  log.warn(`drain timeout: closing ${state.inFlight.size} unfinished requests with an error`);
  const err = new ApiError(503, `The server shut down before this request finished (it waited ${timeoutSeconds} s for requests in flight).`, 'service_unavailable', null, 'drain_timeout');
  await Promise.race([failInFlight(state, err), sleep(2000, undefined, { ref: false })]);
}

/** Stops listening and closes every connection (an unfinished response aborts its request). */
function close(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}
