// The memory one `npuserve serve` process holds, from the model file and the serving settings: the
// weights (read whole into private memory), the paged KV cache, the RoPE tables and the runtime's
// own share. The operator sizes serving pods from it; `serve` checks its cgroup's limit against it.

export type KvCacheDtype = 'f16' | 'f32';

/** What a converted model contributes, as the conversion (or inspection) Job reports it. */
export interface ModelFootprint {
  /** Size of the .npu file; the engine reads it whole into memory. */
  fileBytes: number;
  layers: number;
  kvHeads: number;
  headDim: number;
}

export interface ServingSettings {
  /** Tokens the KV cache holds across all sequences (serve's default: max batch size x max seq len). */
  kvCacheTokens: number;
  maxSeqLen: number;
  kvCacheDtype: KvCacheDtype;
}

/** The engine's KV block; the cache is allocated in whole blocks. */
export const KV_BLOCK_TOKENS = 16;

/**
 * Node.js, the HTTP server, the tokenizer, the chat template renderer process, the engine's
 * activation scratch and thread stacks: the RSS of serve beyond its weights and KV cache was 232 MiB
 * on the tiny and the 100m test models (32k vocabulary, 2 threads; docs/operations.md, "Serving pod
 * resources"). The margin covers larger vocabularies, more threads and more scratch.
 */
export const RUNTIME_OVERHEAD_BYTES = 384 * 2 ** 20;

export interface ServingMemory {
  weightBytes: number;
  kvCacheBytes: number;
  ropeBytes: number;
  overheadBytes: number;
  totalBytes: number;
  /** How kvCacheBytes is made, for messages: `4096 tokens x 32 layers x 2 (K, V) x 8 KV heads x 128 head dim x 2 bytes (f16)`. */
  kvCacheFormula: string;
}

export function servingMemory(model: ModelFootprint, s: ServingSettings): ServingMemory {
  const tokens = Math.ceil(s.kvCacheTokens / KV_BLOCK_TOKENS) * KV_BLOCK_TOKENS;
  const elementBytes = s.kvCacheDtype === 'f16' ? 2 : 4;
  const kvCacheBytes = tokens * model.layers * 2 * model.kvHeads * model.headDim * elementBytes;
  const ropeBytes = 2 * s.maxSeqLen * Math.floor(model.headDim / 2) * 4;
  const totalBytes = model.fileBytes + kvCacheBytes + ropeBytes + RUNTIME_OVERHEAD_BYTES;
  return {
    weightBytes: model.fileBytes,
    kvCacheBytes,
    ropeBytes,
    overheadBytes: RUNTIME_OVERHEAD_BYTES,
    totalBytes,
    kvCacheFormula: `${tokens} tokens x ${model.layers} layers x 2 (K, V) x ${model.kvHeads} KV heads x ${model.headDim} head dim x ${elementBytes} bytes (${s.kvCacheDtype})`,
  };
}

/** A need in MiB, rounded up; a limit is rounded down (`limitMebibytes`), so a limit short by a byte never reads as equal. */
export function mebibytes(bytes: number): string {
  return `${Math.ceil(bytes / 2 ** 20)} MiB`;
}

export function limitMebibytes(bytes: number): string {
  return `${Math.floor(bytes / 2 ** 20)} MiB`;
}

/** `weights 19 MiB + KV cache 64 MiB (...) + RoPE tables 1 MiB + runtime 384 MiB = 468 MiB`. */
export function describeServingMemory(m: ServingMemory): string {
  return `weights ${mebibytes(m.weightBytes)} + KV cache ${mebibytes(m.kvCacheBytes)} (${m.kvCacheFormula}) + RoPE tables ${mebibytes(m.ropeBytes)} + runtime ${mebibytes(m.overheadBytes)} = ${mebibytes(m.totalBytes)}`;
}
