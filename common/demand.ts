// How the gateway tells the operator that requests wait for a model with no ready replica: each
// gateway pod writes one annotation on the NPUModel, `held-requests.npuserve.io/<gateway pod>`, whose
// value is `{"requests":N,"time":"<RFC 3339>"}`, refreshed while it holds requests and removed when it
// holds none. The operator sums the fresh ones (a gateway that died leaves a stale entry, ignored once
// older than HELD_DEMAND_TTL_SECONDS) and scales the model to at least one replica for them.

export const HELD_DEMAND_PREFIX = 'held-requests.npuserve.io/';
/** A gateway rewrites its entry at least this often while it holds requests. */
export const HELD_DEMAND_REFRESH_SECONDS = 10;
/** An entry older than this is a gateway that stopped (crashed, evicted): not demand. */
export const HELD_DEMAND_TTL_SECONDS = 3 * HELD_DEMAND_REFRESH_SECONDS;

export interface HeldDemand {
  requests: number;
  time: string;
}

/** The annotation key of one gateway: its pod name, cut with a hash suffix to the 63 characters a key's name may have. */
export function heldDemandKey(gateway: string, hash: (s: string) => string): string {
  const name = gateway.replace(/[^A-Za-z0-9_.-]/g, '-').replace(/^[^A-Za-z0-9]+|[^A-Za-z0-9]+$/g, '') || 'gateway';
  return HELD_DEMAND_PREFIX + (name.length <= 63 ? name : `${name.slice(0, 54)}-${hash(name).slice(0, 8)}`);
}

/** Requests held for the model by gateways that wrote their entry in the last HELD_DEMAND_TTL_SECONDS. */
export function heldRequests(annotations: Record<string, string> | undefined, nowMs: number): number {
  let total = 0;
  for (const [key, value] of Object.entries(annotations ?? {})) {
    if (!key.startsWith(HELD_DEMAND_PREFIX)) continue;
    try {
      const d = JSON.parse(value) as Partial<HeldDemand>;
      const at = Date.parse(d.time ?? '');
      if (Number.isSafeInteger(d.requests) && d.requests! > 0 && nowMs - at <= HELD_DEMAND_TTL_SECONDS * 1000) total += d.requests!;
    } catch {
      // Not ours to read: a hand-written value is no demand.
    }
  }
  return total;
}
