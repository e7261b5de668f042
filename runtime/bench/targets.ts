// Benchmark targets: the engine in this process behind the serving scheduler (no HTTP), and a running
// server reached over HTTP with streamed completions (token-id prompts, so lengths are exact).
import { Agent, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';

import { Engine } from '../engine.js';
import { Scheduler, type SchedulerPolicy } from '../scheduler.js';
import { engineOptions, schedulerOptions, type ServeConfig } from '../server/main.js';
import type { BenchTarget, RequestSpec, RequestTiming } from './workload.js';

export interface EngineTargetOptions {
  threads: number;
  maxBatchSize: number;
  /** Longest prompt + output the load will send. */
  maxSeqLen: number;
  maxNumBatchedTokens: number;
  policy?: SchedulerPolicy;
}

/** The engine driven by the same scheduler as `npuserve serve`, timed at each sampled token. */
export class EngineTarget implements BenchTarget {
  private constructor(
    readonly label: string,
    readonly engine: Engine,
    private readonly scheduler: Scheduler,
  ) {}

  static async load(path: string, o: EngineTargetOptions): Promise<EngineTarget> {
    const engine = await Engine.load(path, { threads: o.threads, maxSeqLen: o.maxSeqLen, kvCacheTokens: o.maxBatchSize * o.maxSeqLen });
    const scheduler = new Scheduler(engine, {
      policy: o.policy ?? 'continuous',
      maxBatchSize: o.maxBatchSize,
      maxNumBatchedTokens: o.maxNumBatchedTokens,
      maxWaitingRequests: Number.MAX_SAFE_INTEGER,
      batchTimeoutMs: 100,
    });
    return new EngineTarget(`engine (${engine.metadata.precision}, in-process)`, engine, scheduler);
  }

  /** The engine and scheduler exactly as `npuserve serve` would load them from `config`. */
  static async fromServeConfig(config: ServeConfig): Promise<EngineTarget> {
    const engine = await Engine.load(config.modelPath, engineOptions(config));
    const scheduler = new Scheduler(engine, { ...schedulerOptions(config), maxWaitingRequests: Number.MAX_SAFE_INTEGER });
    return new EngineTarget(`engine (${engine.metadata.precision}, in-process)`, engine, scheduler);
  }

  run(spec: RequestSpec): Promise<RequestTiming> {
    return new Promise((resolve, reject) => {
      const startMs = performance.now();
      const times: number[] = [];
      this.scheduler.submit({
        prompt: spec.prompt,
        maxTokens: spec.maxTokens,
        temperature: 1,
        topP: 1,
        seed: spec.seed,
        onToken: () => {
          times.push(performance.now());
          return false;
        },
        onFinish: (r) => {
          if (r.reason === 'error' || r.reason === 'abort') return reject(r.error ?? new Error(`request ${r.reason}`));
          const endMs = performance.now();
          if (times.length < r.completionTokens) times.push(endMs); // EOS ends the request without a token callback
          resolve({ promptTokens: r.promptTokens, outputTokens: r.completionTokens, startMs, firstTokenMs: times[0] ?? endMs, endMs, tokenGapsMs: times.slice(1).map((t, i) => t - times[i]) });
        },
      });
    });
  }
}

/**
 * A server's /v1/completions, streamed; TTFT is the first chunk that carries text. A lean client
 * (node:http with kept-alive connections, events split by hand): about a third of the CPU per token
 * of the openai client over fetch, which on a 2-core machine is CPU taken from the server it measures.
 */
export class HttpTarget implements BenchTarget {
  private constructor(
    readonly label: string,
    readonly url: string,
    readonly model: string,
    /** The server's max-seq-len, as /v1/models reports it. */
    readonly maxModelLen: number | null,
  ) {
    this.secure = url.startsWith('https:');
    this.agent = this.secure ? new HttpsAgent({ keepAlive: true }) : new Agent({ keepAlive: true });
  }

  private readonly secure: boolean;
  private readonly agent: Agent;

  static async connect(url: string, label?: string): Promise<HttpTarget> {
    const base = url.replace(/\/+$/, '').replace(/\/v1$/, '');
    const res = await fetch(`${base}/v1/models`).catch((e: Error) => {
      throw new Error(`cannot reach ${base}/v1/models: ${e.message}`);
    });
    if (!res.ok) throw new Error(`${base}/v1/models answered ${res.status}`);
    const models = (await res.json()) as { data: Array<{ id: string; max_model_len?: number | null }> };
    const model = models.data?.[0];
    if (!model?.id) throw new Error(`${base}/v1/models lists no model`);
    return new HttpTarget(label ?? `server ${base}`, base, model.id, model.max_model_len ?? null);
  }

  async run(spec: RequestSpec): Promise<RequestTiming> {
    const startMs = performance.now();
    const body = JSON.stringify({ model: this.model, prompt: spec.prompt, max_tokens: spec.maxTokens, temperature: 1, seed: spec.seed, stream: true, stream_options: { include_usage: true } });
    const times: number[] = [];
    let outputTokens = 0;
    // A kept-alive connection the server closed while it was idle (its keep-alive timeout) fails
    // the request sent on it at once, before any response: that request is sent again, once, on a
    // new connection (as Node's documentation advises for req.reusedSocket).
    const attempt = (retry: boolean) => new Promise<void>((resolve, reject) => {
      const req = (this.secure ? httpsRequest : httpRequest)(`${this.url}/v1/completions`, { method: 'POST', agent: this.agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
        res.setEncoding('utf8');
        if (res.statusCode !== 200) {
          let text = '';
          res.on('data', (c: string) => (text += c)).on('end', () => reject(new Error(`${this.url}/v1/completions answered ${res.statusCode}: ${text}`)));
          return;
        }
        let buffered = '';
        res.on('data', (text: string) => {
          const now = performance.now();
          buffered += text;
          for (let end = buffered.indexOf('\n\n'); end >= 0; end = buffered.indexOf('\n\n')) {
            const data = buffered.slice(buffered.startsWith('data: ') ? 6 : 0, end);
            buffered = buffered.slice(end + 2);
            if (data === '[DONE]') continue;
            const chunk = JSON.parse(data) as { choices: Array<{ text: string }>; usage?: { completion_tokens: number } | null };
            if (chunk.choices[0]?.text) times.push(now);
            if (chunk.usage) outputTokens = chunk.usage.completion_tokens;
          }
        });
        res.on('end', resolve).on('error', reject);
      });
      req.on('error', (e: NodeJS.ErrnoException) => (retry && req.reusedSocket && e.code === 'ECONNRESET' ? attempt(false).then(resolve, reject) : reject(e))).end(body);
    });
    await attempt(true);
    const endMs = performance.now();
    return { promptTokens: spec.prompt.length, outputTokens, startMs, firstTokenMs: times[0] ?? endMs, endMs, tokenGapsMs: times.slice(1).map((t, i) => t - times[i]) };
  }

  /** Closes the kept-alive connections. */
  close(): void {
    this.agent.destroy();
  }
}
