// Kubernetes Events for the operator's decisions, aggregated like client-go's recorder: the same
// (object, reason, message) within ten minutes bumps the count of one Event instead of a new one.
import type { Logger } from '../common/log.js';
import type { OperatorApi } from './kube/operator-api.js';
import type { NPUModel } from './types.js';

interface Seen {
  name: string;
  count: number;
  first: string;
  at: number;
}

export class EventRecorder {
  private readonly seen = new Map<string, Seen>();

  constructor(
    private readonly kube: OperatorApi,
    private readonly component: string,
    private readonly log: Logger,
  ) {}

  async record(m: NPUModel, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    const ns = m.metadata.namespace ?? 'default';
    const key = `${m.metadata.uid}/${reason}/${message}`;
    const now = new Date();
    const prev = this.seen.get(key);
    (type === 'Warning' ? this.log.warn : this.log.info)('event', { model: `${ns}/${m.metadata.name}`, type, reason, message });
    try {
      if (prev && now.getTime() - prev.at < 600_000) {
        prev.count++;
        prev.at = now.getTime();
        await this.kube.events.mergePatch(ns, prev.name, { count: prev.count, lastTimestamp: now.toISOString() });
        return;
      }
      // An Event's name is at most 253 characters; a model's name may be that long (InvalidName is recorded for it).
      const name = `${m.metadata.name.slice(0, 200)}.${now.getTime().toString(16)}${Math.floor(Math.random() * 0xfff).toString(16)}`;
      await this.kube.events.create(ns, {
        apiVersion: 'v1',
        kind: 'Event',
        metadata: { name, namespace: ns },
        involvedObject: { apiVersion: m.apiVersion, kind: m.kind, name: m.metadata.name, namespace: ns, uid: m.metadata.uid, resourceVersion: m.metadata.resourceVersion },
        reason,
        message,
        type,
        source: { component: this.component },
        reportingComponent: this.component,
        firstTimestamp: now.toISOString(),
        lastTimestamp: now.toISOString(),
        count: 1,
      });
      this.seen.set(key, { name, count: 1, first: now.toISOString(), at: now.getTime() });
      if (this.seen.size > 5000) this.seen.delete(this.seen.keys().next().value!);
    } catch (e) {
      this.log.warn('event not recorded', { reason, error: (e as Error).message });
    }
  }
}
