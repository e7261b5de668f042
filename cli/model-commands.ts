// The subcommands that work on model files: convert, inspect, generate, chat, bench, make-test-model
// and prune-artifacts, each its flags and what it runs with them.
import { mkdirSync, readdirSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

import { SPEC_DEFAULTS } from '../common/defaults.js';
import { UsageError } from '../common/errors.js';
import { choiceFlag, type Flag, type FlagValues, intFlag, numberFlag, stringFlag } from '../common/flags.js';
import { DEFAULT_MAX_DOWNLOAD_BYTES, parseByteSize } from '../common/source-policy.js';
import { defaultThreads } from '../runtime/cgroup.js';
import { AccuracyGateError, convert as runConvert, type ConvertOptions } from '../runtime/convert/convert.js';
import { inspectNpu } from '../runtime/convert/inspect.js';
import { Engine, type Int8Activations } from '../runtime/engine.js';
import { readNpuFile, type Precision } from '../runtime/format.js';
import { generate as runGenerate } from '../runtime/generate.js';
import type { RopeScaling } from '../runtime/model-config.js';
import { Progress } from '../runtime/progress.js';
import { makeTestModel as writeTestModel, PRESETS, type TestModelOptions } from '../runtime/testmodel.js';
import { Tokenizer } from '../runtime/tokenizer.js';
import { type Command, EXIT } from './command.js';

/** Flags of the commands that run the engine in this process. */
export const ENGINE_FLAGS: Flag[] = [
  { name: 'threads', value: 'N', defaultText: 'the CPUs available, at most the cgroup CPU quota (limit) rounded up', description: 'engine threads' },
  { name: 'kernel', value: 'NAME', defaultText: 'the fastest this CPU supports', description: 'kernel set (for comparisons and tests)' },
  { name: 'int8-activations', value: 'int16|int8', defaultText: 'int16', description: "how INT8 models quantize their activations" },
];

const SAMPLING_FLAGS: Flag[] = [
  { name: 'temperature', value: 'T', default: '0', description: 'sampling temperature (0: greedy)' },
  { name: 'top-p', value: 'P', default: '1', description: 'nucleus sampling: the smallest set of tokens with this much probability' },
  { name: 'seed', value: 'N', default: '0', description: 'sampling seed' },
];

export function threads(f: FlagValues): number {
  return intFlag(f, 'threads', 1) ?? defaultThreads();
}

export function int8Activations(f: FlagValues): Int8Activations | undefined {
  return choiceFlag(f, 'int8-activations', ['int16', 'int8'] as const);
}

function sampling(f: FlagValues): { temperature: number; topP: number; seed: number } {
  const temperature = numberFlag(f, 'temperature')!;
  const topP = numberFlag(f, 'top-p')!;
  if (temperature < 0) throw new UsageError('--temperature must be >= 0');
  if (!(topP > 0 && topP <= 1)) throw new UsageError('--top-p must be in (0, 1]');
  return { temperature, topP, seed: intFlag(f, 'seed')! };
}

function precisionOf(v: string): Precision {
  const p = v.toUpperCase();
  if (p !== 'FP32' && p !== 'FP16' && p !== 'INT8') throw new UsageError(`--precision must be INT8, FP16 or FP32, got '${v}'`);
  return p;
}

const DEFAULT_HEADER_ENV = 'NPUSERVE_SOURCE_AUTHORIZATION';

/** How `convert` fetches an http(s) input: hosts the admin trusts, the size cap, the Authorization header. */
function downloadOptions(f: FlagValues): NonNullable<ConvertOptions['download']> {
  const fromEnv = (process.env.NPUSERVE_ALLOW_HOSTS ?? '').split(',');
  const allowHosts = [...((f['allow-host'] as string[] | undefined) ?? []), ...fromEnv].map((h) => h.trim().toLowerCase().replace(/^\[(.*)\]$/, '$1')).filter(Boolean);
  const size = stringFlag(f, 'max-download-size');
  const maxBytes = size === undefined ? DEFAULT_MAX_DOWNLOAD_BYTES : parseByteSize(size);
  if (maxBytes === null) throw new UsageError(`--max-download-size must be a positive size in bytes, or with Ki, Mi, Gi or Ti, got '${size}'`);
  const headerEnv = stringFlag(f, 'header-env') ?? DEFAULT_HEADER_ENV;
  const value = process.env[headerEnv]?.trim();
  if (f['header-env'] !== undefined && !value) throw new UsageError(`--header-env ${headerEnv}: the environment variable is not set or empty`);
  // A bare token (no scheme) is sent as a Bearer token, as Hugging Face and most registries expect.
  const authorization = value ? (value.includes(' ') ? value : `Bearer ${value}`) : undefined;
  return { allowHosts, maxBytes, authorization };
}

export const convert: Command = {
  spec: {
    name: 'npuserve convert',
    summary: 'Converts a checkpoint (safetensors folder, GGUF file or http(s) URL) to a .npu model file, checking its accuracy against FP32.',
    flags: [
      { name: 'input', value: 'DIR|FILE|URL', required: true, description: 'the checkpoint: a Hugging Face folder, a .safetensors or .gguf file, or an http(s) URL of one' },
      { name: 'precision', value: 'INT8|FP16|FP32', required: true, description: 'weight precision of the output' },
      { name: 'output', value: 'X.npu', required: true, description: 'the model file to write' },
      { name: 'optimize-level', value: '0|1|2', default: String(SPEC_DEFAULTS.conversion.optimizeLevel), description: '0 weights as they are; 1 fuse projections; 2 also pack weights for the kernels' },
      { name: 'format', value: 'auto|safetensors|gguf', default: SPEC_DEFAULTS.source.format, description: 'checkpoint format' },
      { name: 'min-cosine', value: 'X', defaultText: 'no gate', description: 'accuracy gate: fail (exit 3, nothing written) below this mean cosine similarity of logits vs FP32' },
      { name: 'json', description: 'print the summary as JSON' },
      { name: 'termination-log', value: 'PATH', description: "also write the summary (or the error) to this file (a Kubernetes container's termination message)" },
      { name: 'allow-host', value: 'HOST', multiple: true, defaultText: '$NPUSERVE_ALLOW_HOSTS (a,b)', description: 'http(s) inputs: an internal host the download may reach nevertheless' },
      { name: 'max-download-size', value: 'SIZE', defaultText: `${DEFAULT_MAX_DOWNLOAD_BYTES / 2 ** 30}Gi`, description: 'http(s) inputs: largest download (bytes, or with Ki, Mi, Gi, Ti)' },
      { name: 'header-env', value: 'NAME', defaultText: DEFAULT_HEADER_ENV, description: 'http(s) inputs: environment variable holding the Authorization header (a bare token is sent as Bearer)' },
    ],
  },
  async run(f) {
    // Kubernetes reads a container's termination message from this file: the operator learns the
    // conversion's accuracy (or why it failed) from it.
    const terminationLog = stringFlag(f, 'termination-log');
    const report = (body: unknown) => {
      if (terminationLog) writeFileSync(terminationLog, JSON.stringify(body).slice(0, 4000));
    };
    const format = choiceFlag(f, 'format', ['auto', 'safetensors', 'gguf'] as const)!;
    const level = intFlag(f, 'optimize-level')!;
    if (level > 2) throw new UsageError(`--optimize-level must be 0, 1 or 2, got ${level}`);
    const progress = new Progress();
    const output = stringFlag(f, 'output')!;
    try {
      mkdirSync(dirname(output), { recursive: true });
      const summary = await runConvert({
        input: stringFlag(f, 'input')!,
        output,
        precision: precisionOf(stringFlag(f, 'precision')!),
        optimizeLevel: level as 0 | 1 | 2,
        format,
        minCosine: numberFlag(f, 'min-cosine'),
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
  },
};

export const inspect: Command = {
  spec: {
    name: 'npuserve inspect',
    summary: 'Validates a .npu model file and prints what it holds: precision, optimize level, architecture, accuracy report.',
    flags: [
      { name: 'model', value: 'X.npu', required: true, description: 'the model file' },
      { name: 'json', description: 'print the summary as JSON' },
      { name: 'termination-log', value: 'PATH', description: "also write the summary (or the error) to this file (the operator reads a prebuilt file's precision from it)" },
    ],
  },
  run(f) {
    const terminationLog = stringFlag(f, 'termination-log');
    const report = (body: unknown) => {
      if (terminationLog) writeFileSync(terminationLog, JSON.stringify(body).slice(0, 4000));
    };
    try {
      const summary = inspectNpu(stringFlag(f, 'model')!);
      report(summary);
      if (f.json) console.log(JSON.stringify(summary, null, 2));
      else console.log(`${summary.input}: ${summary.architecture}, ${summary.precision}, optimize level ${summary.optimizeLevel}, ${(summary.fileBytes / 1e6).toFixed(1)} MB, engine ${summary.engineVersion}`);
      return EXIT.ok;
    } catch (e) {
      report({ error: (e as Error).message });
      throw e;
    }
  },
};

function promptTokens(text: string): number[] {
  return text.split(',').map((s) => {
    const n = Number(s.trim());
    if (s.trim() === '' || !Number.isSafeInteger(n) || n < 0) throw new UsageError(`--prompt-tokens must be comma-separated token ids, got '${s}'`);
    return n;
  });
}

export const generate: Command = {
  spec: {
    name: 'npuserve generate',
    summary: 'Generates a completion of one prompt with a .npu model.',
    synopsis: '--model X.npu (--prompt TEXT | --prompt-tokens 1,2,3) [flags]',
    flags: [
      { name: 'model', value: 'X.npu', required: true, description: 'the model file' },
      { name: 'prompt', value: 'TEXT', description: 'the prompt as text' },
      { name: 'prompt-tokens', value: '1,2,3', description: 'the prompt as token ids' },
      { name: 'max-tokens', value: 'N', default: '32', description: 'tokens to generate at most' },
      ...SAMPLING_FLAGS,
      ...ENGINE_FLAGS,
      { name: 'json', description: 'print prompt tokens, tokens, text and finish reason as JSON' },
    ],
  },
  async run(f) {
    const modelPath = stringFlag(f, 'model')!;
    const tok = new Tokenizer(readNpuFile(modelPath).metadata.tokenizer);
    const tokensFlag = stringFlag(f, 'prompt-tokens');
    const text = stringFlag(f, 'prompt');
    if (tokensFlag === undefined && text === undefined) throw new UsageError('--prompt or --prompt-tokens is required');
    const prompt = tokensFlag !== undefined ? promptTokens(tokensFlag) : tok.encode(text!);
    const maxTokens = intFlag(f, 'max-tokens', 1)!;
    const s = sampling(f);
    const engine = await Engine.load(modelPath, {
      threads: threads(f),
      maxSeqLen: prompt.length + maxTokens,
      kvCacheTokens: prompt.length + maxTokens,
      kernel: stringFlag(f, 'kernel'),
      int8Activations: int8Activations(f),
    });
    const out = await runGenerate(engine, prompt, { maxTokens, ...s });
    const decoded = tok.decode(out.tokens);
    if (f.json) {
      console.log(JSON.stringify({ promptTokens: prompt, tokens: out.tokens, text: decoded, finishReason: out.finishReason, kernel: engine.info.kernel }, null, 2));
    } else {
      process.stdout.write(`${decoded}\n`);
    }
    return EXIT.ok;
  },
};

export const chat: Command = {
  spec: {
    name: 'npuserve chat',
    summary: "A conversation with a model in the terminal, through its chat template: one message per line on stdin (a pipe works too).",
    flags: [
      { name: 'model', value: 'X.npu', required: true, description: 'the model file' },
      { name: 'system', value: 'TEXT', description: 'system message opening the conversation' },
      { name: 'max-tokens', value: 'N', default: '512', description: 'tokens per answer at most' },
      { name: 'max-seq-len', value: 'N', default: String(SPEC_DEFAULTS.runtime.maxSeqLen), description: "tokens of the whole conversation at most (and at most the model's positions)" },
      ...SAMPLING_FLAGS,
      ...ENGINE_FLAGS,
    ],
  },
  async run(f) {
    const modelPath = stringFlag(f, 'model')!;
    const positions = readNpuFile(modelPath).metadata.config.maxPositionEmbeddings;
    const maxSeqLen = Math.min(intFlag(f, 'max-seq-len', 2)!, positions);
    const s = sampling(f);
    const engine = await Engine.load(modelPath, {
      threads: threads(f),
      maxSeqLen,
      kvCacheTokens: maxSeqLen,
      kernel: stringFlag(f, 'kernel'),
      int8Activations: int8Activations(f),
    });
    const { chatInTerminal } = await import('../runtime/chat-terminal.js');
    await chatInTerminal(engine, {
      input: process.stdin,
      output: process.stdout,
      maxSeqLen,
      maxTokens: intFlag(f, 'max-tokens', 1)!,
      ...s,
      system: stringFlag(f, 'system'),
      interactive: process.stdin.isTTY === true,
    });
    return EXIT.ok;
  },
};

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

/** make-test-model's integer flags and the option each sets, with its least value. */
const SHAPE_FLAGS: Array<[string, keyof TestModelOptions, number, string]> = [
  ['layers', 'layers', 1, 'decoder layers'],
  ['hidden', 'hidden', 1, 'hidden size'],
  ['heads', 'heads', 1, 'attention heads'],
  ['kv-heads', 'kvHeads', 1, 'key/value heads (grouped-query attention)'],
  ['head-dim', 'headDim', 2, 'dimension of one head'],
  ['intermediate', 'intermediate', 1, 'MLP intermediate size'],
  ['sliding-window', 'slidingWindow', 1, 'sliding attention window in tokens'],
  ['seed', 'seed', 0, 'seed of the random weights'],
  ['shards', 'shards', 1, 'safetensors files the weights are split into'],
];

export const makeTestModel: Command = {
  spec: {
    name: 'npuserve make-test-model',
    summary: 'Writes a small random checkpoint (Hugging Face folder, optionally a GGUF file) for tests and demos.',
    flags: [
      { name: 'out', value: 'DIR', required: true, description: 'folder to write' },
      { name: 'preset', value: Object.keys(PRESETS).join('|'), default: 'tiny', description: 'size to start from; the flags below override its fields' },
      ...SHAPE_FLAGS.map(([name, , min, description]): Flag => ({ name, value: 'N', defaultText: "the preset's", description: `${description} (>= ${min})` })),
      { name: 'tied', description: 'tie the output projection to the embeddings' },
      { name: 'dtype', value: 'F32|F16|BF16', default: 'F32', description: 'safetensors dtype of the weights' },
      { name: 'gguf', value: 'F32|F16|Q8_0|Q4_0', description: 'also write a GGUF file of this type' },
      { name: 'architecture', value: 'mistral|llama|qwen2', defaultText: "the preset's", description: 'config.json architecture' },
      { name: 'attention-bias', description: 'Q/K/V projections with biases (as Qwen2)' },
      { name: 'rope-scaling', value: 'TYPE:FACTOR[...]', description: 'linear:FACTOR or llama3:FACTOR[:LOW:HIGH:ORIGINAL_MAX_POSITIONS]' },
    ],
  },
  run(f) {
    const preset = stringFlag(f, 'preset')!;
    if (!Object.hasOwn(PRESETS, preset)) throw new UsageError(`--preset must be one of ${Object.keys(PRESETS).join(', ')}, got '${preset}'`);
    const dtype = stringFlag(f, 'dtype')!.toUpperCase();
    if (dtype !== 'F32' && dtype !== 'F16' && dtype !== 'BF16') throw new UsageError(`--dtype must be F32, F16 or BF16, got '${f.dtype}'`);
    const opts: Partial<TestModelOptions> = { ...PRESETS[preset], dtype };
    for (const [name, key, min] of SHAPE_FLAGS) {
      const v = intFlag(f, name, min);
      if (v !== undefined) (opts as Record<string, unknown>)[key] = v;
    }
    if (f.tied) opts.tied = true;
    const architecture = choiceFlag(f, 'architecture', ['mistral', 'llama', 'qwen2'] as const);
    if (architecture) opts.architecture = architecture;
    if (f['attention-bias']) opts.attentionBias = true;
    const rope = stringFlag(f, 'rope-scaling');
    if (rope !== undefined) opts.ropeScaling = ropeScalingFlag(rope);
    const gguf = stringFlag(f, 'gguf')?.toUpperCase();
    if (gguf !== undefined) {
      if (gguf !== 'F32' && gguf !== 'F16' && gguf !== 'Q8_0' && gguf !== 'Q4_0') throw new UsageError(`--gguf must be F32, F16, Q8_0 or Q4_0, got '${f.gguf}'`);
      opts.gguf = gguf;
    }
    const model = writeTestModel(stringFlag(f, 'out')!, opts);
    console.log(`wrote ${model.dir}: ${model.config.numLayers} layers, hidden ${model.config.hiddenSize}, ${(model.parameters / 1e6).toFixed(1)}M parameters`);
    return EXIT.ok;
  },
};

export const pruneArtifacts: Command = {
  spec: {
    name: 'npuserve prune-artifacts',
    summary: "Deletes the .npu artifacts in a model's folder whose revision is not kept (the operator's cleanup Jobs run it).",
    flags: [
      { name: 'dir', value: 'DIR', required: true, description: "the model's artifact folder" },
      { name: 'keep', value: 'REV1,REV2', defaultText: 'none: delete all', description: 'revisions to keep' },
    ],
  },
  run(f) {
    const dir = stringFlag(f, 'dir')!;
    const keep = new Set((stringFlag(f, 'keep') ?? '').split(',').filter(Boolean));
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
  },
};

export const bench: Command = {
  spec: {
    name: 'npuserve bench',
    summary: 'Measures a model (or a running server) for latency, throughput and accuracy; writes markdown, JSON and an SVG chart.',
    synopsis: '(--model X.npu [--baseline BEFORE.npu] | --url http://HOST:PORT [--model X.npu]) [flags]',
    flags: [
      { name: 'model', value: 'X.npu', description: 'the model file to measure' },
      { name: 'baseline', value: 'BEFORE.npu', description: 'a second model file to compare with' },
      { name: 'url', value: 'http://HOST:PORT', description: 'measure a running server instead' },
      { name: 'reference', value: 'X.fp32.npu', description: "FP32 model the accuracy of --model is measured against" },
      { name: 'out', value: 'DIR', default: 'bench-results', description: 'folder of the results' },
      { name: 'prompt-tokens', value: 'N', default: '512', description: 'prompt length' },
      { name: 'output-tokens', value: 'N', default: '64', description: 'tokens generated per request' },
      { name: 'latency-requests', value: 'N', default: '5', description: 'requests of the latency study' },
      { name: 'max-concurrency', value: 'N', default: '16', description: 'largest concurrency of the throughput study' },
      { name: 'min-gain', value: 'X', default: '0.05', description: 'the throughput study stops when doubling concurrency gains less than this' },
      { name: 'threads', value: 'N', defaultText: 'the CPUs available, at most the cgroup CPU quota (limit) rounded up', description: 'engine threads' },
      { name: 'max-num-batched-tokens', value: 'N', defaultText: 'max(256, --max-concurrency)', description: 'tokens per engine step' },
      { name: 'json', description: 'print the results as JSON instead of markdown' },
    ],
  },
  async run(f) {
    const url = stringFlag(f, 'url');
    const modelPath = stringFlag(f, 'model');
    if (!url && !modelPath) throw new UsageError('--model X.npu or --url http://HOST:PORT is required');
    if (url && f.baseline) throw new UsageError('--baseline compares two model files; it cannot be used with --url');
    if (f.reference && !modelPath) throw new UsageError('--reference needs --model (the accuracy is of that file)');
    const maxConcurrency = intFlag(f, 'max-concurrency', 1)!;
    const progress = new Progress();
    const { bench: runBench } = await import('../runtime/bench/bench.js');
    const out = await runBench(
      {
        modelPath,
        baselinePath: stringFlag(f, 'baseline'),
        url,
        referencePath: stringFlag(f, 'reference'),
        outDir: stringFlag(f, 'out')!,
        threads: threads(f),
        maxNumBatchedTokens: intFlag(f, 'max-num-batched-tokens', 1) ?? Math.max(256, maxConcurrency),
        study: {
          promptTokens: intFlag(f, 'prompt-tokens', 1)!,
          outputTokens: intFlag(f, 'output-tokens', 1)!,
          latencyRequests: intFlag(f, 'latency-requests', 1)!,
          maxConcurrency,
          minGain: numberFlag(f, 'min-gain')!,
        },
      },
      (label, done, total) => progress.update(label, done, total),
    );
    progress.done();
    if (f.json) console.log(JSON.stringify(out.results, null, 2));
    else process.stdout.write(out.markdown);
    console.error(`wrote ${out.files.markdown}, ${out.files.json} and ${out.files.svg}`);
    return EXIT.ok;
  },
};
