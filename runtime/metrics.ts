// The server's Prometheus metrics, all defined here (names are the DESIGN.md section 3 contract, with
// vLLM's meaning): request latencies, token counters, queue gauges and the engine's batch sizes, each
// labelled with the served model name, plus the default process metrics.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

import type { FinishReason, SchedulerObserver } from './scheduler.js';

// Buckets in the spirit of vLLM's: fine below a second for token latencies, long tails for requests.
const TTFT_BUCKETS_SECONDS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640];
const ITL_BUCKETS_SECONDS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80];
const E2E_BUCKETS_SECONDS = [0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920, 7680];
const BATCH_SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256];

export interface EngineLabels {
  backend: string;
  precision: string;
  kernel: string;
}

/**
 * The model's child of a histogram, its buckets exported at 0 from the start: a series that first
 * appears at 21 hides those 21 observations from rate(), so a fresh pod's first burst would not show.
 */
function zeroed(h: Histogram<'model'>, model: string): Histogram.Internal<'model'> {
  h.zero({ model });
  return h.labels(model);
}

/** One model's series: each metric's child for its `model` label, looked up once (observe is per token). */
export class ServerMetrics implements SchedulerObserver {
  readonly registry = new Registry();
  readonly contentType = this.registry.contentType;
  private readonly ttft: Histogram.Internal<'model'>;
  private readonly itl: Histogram.Internal<'model'>;
  private readonly e2e: Histogram.Internal<'model'>;
  private readonly promptTokens: Counter.Internal;
  private readonly generationTokens: Counter.Internal;
  private readonly requests: Counter<'model' | 'finish_reason'>;
  private readonly running: Gauge.Internal<'model'>;
  private readonly waiting: Gauge.Internal<'model'>;
  private readonly kvUsage: Gauge.Internal<'model'>;
  private readonly batchSize: Histogram.Internal<'model'>;
  private readonly maxBatchSize: Gauge.Internal<'model'>;
  private readonly prefixQueries: Counter.Internal;
  private readonly prefixHits: Counter.Internal;
  private readonly engineInfo: Gauge<'model' | 'backend' | 'precision' | 'kernel'>;
  private readonly errorResponses: Counter<'model' | 'status_code'>;

  constructor(private readonly model: string) {
    const registers = [this.registry];
    const labelNames = ['model'] as const;
    collectDefaultMetrics({ register: this.registry });
    this.ttft = zeroed(new Histogram({ name: 'npuserve_time_to_first_token_seconds', help: 'Time from a request\'s arrival to its first output token.', labelNames, buckets: TTFT_BUCKETS_SECONDS, registers }), model);
    this.itl = zeroed(new Histogram({ name: 'npuserve_inter_token_latency_seconds', help: 'Time between consecutive output tokens of a request.', labelNames, buckets: ITL_BUCKETS_SECONDS, registers }), model);
    this.e2e = zeroed(new Histogram({ name: 'npuserve_e2e_request_latency_seconds', help: 'Time from a request\'s arrival to its last output token, for requests that finished (stop or length).', labelNames, buckets: E2E_BUCKETS_SECONDS, registers }), model);
    this.promptTokens = new Counter({ name: 'npuserve_prompt_tokens_total', help: 'Prompt tokens processed (prefilled, or found in the prefix cache).', labelNames, registers }).labels(model);
    this.generationTokens = new Counter({ name: 'npuserve_generation_tokens_total', help: 'Output tokens generated.', labelNames, registers }).labels(model);
    this.requests = new Counter({ name: 'npuserve_requests_total', help: 'Finished requests by finish reason (stop, length, abort, error).', labelNames: ['model', 'finish_reason'], registers });
    this.running = new Gauge({ name: 'npuserve_requests_running', help: 'Requests in the running batch.', labelNames, registers }).labels(model);
    this.waiting = new Gauge({ name: 'npuserve_requests_waiting', help: 'Requests waiting to join the batch.', labelNames, registers }).labels(model);
    this.kvUsage = new Gauge({ name: 'npuserve_kv_cache_usage_ratio', help: 'Fraction of KV cache blocks in use (1 = full).', labelNames, registers }).labels(model);
    this.maxBatchSize = new Gauge({ name: 'npuserve_max_batch_size', help: 'Most sequences the engine runs in one step (--max-batch-size): the gateway keeps a conversation on this replica while fewer of its requests are in flight.', labelNames, registers }).labels(model);
    this.batchSize = zeroed(new Histogram({ name: 'npuserve_batch_size', help: 'Sequences in each engine step.', labelNames, buckets: BATCH_SIZE_BUCKETS, registers }), model);
    this.prefixQueries = new Counter({ name: 'npuserve_prefix_cache_queries_total', help: 'Prompt tokens looked up in the prefix cache.', labelNames, registers }).labels(model);
    this.prefixHits = new Counter({ name: 'npuserve_prefix_cache_hits_total', help: 'Prompt tokens found in the prefix cache (their prefill was skipped).', labelNames, registers }).labels(model);
    this.engineInfo = new Gauge({ name: 'npuserve_engine_info', help: 'The engine serving the model (value 1).', labelNames: ['model', 'backend', 'precision', 'kernel'], registers });
    this.errorResponses = new Counter({ name: 'npuserve_request_errors_total', help: 'API requests (/v1) answered with an HTTP error, by status code (429: the waiting queue was full).', labelNames: ['model', 'status_code'], registers });
    this.errorResponses.labels(model, '429').inc(0);
    for (const g of [this.running, this.waiting, this.kvUsage]) g.set(0);
    // Counters exist from the start (prom-client creates a label set on first use), so a scraper
    // sees 0 on an idle pod rather than no series.
    for (const c of [this.promptTokens, this.generationTokens, this.prefixQueries, this.prefixHits]) c.inc(0);
  }

  setMaxBatchSize(n: number): void {
    this.maxBatchSize.set(n);
  }

  setEngine(labels: EngineLabels): void {
    this.engineInfo.labels({ model: this.model, ...labels }).set(1);
  }

  step(s: { batchSize: number; promptTokens: number; generationTokens: number }): void {
    this.batchSize.observe(s.batchSize);
    this.promptTokens.inc(s.promptTokens);
    this.generationTokens.inc(s.generationTokens);
  }

  prefixCache(s: { queriedTokens: number; hitTokens: number }): void {
    this.prefixQueries.inc(s.queriedTokens);
    this.prefixHits.inc(s.hitTokens);
    // As vLLM, prompt tokens count whether computed or cached.
    this.promptTokens.inc(s.hitTokens);
  }

  state(s: { running: number; waiting: number; kvUsageRatio: number }): void {
    this.running.set(s.running);
    this.waiting.set(s.waiting);
    this.kvUsage.set(s.kvUsageRatio);
  }

  firstToken(secondsSinceArrival: number): void {
    this.ttft.observe(secondsSinceArrival);
  }

  interToken(seconds: number): void {
    this.itl.observe(seconds);
  }

  finished(reason: FinishReason, e2eSeconds: number): void {
    this.requests.labels(this.model, reason).inc();
    // As vLLM, latency is of requests that ran to their end; aborted and failed ones would skew it.
    if (reason === 'stop' || reason === 'length') this.e2e.observe(e2eSeconds);
  }

  errorResponse(statusCode: number): void {
    this.errorResponses.labels(this.model, String(statusCode)).inc();
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
}
