// The autoscaling loop on the leader: every scrape interval, for each NPUModel with spec.autoscaling,
// scrape its ready serving pods, run the policy, write replicas through the scale subresource (the
// path `kubectl scale` and an HPA use), status.autoscaler (with the recommendation history, so a
// restarted operator neither scales down early nor forgets a spike) and an Event per scale decision.
import { SPEC_DEFAULTS } from '../../common/defaults.js';
import { heldRequests } from '../../common/demand.js';
import type { Logger } from '../../common/log.js';
import type { OperatorConfig } from '../config.js';
import type { EventRecorder } from '../events.js';
import type { OperatorApi } from '../kube/operator-api.js';
import { autoscalerDesiredReplicas, autoscalerScrapeFailures, autoscalerTokensPerSecond, autoscalerTtftP95 } from '../metrics.js';
import type { World } from '../reconcile.js';
import { LABEL_COMPONENT, LABEL_INSTANCE } from '../resources/common.js';
import { servicePort } from '../resources/deployment.js';
import { sleep } from '../sleep.js';
import { type AutoscalerStatus, type KubeObject, type NPUModel } from '../types.js';
import { decide, STABLE_WINDOW_MS, type AutoscalingTargets, type Decision, type ScrapeRound } from './policy.js';
import { scrapeRound, type ServingPod } from './scrape.js';
import { requestsSeen, zeroDecision, type ZeroDecision } from './zero.js';

interface PodObject extends KubeObject {
  status?: {
    podIP?: string;
    conditions?: Array<{ type: string; status: string; lastTransitionTime?: string }>;
  };
}

/** spec.autoscaling with the CRD's defaults filled in (the API server fills them too; a cache may predate the CRD). */
export function autoscalingTargets(m: NPUModel): (AutoscalingTargets & { scaleToZeroAfterSeconds: number }) | null {
  const a = m.spec.autoscaling;
  if (!a) return null;
  return {
    minReplicas: a.minReplicas ?? SPEC_DEFAULTS.autoscaling.minReplicas,
    maxReplicas: a.maxReplicas,
    targetTokensPerSecondPerReplica: a.targetTokensPerSecondPerReplica ?? SPEC_DEFAULTS.autoscaling.targetTokensPerSecondPerReplica,
    ttftP95TargetMs: a.ttftP95TargetMs ?? SPEC_DEFAULTS.autoscaling.ttftP95TargetMs,
    scaleDownStabilizationSeconds: a.scaleDownStabilizationSeconds ?? SPEC_DEFAULTS.autoscaling.scaleDownStabilizationSeconds,
    scaleToZeroAfterSeconds: a.scaleToZeroAfterSeconds ?? SPEC_DEFAULTS.autoscaling.scaleToZeroAfterSeconds,
    maxBatchSize: m.spec.runtime?.maxBatchSize ?? SPEC_DEFAULTS.runtime.maxBatchSize,
  };
}

/** Ready, not terminating serving pods of the model with an IP. */
export function servingPods(world: World, m: NPUModel): ServingPod[] {
  return readyPods(world, m).map((p) => ({ name: p.metadata.name, ip: p.status!.podIP! }));
}

/**
 * Median seconds from creation to Ready over the model's ready serving pods, what the policy's trend
 * looks ahead by; undefined when no pod shows both times.
 */
export function podStartupSeconds(world: World, m: NPUModel): number | undefined {
  const seconds = readyPods(world, m).flatMap((p) => {
    const ready = p.status?.conditions?.find((c) => c.type === 'Ready')?.lastTransitionTime;
    const created = p.metadata.creationTimestamp;
    const s = ready && created ? (Date.parse(ready) - Date.parse(created)) / 1000 : NaN;
    return Number.isFinite(s) && s >= 0 ? [s] : [];
  }).sort((a, b) => a - b);
  return seconds.length ? seconds[Math.floor(seconds.length / 2)] : undefined;
}

