// Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection: acquire when the
// lease is free or expired, renew every retry period, and give up leadership (the process exits)
// when renewals fail for longer than the renew deadline, so two replicas never both act. Expiry is
// judged by this process's own clock: the lease counts as renewed when we last saw its record change,
// never by the holder's renewTime, so clock skew between machines cannot steal a live lease.
import type { Logger } from '../common/log.js';
import { ApiError, isConflict, isNotFound } from './kube/client.js';
import type { Lease, OperatorApi } from './kube/operator-api.js';
import { sleep } from './sleep.js';

export interface LeaderOptions {
  namespace: string;
  name: string;
  identity: string;
  leaseDurationSeconds: number;
  renewDeadlineSeconds: number;
  retryPeriodSeconds: number;
}

const microTime = (d: Date) => d.toISOString().replace('Z', '000Z');

export class LeaderElector {
  /** The lease record as last read and when (local monotonic clock) it last changed. */
  private observed: { record: string; at: number } | undefined;

  constructor(
    private readonly kube: Pick<OperatorApi, 'leases'>,
    private readonly o: LeaderOptions,
    private readonly log: Logger,
    private readonly clock: () => number = () => performance.now(),
  ) {}

  /** One attempt to take or renew the lease; true when we hold it. */
  private async tryAcquireOrRenew(): Promise<boolean> {
    const now = new Date();
    let lease: Lease | undefined;
    try {
      lease = await this.kube.leases.get(this.o.namespace, this.o.name);
    } catch (e) {
      if (!isNotFound(e)) throw e;
    }
    const spec = { holderIdentity: this.o.identity, leaseDurationSeconds: this.o.leaseDurationSeconds, renewTime: microTime(now) };
    if (!lease) {
      await this.kube.leases.create(this.o.namespace, { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: this.o.name, namespace: this.o.namespace }, spec: { ...spec, acquireTime: microTime(now), leaseTransitions: 0 } });
      return true;
    }
    const holder = lease.spec.holderIdentity;
    const record = JSON.stringify([holder, lease.spec.renewTime, lease.spec.acquireTime, lease.spec.leaseTransitions]);
    const local = this.clock();
    if (record !== this.observed?.record) this.observed = { record, at: local };
    const expired = this.observed.at + (lease.spec.leaseDurationSeconds ?? this.o.leaseDurationSeconds) * 1000 < local;
    if (holder && holder !== this.o.identity && !expired) return false;
    const taking = holder !== this.o.identity;
    await this.kube.leases.replace(this.o.namespace, this.o.name, {
      ...lease,
      spec: {
        ...lease.spec,
        ...spec,
        acquireTime: taking ? microTime(now) : lease.spec.acquireTime,
        leaseTransitions: (lease.spec.leaseTransitions ?? 0) + (taking ? 1 : 0),
      },
    });
    return true;
  }

  private async attempt(): Promise<boolean> {
    try {
      return await this.tryAcquireOrRenew();
    } catch (e) {
      if (!isConflict(e)) this.log.warn('lease update failed', { error: (e as Error).message });
      return false;
    }
  }

  /** Waits until this process leads; then keeps renewing and calls `onLost` if it cannot. */
  async run(signal: AbortSignal, onLost: () => void): Promise<void> {
    while (!signal.aborted && !(await this.attempt())) await sleep(this.o.retryPeriodSeconds * 1000, signal);
    if (signal.aborted) return;
    this.log('became leader', { lease: `${this.o.namespace}/${this.o.name}`, identity: this.o.identity });
    void this.renewLoop(signal, onLost);
  }

  private async renewLoop(signal: AbortSignal, onLost: () => void): Promise<void> {
    let lastRenew = Date.now();
    while (!signal.aborted) {
      await sleep(this.o.retryPeriodSeconds * 1000, signal);
      if (signal.aborted) break;
      if (await this.attempt()) {
        lastRenew = Date.now();
      } else if (Date.now() - lastRenew > this.o.renewDeadlineSeconds * 1000) {
        this.log.warn('lost leadership', { lease: `${this.o.namespace}/${this.o.name}` });
        onLost();
        return;
      }
    }
  }

  /** Releases the lease on shutdown so a standby takes over at once. */
  async release(): Promise<void> {
    try {
      const lease = await this.kube.leases.get(this.o.namespace, this.o.name);
      if (lease.spec.holderIdentity !== this.o.identity) return;
      await this.kube.leases.replace(this.o.namespace, this.o.name, { ...lease, spec: { ...lease.spec, holderIdentity: '', leaseDurationSeconds: 1, renewTime: microTime(new Date()) } });
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
    }
  }
}
