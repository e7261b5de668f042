// Conversation affinity: which replica last took each prompt prefix the gateway routed, so a
// conversation's next turn goes back to the replica whose prefix cache holds its history. The hash
// ring alone keys a request by its first characters (usually a system prompt many conversations
// share); when that replica is at its load bound a conversation spills to another, and without this
// memory its next turn would go back to the ring's choice and prefill its whole history again. As
// SGLang's cache-aware router keeps an approximate tree of what each worker has seen, the gateway
// keeps the prefixes it sent, at message boundaries: a chat request of n messages is the chain of its
// first 1..n messages; a completions prompt is the chain of its 256-character (or 64-token) pieces.
// Only prefixes of two units or more are remembered: one unit (a shared system prompt) is the ring's
// to place. The memory is approximate by design: a replica may have evicted what it was sent, and an
// entry naming a replica that left is ignored.
import { createHash } from 'node:crypto';

import { contentText } from './prefix.js';

/** Prefixes remembered across all models, least recently used forgotten first (about 150 bytes each). */
export const DEFAULT_AFFINITY_ENTRIES = 100_000;
const TEXT_PIECE = 256;
const TOKEN_PIECE = 64;
/** Units a prefix must have to be remembered. */
const MIN_UNITS = 2;

function pieces<T>(items: string | readonly T[], size: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < items.length; i += size) out.push(typeof items === 'string' ? items.slice(i, i + size) : items.slice(i, i + size).join(','));
  return out;
}

/** The units of a request's prompt in order: chat messages (role and text), or pieces of a completions prompt. */
function promptUnits(body: unknown): string[] {
  if (!body || typeof body !== 'object') return [];
  const b = body as { messages?: unknown; prompt?: unknown };
  if (Array.isArray(b.messages)) {
    return b.messages.map((m) => {
      const msg = (m && typeof m === 'object' ? m : {}) as { role?: unknown; content?: unknown };
      return `${typeof msg.role === 'string' ? msg.role : ''}\n${contentText(msg.content)}`;
    });
  }
  const p = b.prompt;
  if (typeof p === 'string') return pieces(p, TEXT_PIECE);
  // A list of prompts is a batch: its first prompt stands for it, as for the ring's key.
  const first = Array.isArray(p) && (typeof p[0] === 'string' || Array.isArray(p[0])) ? p[0] : p;
  if (typeof first === 'string') return pieces(first, TEXT_PIECE);
  if (Array.isArray(first)) return pieces(first as unknown[], TOKEN_PIECE);
  return [];
}

/**
 * The hashes of a request's prompt prefixes of MIN_UNITS units and more, shortest first, each
 * covering all units before it (a hash chain seeded by the model, so models never share entries).
 */
export function prefixChain(model: string, body: unknown): string[] {
  const units = promptUnits(body);
  const chain: string[] = [];
  let h = createHash('sha1').update(model).digest('base64');
  units.forEach((unit, i) => {
    h = createHash('sha1').update(h).update('\0').update(unit, 'utf8').digest('base64');
    if (i + 1 >= MIN_UNITS) chain.push(h);
  });
  return chain;
}

export class AffinityMemory {
  /** Prefix hash -> the replica that last took it; Map order is recency (oldest first). */
  private readonly entries = new Map<string, string>();

  constructor(private readonly capacity = DEFAULT_AFFINITY_ENTRIES) {}

  get size(): number {
    return this.entries.size;
  }

  /** Replicas that took a prefix of `chain`, longest prefix first, each once. */
  candidates(chain: readonly string[]): string[] {
    const out: string[] = [];
    for (let i = chain.length - 1; i >= 0; i--) {
      const r = this.entries.get(chain[i]!);
      if (r !== undefined && !out.includes(r)) out.push(r);
    }
    return out;
  }

  /** Records that `replica` took every prefix of `chain` (it now holds them all). */
  remember(chain: readonly string[], replica: string): void {
    for (const h of chain) {
      this.entries.delete(h);
      this.entries.set(h, replica);
    }
    for (const oldest of this.entries.keys()) {
      if (this.entries.size <= this.capacity) break;
      this.entries.delete(oldest);
    }
  }
}