function readyPods(world: World, m: NPUModel): PodObject[] {
  return (world.pods.list() as PodObject[]).filter((p) =>
    p.metadata.namespace === m.metadata.namespace &&
    p.metadata.labels?.[LABEL_INSTANCE] === m.metadata.name &&
    p.metadata.labels?.[LABEL_COMPONENT] === 'server' &&
    !p.metadata.deletionTimestamp &&
    !!p.status?.podIP &&
    p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'));
}

const round1 = (v: number) => Math.round(v * 10) / 10;

export class Autoscaler {
  private readonly rounds = new Map<string, ScrapeRound[]>();

  constructor(
    private readonly kube: OperatorApi,
    private readonly world: World,
    private readonly cfg: OperatorConfig,
    private readonly events: EventRecorder,
    private readonly log: Logger,
  ) {}

  /** Runs one pass every scrapeIntervalSeconds until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    const intervalMs = this.cfg.scrapeIntervalSeconds * 1000;
    this.log('autoscaler started', { scrapeIntervalSeconds: this.cfg.scrapeIntervalSeconds });
    while (!signal.aborted) {
      const started = Date.now();
      await this.pass();
      const waitMs = Math.max(0, intervalMs - (Date.now() - started));
      await sleep(waitMs, signal);
    }
  }

  /** One scrape and decision for every autoscaled model. */
  async pass(): Promise<void> {
    const models = this.world.models.list((m) => !!m.spec.autoscaling && !m.metadata.deletionTimestamp);
    const live = new Set(models.map((m) => m.metadata.uid ?? ''));
    for (const uid of this.rounds.keys()) if (!live.has(uid)) this.rounds.delete(uid);
    await Promise.all(models.map(async (m) => {
      try {
        await this.step(m);
      } catch (e) {
        this.log.warn('autoscaling failed; next pass retries', { model: `${m.metadata.namespace}/${m.metadata.name}`, error: (e as Error).message });
      }
    }));
  }


  private async step(cached: NPUModel): Promise<void> {
    const key = `${cached.metadata.namespace}/${cached.metadata.name}`;
    const pods = servingPods(this.world, cached);
    const timeoutMs = Math.min(2000, this.cfg.scrapeIntervalSeconds * 500);
    const round = await scrapeRound(pods, servicePort(cached), timeoutMs, (pod, error) => {
      autoscalerScrapeFailures.inc({ namespace: cached.metadata.namespace ?? '', model: cached.metadata.name });
      this.log.warn('scrape failed; pod skipped this round', { model: key, pod, error });
    });
    // The model may have changed while we scraped (kubectl scale, a spec edit): decide on the newest.
    const m = this.world.models.get(key);
    const targets = m && autoscalingTargets(m);
    if (!m || !targets) return;
    const uid = m.metadata.uid ?? '';
    const previous = this.rounds.get(uid)?.at(-1);
    const rounds = [...(this.rounds.get(uid) ?? []).filter((r) => r.timeMs > round.timeMs - STABLE_WINDOW_MS - 1000), round];
    this.rounds.set(uid, rounds);
    // A model scaled to zero starts again at one replica when spec.replicas is unset.
    const current = m.spec.replicas ?? Math.max(1, targets.minReplicas);
    const prev = m.status?.autoscaler;
    const held = heldRequests(m.metadata.annotations, round.timeMs);
    const zero = zeroDecision({
      ...targets,
      heldRequests: held,
      requestsSeen: requestsSeen(previous, round),
      lastRequestMs: prev?.lastRequestTime ? Date.parse(prev.lastRequestTime) : undefined,
      nowMs: round.timeMs,
    });
    const d = withZero(decide({
      rounds,
      currentReplicas: current,
      readyReplicas: pods.length,
      targets: { ...targets, minReplicas: zero.floor },
      history: (prev?.recommendations ?? []).map((r) => ({ timeMs: Date.parse(r.time), replicas: r.replicas })),
      rolloutInProgress: !!m.status?.targetRevision,
      nowMs: round.timeMs,
      podStartupSeconds: podStartupSeconds(this.world, m),
    }), zero, current);
    const labels = { namespace: m.metadata.namespace ?? '', model: m.metadata.name };
    autoscalerDesiredReplicas.set(labels, d.desiredReplicas);
    if (d.inputs) autoscalerTokensPerSecond.set(labels, d.inputs.tokensPerSecond);
    if (d.inputs?.ttftP95Ms != null) autoscalerTtftP95.set(labels, d.inputs.ttftP95Ms / 1000);
    let lastScaleTime = prev?.lastScaleTime;
    if (d.desiredReplicas !== current) {
      await this.kube.npumodelScale.mergePatch(m.metadata.namespace, m.metadata.name, { spec: { replicas: d.desiredReplicas } });
      lastScaleTime = new Date(round.timeMs).toISOString();
      const up = d.desiredReplicas > current;
      this.log('scaled', { model: key, from: current, to: d.desiredReplicas, reason: d.reason });
      const reason = d.desiredReplicas === 0 ? 'ScaledToZero' : current === 0 ? 'ScaledFromZero' : up ? 'ScaledUp' : 'ScaledDown';
      await this.events.record(m, 'Normal', reason, `${current} -> ${d.desiredReplicas} replicas: ${d.reason}`);
    }
    await this.kube.npumodelStatus.mergePatch(m.metadata.namespace, m.metadata.name, { status: { autoscaler: this.status(d, lastScaleTime, zero.lastRequestMs, held) } });
  }

  /** A merge patch of status.autoscaler: null removes a field an older decision had set. */
  private status(d: Decision, lastScaleTime: string | undefined, lastRequestMs: number, heldRequests: number): { [K in keyof AutoscalerStatus]-?: AutoscalerStatus[K] | null } {
    return {
      desiredReplicas: d.desiredReplicas,
      tokensPerSecond: d.inputs ? round1(d.inputs.tokensPerSecond) : null,
      ttftP95Ms: d.inputs?.ttftP95Ms != null ? round1(d.inputs.ttftP95Ms) : null,
      waitingRequests: d.inputs ? round1(d.inputs.waitingRequests) : null,
      lastScaleTime: lastScaleTime ?? null,
      lastRequestTime: new Date(lastRequestMs).toISOString(),
      heldRequests,
      reason: d.reason,
      recommendations: d.history.map((h) => ({ time: new Date(h.timeMs).toISOString(), replicas: h.replicas })),
    };
  }
}

/**
 * The policy's decision with scale to zero: an idle model goes to zero at once (its idle time already
 * outlasted any stabilization), and a wake names the held requests as its reason.
 */
export function withZero(d: Decision, zero: ZeroDecision, current: number): Decision {
  if (zero.idle && current > 0) return { ...d, desiredReplicas: 0, reason: zero.reason! };
  if (zero.reason && d.desiredReplicas === zero.floor && zero.floor > current) return { ...d, reason: zero.reason };
  return d;
}
