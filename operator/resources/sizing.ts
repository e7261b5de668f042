// A serving pod's CPU and memory, as the kubelet will enforce them: the engine threads set the CPU
// request and limit (the engine follows the limit's quota), the converted model, its KV cache and the
// runtime set the memory request and limit. spec.runtime.resources overrides field by field; a memory
// limit below what the model needs is reported instead of rolled into a pod the kernel would kill.
import { DEFAULT_SERVING_THREADS, SPEC_DEFAULTS } from '../../common/defaults.js';
import { describeServingMemory, limitMebibytes, mebibytes, servingMemory, type ModelFootprint, type ServingMemory } from '../../common/serving-memory.js';
import type { NPUModel, Quantity } from '../types.js';

export interface PodSizing {
  /** Engine threads: spec.runtime.threads, else the CPU limit or request rounded up, else the default. */
  threads: number;
  /** Whether `--threads` is passed: only when the spec names them; otherwise the engine reads its CPU quota. */
  threadsFromSpec: boolean;
  requests: { cpu: Quantity; memory?: Quantity };
  limits: { cpu: Quantity; memory?: Quantity };
  /** What one server needs, when the revision's footprint is known. */
  memory?: ServingMemory;
  /** Why no pod may be rolled: the memory limit is below `memory.totalBytes` (reason InsufficientMemory). */
  insufficientMemory?: string;
}

const SUFFIX: Record<string, number> = { n: 1e-9, u: 1e-6, m: 1e-3, '': 1, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60 };

/** A Kubernetes quantity as a number (`500m` -> 0.5, `8Gi` -> 8589934592, `1e3` -> 1000); undefined when it is not one. */
export function parseQuantity(q: Quantity | undefined): number | undefined {
  if (q === undefined) return undefined;
  if (typeof q === 'number') return q;
  const m = /^([+-]?(?:\d+(?:\.\d*)?|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?)$/.exec(q.trim());
  if (!m) return undefined;
  return Number(m[1] + (m[2] ?? '')) * SUFFIX[m[3] ?? ''];
}

const larger = (a: Quantity, b: Quantity | undefined): Quantity => (b !== undefined && (parseQuantity(b) ?? 0) > (parseQuantity(a) ?? 0) ? b : a);

function cpu(m: NPUModel) {
  const rt = m.spec.runtime ?? {};
  const user = rt.resources ?? {};
  const fromCpu = parseQuantity(user.limits?.cpu) ?? parseQuantity(user.requests?.cpu);
  const threads = rt.threads ?? (fromCpu !== undefined ? Math.max(1, Math.ceil(fromCpu)) : DEFAULT_SERVING_THREADS);
  const request = user.requests?.cpu ?? user.limits?.cpu ?? String(threads);
  // A limit below the request is invalid: the derived limit rises to a larger request.
  const limit = user.limits?.cpu ?? larger(String(threads), request);
  return { threads, threadsFromSpec: rt.threads !== undefined, request, limit };
}

/** The serving settings of the spec, as the Deployment passes them to `npuserve serve` (KV cache: batch x seq len). */
export function servingSettings(m: NPUModel) {
  const rt = m.spec.runtime ?? {};
  const maxBatchSize = rt.maxBatchSize ?? SPEC_DEFAULTS.runtime.maxBatchSize;
  const maxSeqLen = rt.maxSeqLen ?? SPEC_DEFAULTS.runtime.maxSeqLen;
  return { maxBatchSize, maxSeqLen, kvCacheTokens: maxBatchSize * maxSeqLen, kvCacheDtype: rt.kvCacheDtype ?? SPEC_DEFAULTS.runtime.kvCacheDtype };
}

/** `footprint` is the serving revision's, from its conversion; without it only the user's memory figures apply. */
export function podSizing(m: NPUModel, footprint: ModelFootprint | undefined, revision: string): PodSizing {
  const c = cpu(m);
  const user = m.spec.runtime?.resources ?? {};
  const sizing: PodSizing = { threads: c.threads, threadsFromSpec: c.threadsFromSpec, requests: { cpu: c.request }, limits: { cpu: c.limit } };
  const memory = footprint && servingMemory(footprint, servingSettings(m));
  const derived = memory && `${Math.ceil(memory.totalBytes / 2 ** 20)}Mi`;
  const request = user.requests?.memory ?? user.limits?.memory ?? derived;
  const limit = user.limits?.memory ?? (derived !== undefined ? larger(derived, request) : undefined);
  if (request !== undefined) sizing.requests.memory = request;
  if (limit !== undefined) sizing.limits.memory = limit;
  if (!memory) return sizing;
  sizing.memory = memory;
  const limitBytes = parseQuantity(limit);
  if (limitBytes !== undefined && limitBytes < memory.totalBytes)
    sizing.insufficientMemory =
      `spec.runtime.resources.limits.memory ${limit} (${limitMebibytes(limitBytes)}) is below the ${mebibytes(memory.totalBytes)} revision ${revision} needs per pod: ${describeServingMemory(memory)}; ` +
      `a pod would be killed for memory at every start, so none is started. Raise the limit (or remove it: the operator then sets ${derived}), or lower runtime.maxBatchSize or runtime.maxSeqLen${servingSettings(m).kvCacheDtype === 'f32' ? ', or use runtime.kvCacheDtype f16' : ''}`;
  return sizing;
}
