// The `npuserve` command line: parses flags once into typed options and dispatches to a command.
import { mkdirSync, readdirSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';

import { bench } from './bench/bench.js';
import { chatInTerminal } from './chat-terminal.js';
import { AccuracyGateError, convert, type ConvertOptions } from './convert/convert.js';
import { inspectNpu } from './convert/inspect.js';
import { Engine, type Int8Activations } from './engine.js';
import { FormatError, UsageError } from './errors.js';
import { readNpuFile, type Precision } from './format.js';
import { generate } from './generate.js';
import type { RopeScaling } from './model-config.js';
import { Progress } from './progress.js';
import { serve } from './server/main.js';
import { DEFAULT_MAX_DOWNLOAD_BYTES, parseByteSize } from './source-policy.js';
import { makeTestModel, PRESETS, type TestModelOptions } from './testmodel.js';
import { Tokenizer } from './tokenizer.js';

export const EXIT = { ok: 0, error: 1, usage: 2, accuracyGate: 3 } as const;

const USAGE = `usage: npuserve <command> [flags]

commands:
  convert          --input DIR|FILE --precision INT8|FP16|FP32 --output X.npu
                   [--optimize-level 0|1|2] [--format auto|safetensors|gguf] [--min-cosine 0.99] [--json]
                   [--termination-log PATH]
                   --input X.npu --format npu: validate a converted file and print its precision (no output)
                   http(s) inputs: [--allow-host HOST (repeatable; or $NPUSERVE_ALLOW_HOSTS a,b)]
                   [--max-download-size 64Gi] [--header-env NAME (default NPUSERVE_SOURCE_AUTHORIZATION)]
  generate         --model X.npu (--prompt TEXT | --prompt-tokens 1,2,3) [--max-tokens 32]
                   [--temperature 0] [--top-p 1] [--seed N] [--threads N] [--int8-activations int16|int8] [--json]
  chat             --model X.npu [--system TEXT] [--max-tokens 512] [--max-seq-len 2048]
                   [--temperature 0] [--top-p 1] [--seed N] [--threads N] [--int8-activations int16|int8]
                   a conversation with the model's chat template: one message per line on stdin
  operator         [--kubeconfig F] [--namespaces a,b] [--image I] [--artifact-claim PVC] [--npu-resource-name R]
                   [--npu-node-selector k=v] [--leader-elect true|false] [--metrics-port 8080] [--workers 4]
  prune-artifacts  --dir DIR [--keep REV1,REV2]
  serve            --model X.npu [--port 8000] [--host ADDR (default $NPUSERVE_BIND_ADDRESS or 0.0.0.0)]
                   [--served-model-name NAME] [--max-batch-size 16] [--max-seq-len 2048]
                   [--max-waiting-requests 256] [--max-num-batched-tokens 256] [--kv-cache-tokens N]
                   [--memory-budget-bytes N (KV cache + RoPE tables; default half the RAM or cgroup limit)]
                   [--threads N] [--drain-timeout-seconds 30] [--scheduler continuous|fixed]
                   [--batch-timeout-ms 100 (fixed only)] [--int8-activations int16|int8] [--max-body-bytes 8388608]
                   [--api-key KEY (default $NPUSERVE_API_KEY; none: no key)] [--protect-metrics]
                   [--chat-template-timeout-ms 1000] [--chat-template-heap-mb 64]
  bench            (--model X.npu [--baseline BEFORE.npu] | --url http://HOST:PORT [--model X.npu])
                   [--reference X.fp32.npu] [--out DIR (bench-results)] [--prompt-tokens 512] [--output-tokens 64]
                   [--latency-requests 5] [--max-concurrency 16] [--min-gain 0.05] [--threads N]
                   [--max-num-batched-tokens N] [--json]
  make-test-model  --out DIR [--preset tiny|100m|1b] [--layers N --hidden N --heads N --kv-heads N
                   --head-dim N --intermediate N --sliding-window N --tied --seed N --dtype F32|F16|BF16 --shards N
                   --gguf F32|F16|Q8_0|Q4_0 --architecture mistral|llama|qwen2 --attention-bias
                   --rope-scaling linear:FACTOR|llama3:FACTOR[:LOW:HIGH:ORIGINAL_MAX_POSITIONS]]
`;

type Flags = Record<string, string | boolean | undefined>;

function parse(argv: string[], options: ParseArgsConfig['options']): Flags {
  try {
    return parseArgs({ args: argv, options: { ...options, help: { type: 'boolean' } }, strict: true, allowPositionals: false }).values as Flags;
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

function required(flags: Flags, name: string): string {
  const v = flags[name];
  if (typeof v !== 'string' || v === '') throw new UsageError(`--${name} is required`);
  return v;
}

function int(flags: Flags, name: string, fallback?: number, min = 0): number | undefined {
  const v = flags[name];
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}, got '${v}'`);
  return n;
}

/** --int8-activations int8|int16: how INT8 models quantize their activations (the engine's default when absent). */
function int8Activations(flags: Flags): Int8Activations | undefined {
  const v = flags['int8-activations'];
  if (v === undefined || v === 'int8' || v === 'int16') return v;
  throw new UsageError(`--int8-activations must be int8 or int16, got '${v}'`);
}

function num(flags: Flags, name: string, fallback?: number): number | undefined {
  const v = flags[name];
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new UsageError(`--${name} must be a number, got '${v}'`);
  return n;
}

function precisionOf(v: string): Precision {
  const p = v.toUpperCase();
  if (p !== 'FP32' && p !== 'FP16' && p !== 'INT8') throw new UsageError(`--precision must be INT8, FP16 or FP32, got '${v}'`);
  return p;
}

/** How `convert` fetches an http(s) input: hosts the admin trusts, the size cap, the Authorization header. */
function downloadOptions(f: Flags): NonNullable<ConvertOptions['download']> {
  const fromEnv = (process.env.NPUSERVE_ALLOW_HOSTS ?? '').split(',');
  const allowHosts = [...((f['allow-host'] as unknown as string[] | undefined) ?? []), ...fromEnv].map((h) => h.trim().toLowerCase().replace(/^\[(.*)\]$/, '$1')).filter(Boolean);
  const size = f['max-download-size'] as string | undefined;
  const maxBytes = size === undefined ? DEFAULT_MAX_DOWNLOAD_BYTES : parseByteSize(size);
  if (maxBytes === null) throw new UsageError(`--max-download-size must be a positive size in bytes, or with Ki, Mi, Gi or Ti, got '${size}'`);
  const headerEnv = (f['header-env'] as string | undefined) ?? 'NPUSERVE_SOURCE_AUTHORIZATION';
  const value = process.env[headerEnv]?.trim();
  if (f['header-env'] !== undefined && !value) throw new UsageError(`--header-env ${headerEnv}: the environment variable is not set or empty`);
  // A bare token (no scheme) is sent as a Bearer token, as Hugging Face and most registries expect.
  const authorization = value ? (value.includes(' ') ? value : `Bearer ${value}`) : undefined;
  return { allowHosts, maxBytes, authorization };
}

async function cmdConvert(argv: string[]): Promise<number> {
  const f = parse(argv, {
    input: { type: 'string' },
    output: { type: 'string' },
    precision: { type: 'string' },
    'optimize-level': { type: 'string' },
    format: { type: 'string' },
    'min-cosine': { type: 'string' },
    json: { type: 'boolean' },
    'termination-log': { type: 'string' },
    'allow-host': { type: 'string', multiple: true },
    'max-download-size': { type: 'string' },
    'header-env': { type: 'string' },
  });
  // Kubernetes reads a container's termination message from this file: the operator learns the
  // conversion's accuracy (or why it failed) from it.
  const terminationLog = f['termination-log'] as string | undefined;
  const report = (body: unknown) => {
    if (terminationLog) writeFileSync(terminationLog, JSON.stringify(body).slice(0, 4000));
  };
  const format = (f.format as string | undefined) ?? 'auto';
  if (format === 'npu') return inspectCommand(required(f, 'input'), report);
  if (!['auto', 'safetensors', 'gguf'].includes(format)) throw new UsageError(`--format must be auto, safetensors, gguf or npu, got '${format}'`);
  const level = int(f, 'optimize-level', 2)!;
  if (level > 2) throw new UsageError(`--optimize-level must be 0, 1 or 2, got ${level}`);
  const progress = new Progress();
  const input = required(f, 'input');
  const output = required(f, 'output');
  try {
    mkdirSync(dirname(output), { recursive: true });
    const summary = await convert({
      input,
      output,
      precision: precisionOf(required(f, 'precision')),
      optimizeLevel: level as 0 | 1 | 2,
      format: format as 'auto',
      minCosine: num(f, 'min-cosine'),
      download: downloadOptions(f),
      onProgress: (stage, done, total) => progress.update(stage, done, total),
    });
    progress.done();
    report(summary);
    if (f.json) {
      console.log(JSON.stringify(summary, null, 2));
    } else {
      const a = summary.accuracy;
      console.log(`wrote ${summary.output}: ${summary.precision}, optimize level ${summary.optimizeLevel}, ${(summary.outputBytes / 1e6).toFixed(1)} MB from ${(summary.sourceBytes / 1e6).toFixed(1)} MB ${summary.sourceFormat} in ${summary.seconds.total.toFixed(1)} s`);
      if (a) console.log(`accuracy vs FP32 on ${a.prompts} prompts: cosine ${a.cosineSimilarity.toFixed(6)} (min ${a.minCosineSimilarity.toFixed(6)}), top-1 agreement ${(a.top1Agreement * 100).toFixed(1)}%`);
    }
    return EXIT.ok;
  } catch (e) {
    progress.done();
    report({ error: (e as Error).message, ...(e instanceof AccuracyGateError ? { accuracy: e.report } : {}) });
    if (e instanceof AccuracyGateError) {
      if (f.json) console.log(JSON.stringify({ error: e.message, accuracy: e.report, minCosine: e.minCosine }, null, 2));
      console.error(`npuserve convert: ${e.message}; no output written`);
      return EXIT.accuracyGate;
    }
    throw e;
  }
}

function inspectCommand(input: string, report: (body: unknown) => void): number {
  try {
    const summary = inspectNpu(input);
    report(summary);
    console.log(JSON.stringify(summary, null, 2));
    return EXIT.ok;
  } catch (e) {
    report({ error: (e as Error).message });
    throw e;
  }
}

async function cmdGenerate(argv: string[]): Promise<number> {
  const f = parse(argv, {
    model: { type: 'string' },
    prompt: { type: 'string' },
    'prompt-tokens': { type: 'string' },
    'max-tokens': { type: 'string' },
    temperature: { type: 'string' },
    'top-p': { type: 'string' },
    seed: { type: 'string' },
    threads: { type: 'string' },
    kernel: { type: 'string' },
    'int8-activations': { type: 'string' },
    json: { type: 'boolean' },
  });
  const modelPath = required(f, 'model');
  const tok = new Tokenizer(readNpuFile(modelPath).metadata.tokenizer);
  let prompt: number[];
  if (typeof f['prompt-tokens'] === 'string') {
    prompt = f['prompt-tokens'].split(',').map((s) => {
      const n = Number(s.trim());
      if (!Number.isSafeInteger(n) || n < 0) throw new UsageError(`--prompt-tokens must be comma-separated token ids, got '${s}'`);
      return n;
    });
  } else if (typeof f.prompt === 'string') {
    prompt = tok.encode(f.prompt);
  } else {
    throw new UsageError('--prompt or --prompt-tokens is required');
  }
  const maxTokens = int(f, 'max-tokens', 32, 1)!;
  const engine = await Engine.load(modelPath, {
    threads: int(f, 'threads', cpus().length, 1),
    maxSeqLen: prompt.length + maxTokens,
    kvCacheTokens: prompt.length + maxTokens,
    kernel: f.kernel as string | undefined,
    int8Activations: int8Activations(f),
  });
  const temperature = num(f, 'temperature', 0)!;
  const topP = num(f, 'top-p', 1)!;
  if (temperature < 0) throw new UsageError('--temperature must be >= 0');
  if (!(topP > 0 && topP <= 1)) throw new UsageError('--top-p must be in (0, 1]');
  const out = await generate(engine, prompt, { maxTokens, temperature, topP, seed: int(f, 'seed', 0) });
  const text = tok.decode(out.tokens);
  if (f.json) {
    console.log(JSON.stringify({ promptTokens: prompt, tokens: out.tokens, text, finishReason: out.finishReason, kernel: engine.info.kernel }, null, 2));
  } else {
    process.stdout.write(`${text}\n`);
  }
  return EXIT.ok;
}

/** --rope-scaling linear:F or llama3:F[:LOW:HIGH:ORIGINAL] (Llama 3.1's 1:4:8192 by default). */
function ropeScalingFlag(text: string): RopeScaling {
  const [type, ...rest] = text.split(':');
  const nums = rest.map(Number);
  const usage = `--rope-scaling must be linear:FACTOR or llama3:FACTOR[:LOW:HIGH:ORIGINAL_MAX_POSITIONS] with positive numbers, got '${text}'`;
  if (!nums.every((n) => Number.isFinite(n) && n > 0)) throw new UsageError(usage);
  if (type === 'linear' && nums.length === 1) return { type: 'linear', factor: nums[0] };
  if (type === 'llama3' && (nums.length === 1 || nums.length === 4)) {
    const [factor, lowFreqFactor = 1, highFreqFactor = 4, originalMaxPositionEmbeddings = 8192] = nums;
    return { type: 'llama3', factor, lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings };
  }
  throw new UsageError(usage);
}

async function cmdChat(argv: string[]): Promise<number> {
  const f = parse(argv, {
    model: { type: 'string' },
    system: { type: 'string' },
    'max-tokens': { type: 'string' },
    'max-seq-len': { type: 'string' },
    temperature: { type: 'string' },
    'top-p': { type: 'string' },
    seed: { type: 'string' },
    threads: { type: 'string' },
    kernel: { type: 'string' },
    'int8-activations': { type: 'string' },
  });
  const modelPath = required(f, 'model');
  const positions = readNpuFile(modelPath).metadata.config.maxPositionEmbeddings;
  const maxSeqLen = Math.min(int(f, 'max-seq-len', 2048, 2)!, positions);
  const temperature = num(f, 'temperature', 0)!;
  const topP = num(f, 'top-p', 1)!;
  if (temperature < 0) throw new UsageError('--temperature must be >= 0');
  if (!(topP > 0 && topP <= 1)) throw new UsageError('--top-p must be in (0, 1]');
  const engine = await Engine.load(modelPath, {
    threads: int(f, 'threads', cpus().length, 1),
    maxSeqLen,
    kvCacheTokens: maxSeqLen,
    kernel: f.kernel as string | undefined,
    int8Activations: int8Activations(f),
  });
  await chatInTerminal(engine, {
    input: process.stdin,
    output: process.stdout,
    maxSeqLen,
    maxTokens: int(f, 'max-tokens', 512, 1)!,
    temperature,
    topP,
    seed: int(f, 'seed', 0)!,
    system: f.system as string | undefined,
    interactive: process.stdin.isTTY === true,
  });
  return EXIT.ok;
}

function cmdMakeTestModel(argv: string[]): number {
  const f = parse(argv, {
    out: { type: 'string' },
    preset: { type: 'string' },
    layers: { type: 'string' },
    hidden: { type: 'string' },
    heads: { type: 'string' },
    'kv-heads': { type: 'string' },
    'head-dim': { type: 'string' },
    intermediate: { type: 'string' },
    'sliding-window': { type: 'string' },
    tied: { type: 'boolean' },
    seed: { type: 'string' },
    dtype: { type: 'string' },
    shards: { type: 'string' },
    gguf: { type: 'string' },
    architecture: { type: 'string' },
    'attention-bias': { type: 'boolean' },
    'rope-scaling': { type: 'string' },
  });
  const preset = (f.preset as string | undefined) ?? 'tiny';
  if (!(preset in PRESETS)) throw new UsageError(`--preset must be one of ${Object.keys(PRESETS).join(', ')}, got '${preset}'`);
  const dtype = ((f.dtype as string | undefined) ?? 'F32').toUpperCase();
  if (dtype !== 'F32' && dtype !== 'F16' && dtype !== 'BF16') throw new UsageError(`--dtype must be F32, F16 or BF16, got '${f.dtype}'`);
  const opts: Partial<TestModelOptions> = { ...PRESETS[preset], dtype };
  const set = (key: keyof TestModelOptions, flag: string, min = 1) => {
    const v = int(f, flag, undefined, min);
    if (v !== undefined) (opts as Record<string, unknown>)[key] = v;
  };
  set('layers', 'layers');
  set('hidden', 'hidden');
  set('heads', 'heads');
  set('kvHeads', 'kv-heads');
  set('headDim', 'head-dim', 2);
  set('intermediate', 'intermediate');
  set('slidingWindow', 'sliding-window');
  set('seed', 'seed', 0);
  set('shards', 'shards');
  if (f.tied) opts.tied = true;
  if (typeof f.architecture === 'string') {
    if (f.architecture !== 'mistral' && f.architecture !== 'llama' && f.architecture !== 'qwen2')
      throw new UsageError(`--architecture must be mistral, llama or qwen2, got '${f.architecture}'`);
    opts.architecture = f.architecture;
  }
  if (f['attention-bias']) opts.attentionBias = true;
  if (typeof f['rope-scaling'] === 'string') opts.ropeScaling = ropeScalingFlag(f['rope-scaling']);
  if (typeof f.gguf === 'string') {
    const g = f.gguf.toUpperCase();
    if (g !== 'F32' && g !== 'F16' && g !== 'Q8_0' && g !== 'Q4_0') throw new UsageError(`--gguf must be F32, F16, Q8_0 or Q4_0, got '${f.gguf}'`);
    opts.gguf = g;
  }
  const model = makeTestModel(required(f, 'out'), opts);
  console.log(`wrote ${model.dir}: ${model.config.numLayers} layers, hidden ${model.config.hiddenSize}, ${(model.parameters / 1e6).toFixed(1)}M parameters`);
  return EXIT.ok;
}

/** Deletes the .npu artifacts in --dir whose revision is not in --keep (all of them when empty). */
function cmdPruneArtifacts(argv: string[]): number {
  const f = parse(argv, { dir: { type: 'string' }, keep: { type: 'string' } });
  const dir = required(f, 'dir');
  const keep = new Set(((f.keep as string | undefined) ?? '').split(',').filter(Boolean));
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    console.log(`${dir} does not exist; nothing to prune`);
    return EXIT.ok;
  }
  for (const name of entries) {
    if (!/\.npu(\.tmp-\d+|\.fp32-reference\.tmp-\d+)?$/.test(name) || keep.has(basename(name).replace(/\.npu.*$/, ''))) continue;
    rmSync(join(dir, name), { force: true });
    console.log(`deleted ${join(dir, name)}`);
  }
  if (keep.size === 0 && readdirSync(dir).length === 0) rmdirSync(dir);
  return EXIT.ok;
}

async function cmdOperator(argv: string[]): Promise<number> {
  const { runOperator } = await import('../operator/main.js');
  return runOperator(argv);
}

async function cmdServe(argv: string[]): Promise<number> {
  const f = parse(argv, {
    model: { type: 'string' },
    port: { type: 'string' },
    host: { type: 'string' },
    'served-model-name': { type: 'string' },
    'max-batch-size': { type: 'string' },
    'max-seq-len': { type: 'string' },
    'max-waiting-requests': { type: 'string' },
    'max-num-batched-tokens': { type: 'string' },
    'kv-cache-tokens': { type: 'string' },
    'memory-budget-bytes': { type: 'string' },
    threads: { type: 'string' },
    kernel: { type: 'string' },
    'int8-activations': { type: 'string' },
    'drain-timeout-seconds': { type: 'string' },
    scheduler: { type: 'string' },
    'batch-timeout-ms': { type: 'string' },
    'max-body-bytes': { type: 'string' },
    'api-key': { type: 'string' },
    'protect-metrics': { type: 'boolean' },
    'chat-template-timeout-ms': { type: 'string' },
    'chat-template-heap-mb': { type: 'string' },
  });
  const modelPath = required(f, 'model');
  const maxBatchSize = int(f, 'max-batch-size', 16, 1)!;
  const maxSeqLen = int(f, 'max-seq-len', 2048, 2)!;
  const maxNumBatchedTokens = int(f, 'max-num-batched-tokens', Math.max(256, maxBatchSize), 1)!;
  if (maxNumBatchedTokens < maxBatchSize) throw new UsageError(`--max-num-batched-tokens ${maxNumBatchedTokens} must be at least --max-batch-size ${maxBatchSize} (every running sequence decodes a token per step)`);
  const kvCacheTokens = int(f, 'kv-cache-tokens', maxBatchSize * maxSeqLen, 1)!;
  if (kvCacheTokens < maxSeqLen) throw new UsageError(`--kv-cache-tokens ${kvCacheTokens} must hold at least one sequence of --max-seq-len ${maxSeqLen}`);
  const scheduler = (f.scheduler as string | undefined) ?? 'continuous';
  if (scheduler !== 'continuous' && scheduler !== 'fixed') throw new UsageError(`--scheduler must be continuous or fixed, got '${scheduler}'`);
  const port = int(f, 'port', 8000, 0)!;
  if (port > 65535) throw new UsageError(`--port must be at most 65535, got ${port}`);
  // The environment is how a Secret reaches the pod (a flag would show the key in the process list).
  const apiKey = (f['api-key'] as string | undefined) ?? process.env.NPUSERVE_API_KEY;
  if (apiKey !== undefined && apiKey.trim() === '') throw new UsageError(`--api-key / NPUSERVE_API_KEY is set but empty; set a key or unset it to serve without one`);
  if (f['protect-metrics'] && apiKey === undefined) throw new UsageError('--protect-metrics needs an API key (--api-key or NPUSERVE_API_KEY)');
  return serve(
    {
      modelPath,
      servedModelName: (f['served-model-name'] as string | undefined) ?? basename(modelPath).replace(/\.npu$/, ''),
      host: (f.host as string | undefined) ?? process.env.NPUSERVE_BIND_ADDRESS ?? '0.0.0.0',
      port,
      maxBatchSize,
      maxSeqLen,
      maxWaitingRequests: int(f, 'max-waiting-requests', 256, 1)!,
      maxNumBatchedTokens,
      kvCacheTokens,
      memoryBudgetBytes: int(f, 'memory-budget-bytes', undefined, 1),
      threads: int(f, 'threads', cpus().length, 1)!,
      kernel: f.kernel as string | undefined,
      int8Activations: int8Activations(f),
      scheduler,
      batchTimeoutMs: int(f, 'batch-timeout-ms', 100, 0)!,
      drainTimeoutSeconds: int(f, 'drain-timeout-seconds', 30, 0)!,
      // A 4 MiB prompt fits in its JSON body, so it gets its context-length 400 rather than a 413.
      // The limit applies to the body as inflated (Content-Encoding: gzip, deflate, br).
      bodyLimitBytes: int(f, 'max-body-bytes', 8 * 2 ** 20, 1024)!,
      apiKey: apiKey?.trim(),
      protectMetrics: (f['protect-metrics'] as boolean | undefined) ?? false,
      templateLimits: { timeoutMs: int(f, 'chat-template-timeout-ms', 1000, 10)!, heapMb: int(f, 'chat-template-heap-mb', 64, 16)! },
    },
    (line) => console.log(`npuserve serve: ${line}`),
  );
}

async function cmdBench(argv: string[]): Promise<number> {
  const f = parse(argv, {
    model: { type: 'string' },
    baseline: { type: 'string' },
    url: { type: 'string' },
    reference: { type: 'string' },
    out: { type: 'string' },
    'prompt-tokens': { type: 'string' },
    'output-tokens': { type: 'string' },
    'latency-requests': { type: 'string' },
    'max-concurrency': { type: 'string' },
    'min-gain': { type: 'string' },
    threads: { type: 'string' },
    'max-num-batched-tokens': { type: 'string' },
    json: { type: 'boolean' },
  });
  const url = f.url as string | undefined;
  const modelPath = f.model as string | undefined;
  if (!url && !modelPath) throw new UsageError('--model X.npu or --url http://HOST:PORT is required');
  if (url && f.baseline) throw new UsageError('--baseline compares two model files; it cannot be used with --url');
  if (f.reference && !modelPath) throw new UsageError('--reference needs --model (the accuracy is of that file)');
  const maxConcurrency = int(f, 'max-concurrency', 16, 1)!;
  const progress = new Progress();
  const out = await bench(
    {
      modelPath,
      baselinePath: f.baseline as string | undefined,
      url,
      referencePath: f.reference as string | undefined,
      outDir: (f.out as string | undefined) ?? 'bench-results',
      threads: int(f, 'threads', cpus().length, 1)!,
      maxNumBatchedTokens: int(f, 'max-num-batched-tokens', Math.max(256, maxConcurrency), 1)!,
      study: {
        promptTokens: int(f, 'prompt-tokens', 512, 1)!,
        outputTokens: int(f, 'output-tokens', 64, 1)!,
        latencyRequests: int(f, 'latency-requests', 5, 1)!,
        maxConcurrency,
        minGain: num(f, 'min-gain', 0.05)!,
      },
    },
    (label, done, total) => progress.update(label, done, total),
  );
  progress.done();
  if (f.json) console.log(JSON.stringify(out.results, null, 2));
  else process.stdout.write(out.markdown);
  console.error(`wrote ${out.files.markdown}, ${out.files.json} and ${out.files.svg}`);
  return EXIT.ok;
}

const COMMANDS: Record<string, (argv: string[]) => number | Promise<number>> = {
  operator: cmdOperator,
  'prune-artifacts': cmdPruneArtifacts,
  convert: cmdConvert,
  generate: cmdGenerate,
  chat: cmdChat,
  serve: cmdServe,
  bench: cmdBench,
  'make-test-model': cmdMakeTestModel,
};

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === 'help') {
    process.stdout.write(USAGE);
    return command ? EXIT.ok : EXIT.usage;
  }
  const run = COMMANDS[command];
  if (!run) {
    process.stderr.write(`npuserve: unknown command '${command}'\n\n${USAGE}`);
    return EXIT.usage;
  }
  if (rest.includes('--help')) {
    process.stdout.write(USAGE);
    return EXIT.ok;
  }
  try {
    return await run(rest);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`npuserve ${command}: ${e.message}\n`);
      return EXIT.usage;
    }
    if (e instanceof FormatError || e instanceof Error) {
      process.stderr.write(`npuserve ${command}: ${e.message}\n`);
      return EXIT.error;
    }
    throw e;
  }
}
