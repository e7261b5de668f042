// Requests held while their model has no ready replica (scaled to zero, starting, or its last replica
// draining): each waits until the model has a replica, its deadline passes or its client goes away.
// The count per model is what the gateway reports as demand (common/demand.ts) and as a metric.

export type HoldOutcome = 'ready' | 'timeout' | 'aborted';

interface Waiter {
  resolve: (o: HoldOutcome) => void;
}

export class Holds {
  private readonly waiting = new Map<string, Set<Waiter>>();

  /** `onChange(model, held)` after every change of a model's held count. */
  constructor(private readonly onChange: (model: string, held: number) => void = () => {}) {}

  count(model: string): number {
    return this.waiting.get(model)?.size ?? 0;
  }

  /** Models with held requests and how many. */
  counts(): Map<string, number> {
    return new Map([...this.waiting].map(([m, s]) => [m, s.size]));
  }

  /** Waits up to `timeoutMs` for `release(model)`; resolves `aborted` at once if `signal` aborts. */
  hold(model: string, timeoutMs: number, signal: AbortSignal): Promise<HoldOutcome> {
    if (signal.aborted) return Promise.resolve('aborted');
    return new Promise((resolve) => {
      const set = this.waiting.get(model) ?? new Set<Waiter>();
      this.waiting.set(model, set);
      const finish = (o: HoldOutcome) => {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        if (!set.delete(waiter)) return;
        if (set.size === 0 && this.waiting.get(model) === set) this.waiting.delete(model);
        this.onChange(model, set.size);
        resolve(o);
      };
      const waiter: Waiter = { resolve: finish };
      const onAbort = () => finish('aborted');
      const timer = setTimeout(() => finish('timeout'), timeoutMs);
      signal.addEventListener('abort', onAbort, { once: true });
      set.add(waiter);
      this.onChange(model, set.size);
    });
  }

  /** The model has a ready replica: every request held for it goes on. */
  release(model: string): void {
    for (const w of [...(this.waiting.get(model) ?? [])]) w.resolve('ready');
  }
}
