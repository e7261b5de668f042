// Runs one pod bound to a local node the way the kubelet would: volumes, init containers in order,
// then every container as a local process group inside the pod's network namespace; probes,
// restarts by restartPolicy, and the pod's status (phase, conditions, container states, pod IP)
// written to the API server.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isNotFound, sleep, type KubeApi } from '../kube.js';
import { signalGroup } from '../processes.js';
import { ContainerConfigError, expandReferences, resolveCommand, rewritePaths, type MountMap } from './container.js';
import type { PodAttachment } from './pod-network.js';
import { runProbe, type ProbeTarget } from './probe.js';
import type { Container, ContainerStatus, EnvVar, Pod, PodCondition, PodStatus, Probe } from './types.js';
import { containerMounts, fieldValue, nodeRootDir, prepareVolumes, VolumeNotReady } from './volumes.js';

export interface AgentContext {
  client: KubeApi;
  clusterDir: string;
  repoRoot: string;
  apiserverPort: number;
  /** The pod network's gateway: the node's address, where the agent forwards to the API server. */
  gateway: string;
  /** One empty file per running process group, named by its pid (read by `cluster:down`). */
  pidDir: string;
  log: (message: string) => void;
}

const backoffBaseMs = 1000;
const backoffMaxMs = 30_000;
const now = () => new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');

/** Container fields the agent honours beyond those in types.ts: termination message and preStop. */
type ContainerExtras = Container & {
  terminationMessagePath?: string;
  terminationMessagePolicy?: 'File' | 'FallbackToLogsOnError';
  lifecycle?: { preStop?: { sleep?: { seconds: number } } };
};

interface ContainerRun {
  spec: Container;
  status: ContainerStatus;
  child?: ChildProcess;
  exited?: Promise<void>;
  /** Bumped on every start; probe loops of an older start stop. */
  generation: number;
  startedAtMs: number;
  probeCounts: { readyOk: number; readyFail: number; liveFail: number; startFail: number };
  /** Pending timer per purpose (a probe kind, or a start retry); a new one replaces the old. */
  timers: Map<string, NodeJS.Timeout>;
  restartPending: boolean;
}

export class PodRunner {
  private pod: Pod;
  private readonly podDir: string;
  private readonly runs: ContainerRun[];
  private readonly initRuns: ContainerRun[];
  private phase: NonNullable<PodStatus['phase']> = 'Pending';
  private initialized = false;
  private podReason?: string;
  private podMessage?: string;
  private startTime = now();
  private stopping = false;
  private gone = false;
  private dirty = false;
  private flushing?: Promise<void>;
  private readonly transitions = new Map<string, { status: string; time: string }>();
  private volumeDirs = new Map<string, string>();

  constructor(
    private readonly ctx: AgentContext,
    pod: Pod,
    private readonly nodeName: string,
    private readonly network: PodAttachment,
  ) {
    this.pod = pod;
    const { namespace, name, uid } = pod.metadata;
    this.podDir = path.join(ctx.clusterDir, 'pods', `${namespace}_${name}_${uid}`);
    const newRun = (spec: Container): ContainerRun => ({
      spec,
      status: {
        name: spec.name,
        image: spec.image,
        imageID: `npuserve-local://${spec.image}`,
        ready: false,
        started: false,
        restartCount: 0,
        state: { waiting: { reason: 'ContainerCreating' } },
        lastState: {},
      },
      generation: 0,
      startedAtMs: 0,
      probeCounts: { readyOk: 0, readyFail: 0, liveFail: 0, startFail: 0 },
      timers: new Map(),
      restartPending: false,
    });
    this.runs = pod.spec.containers.map(newRun);
    this.initRuns = (pod.spec.initContainers ?? []).map(newRun);
  }

  private get podIP(): string {
    return this.network.address;
  }

  private get key(): string {
    return `${this.pod.metadata.namespace}/${this.pod.metadata.name}`;
  }

  private get restartPolicy() {
    return this.pod.spec.restartPolicy ?? 'Always';
  }

  /** Called with every newer version of the pod object. */
  update(pod: Pod): void {
    this.pod = pod;
    if (pod.metadata.deletionTimestamp && !this.stopping) {
      const grace = pod.metadata.deletionGracePeriodSeconds ?? pod.spec.terminationGracePeriodSeconds ?? 30;
      void this.terminate(grace);
    }
  }

  async run(): Promise<void> {
    fs.mkdirSync(path.join(this.podDir, 'logs'), { recursive: true });
    this.markDirty();
    if (!(await this.prepareVolumes())) return;
    this.initialized = this.initRuns.length === 0;
    for (const init of this.initRuns) {
      if (!(await this.runInitContainer(init))) return;
    }
    this.initialized = true;
    let allStarted = true;
    for (const run of this.runs) allStarted = (await this.startContainer(run)) && allStarted;
    if (allStarted && !this.stopping && this.phase === 'Pending') this.phase = 'Running';
    this.markDirty();
  }

  private async prepareVolumes(): Promise<boolean> {
    const ctx = { client: this.ctx.client, clusterDir: this.ctx.clusterDir, nodeName: this.nodeName, podDir: this.podDir, hostIP: this.ctx.gateway };
    for (let attempt = 0; !this.stopping; attempt++) {
      try {
        this.volumeDirs = await prepareVolumes(ctx, this.pod);
        this.podReason = this.podMessage = undefined;
        return true;
      } catch (err) {
        const message = (err as Error).message;
        if (!(err instanceof VolumeNotReady)) this.ctx.log(`${this.key}: volumes: ${message}`);
        if (attempt === 0) this.event('FailedMount', `waiting for volumes: ${message}`, 'Warning');
        this.podMessage = message;
        this.markDirty();
        await sleep(1000);
      }
    }
    return false;
  }

  private async runInitContainer(run: ContainerRun): Promise<boolean> {
    for (;;) {
      if (!(await this.startContainer(run))) return false;
      await run.exited;
      if (this.stopping) return false;
      if (run.status.state.terminated?.exitCode === 0) return true;
      if (this.restartPolicy === 'Never') {
        this.phase = 'Failed';
        this.markDirty();
        return false;
      }
      await this.backoff(run);
    }
  }

  private async backoff(run: ContainerRun): Promise<void> {
    const ranMs = Date.now() - run.startedAtMs;
    const delay = ranMs > 60_000 ? backoffBaseMs : Math.min(backoffBaseMs * 2 ** run.status.restartCount, backoffMaxMs);
    run.restartPending = true;
    run.status.lastState = run.status.state;
    run.status.state = { waiting: { reason: 'CrashLoopBackOff', message: `back-off ${delay / 1000}s restarting failed container=${run.spec.name} pod=${this.pod.metadata.name}` } };
    this.event('BackOff', `Back-off restarting failed container ${run.spec.name}`, 'Warning');
    this.markDirty();
    await sleep(delay);
    run.restartPending = false;
    run.status.restartCount++;
  }

  /** The environment a container starts with; values from the pod spec get their paths rewritten. */
  private async containerEnv(spec: Container, mounts: MountMap): Promise<Record<string, string>> {
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
      HOME: process.env.HOME ?? '/root',
      HOSTNAME: this.pod.metadata.name ?? '',
      // The node agent forwards the gateway address to the API server on loopback.
      KUBERNETES_SERVICE_HOST: this.ctx.gateway,
      KUBERNETES_SERVICE_PORT: String(this.ctx.apiserverPort),
      POD_IP: this.podIP,
    };
    const namespace = this.pod.metadata.namespace ?? 'default';
    const readData = async (kind: 'configmaps' | 'secrets', name: string, optional: boolean) => {
      try {
        const obj = await this.ctx.client.get<{ data?: Record<string, string> }>(`/api/v1/namespaces/${namespace}/${kind}/${name}`);
        const data = obj.data ?? {};
        if (kind === 'secrets') for (const k of Object.keys(data)) data[k] = Buffer.from(data[k], 'base64').toString('utf8');
        return data;
      } catch (err) {
        if (isNotFound(err) && optional) return {};
        throw new ContainerConfigError('CreateContainerConfigError', `${kind.slice(0, -1)} "${name}" not found`);
      }
    };
    for (const from of spec.envFrom ?? []) {
      const data = from.configMapRef
        ? await readData('configmaps', from.configMapRef.name, from.configMapRef.optional ?? false)
        : from.secretRef
          ? await readData('secrets', from.secretRef.name, from.secretRef.optional ?? false)
          : {};
      for (const [k, v] of Object.entries(data)) env[(from.prefix ?? '') + k] = rewritePaths(v, mounts);
    }
    for (const e of spec.env ?? []) env[e.name] = rewritePaths(await this.envValue(e, env, readData), mounts);
    return env;
  }

  private async envValue(
    e: EnvVar,
    env: Record<string, string>,
    readData: (kind: 'configmaps' | 'secrets', name: string, optional: boolean) => Promise<Record<string, string>>,
  ): Promise<string> {
    if (e.value !== undefined) return expandReferences(e.value, env);
    const from = e.valueFrom;
    if (from?.fieldRef) return fieldValue(this.pod, from.fieldRef.fieldPath, this.podIP, this.ctx.gateway);
    if (from?.configMapKeyRef) return (await readData('configmaps', from.configMapKeyRef.name, from.configMapKeyRef.optional ?? false))[from.configMapKeyRef.key] ?? '';
    if (from?.secretKeyRef) return (await readData('secrets', from.secretKeyRef.name, from.secretKeyRef.optional ?? false))[from.secretKeyRef.key] ?? '';
    return '';
  }

  private workingDir(spec: Container, mounts: MountMap): string {
    if (!spec.workingDir) {
      const dir = path.join(this.podDir, 'work', spec.name);
      fs.mkdirSync(dir, { recursive: true });
      return dir;
    }
    const rewritten = rewritePaths(spec.workingDir, mounts);
    const dir = rewritten !== spec.workingDir ? rewritten : path.join(nodeRootDir(this.ctx.clusterDir, this.nodeName), spec.workingDir);
    fs.mkdirSync(dir, { recursive: true });
    return dir;
  }

  /**
   * Starts the container's process; false if it cannot start (the reason goes into its waiting
   * state, and a main container is tried again later, as the kubelet retries config errors).
   */
  private async startContainer(run: ContainerRun): Promise<boolean> {
    if (this.stopping) return false;
    const spec = run.spec;
    let child: ChildProcess;
    try {
      // The termination message file (default /dev/termination-log) is a file in the pod's dir,
      // reached through the same path rewriting as volume mounts.
      const messageFile = this.terminationMessageFile(spec);
      fs.mkdirSync(path.dirname(messageFile), { recursive: true });
      fs.writeFileSync(messageFile, '');
      const mounts: MountMap = [...containerMounts(spec.volumeMounts, this.volumeDirs), [(spec as ContainerExtras).terminationMessagePath ?? '/dev/termination-log', messageFile]];
      const env = await this.containerEnv(spec, mounts);
      const expand = (s: string) => rewritePaths(expandReferences(s, env), mounts);
      const command = resolveCommand(
        { ...spec, command: spec.command?.map(expand), args: spec.args?.map(expand) },
        this.ctx.repoRoot,
        env.PATH,
      );
      const logFd = fs.openSync(path.join(this.podDir, 'logs', `${spec.name}.log`), 'a');
      child = spawn('nsenter', [`--net=${this.network.netnsPath}`, '--', command.executable, ...command.args], {
        cwd: this.workingDir(spec, mounts),
        env,
        detached: true,
        stdio: ['ignore', logFd, logFd],
      });
      fs.closeSync(logFd);
      if (child.pid === undefined) {
        child.on('error', () => undefined);
        throw new ContainerConfigError('RunContainerError', `container '${spec.name}': cannot execute ${command.executable}`);
      }
    } catch (err) {
      const reason = err instanceof ContainerConfigError ? err.reason : 'RunContainerError';
      run.status.state = { waiting: { reason, message: (err as Error).message } };
      this.event('Failed', `Error: ${(err as Error).message}`, 'Warning');
      this.ctx.log(`${this.key}: container ${spec.name}: ${(err as Error).message}`);
      this.markDirty();
      if (!this.initRuns.includes(run)) {
        run.timers.set('start', setTimeout(() => void this.startContainer(run).then((ok) => ok && this.onStarted()), 5000));
      }
      return false;
    }
    let resolveExited: () => void = () => undefined;
    run.exited = new Promise<void>((resolve) => (resolveExited = resolve));
    const pid = child.pid ?? 0;
    const startedAt = now();
    run.child = child;
    run.generation++;
    run.startedAtMs = Date.now();
    run.probeCounts = { readyOk: 0, readyFail: 0, liveFail: 0, startFail: 0 };
    run.status.containerID = `npuserve-local://${pid}`;
    run.status.state = { running: { startedAt } };
    run.status.started = !spec.startupProbe;
    run.status.ready = false;
    if (pid) fs.writeFileSync(path.join(this.ctx.pidDir, String(pid)), `${this.key}/${spec.name}\n`);
    this.event('Started', `Started container ${spec.name}`);
    this.startProbes(run);
    this.markDirty();
    child.on('error', (err) => this.ctx.log(`${this.key}: container ${spec.name}: ${err.message}`));
    child.on('exit', (code, signal) => {
      if (pid) fs.rmSync(path.join(this.ctx.pidDir, String(pid)), { force: true });
      const exitCode = code ?? 128 + (signal ? (os.constants.signals[signal] ?? 0) : 0);
      run.child = undefined;
      clearTimers(run);
      run.status.ready = false;
      run.status.started = false;
      run.status.state = {
        terminated: {
          exitCode,
          ...(signal ? { signal: os.constants.signals[signal] } : {}),
          reason: exitCode === 0 ? 'Completed' : 'Error',
          ...this.terminationMessage(spec, exitCode),
          startedAt,
          finishedAt: now(),
          containerID: run.status.containerID,
        },
      };
      resolveExited();
      if (!this.initRuns.includes(run)) void this.onContainerExit(run, exitCode);
      this.markDirty();
    });
    return true;
  }

  private onStarted(): void {
    if (this.phase === 'Pending' && this.runs.every((r) => r.status.state.running || r.status.state.terminated)) {
      this.phase = 'Running';
      this.markDirty();
    }
  }

  private async onContainerExit(run: ContainerRun, exitCode: number): Promise<void> {
    if (this.stopping) return;
    const restart = this.restartPolicy === 'Always' || (this.restartPolicy === 'OnFailure' && exitCode !== 0);
    if (restart) {
      await this.backoff(run);
      await this.startContainer(run);
      return;
    }
    const active = this.runs.some((r) => r.child || r.restartPending || r.status.state.waiting);
    if (!active) {
      this.phase = this.runs.every((r) => r.status.state.terminated?.exitCode === 0) ? 'Succeeded' : 'Failed';
      this.markDirty();
    }
  }

  private probeTarget(run: ContainerRun): ProbeTarget {
    return {
      podIP: this.podIP,
      container: run.spec,
      exec: (command) => {
        const mounts = containerMounts(run.spec.volumeMounts, this.volumeDirs);
        const resolved = resolveCommand({ ...run.spec, command: command.map((c) => rewritePaths(c, mounts)), args: [] }, this.ctx.repoRoot, process.env.PATH ?? '');
        return {
          executable: 'nsenter',
          args: [`--net=${this.network.netnsPath}`, '--', resolved.executable, ...resolved.args],
          env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', POD_IP: this.podIP },
          cwd: this.workingDir(run.spec, mounts),
        };
      },
    };
  }

  private startProbes(run: ContainerRun): void {
    const { startupProbe, readinessProbe, livenessProbe } = run.spec;
    if (startupProbe) this.scheduleProbe(run, 'startup', startupProbe);
    if (readinessProbe) this.scheduleProbe(run, 'readiness', readinessProbe);
    if (livenessProbe) this.scheduleProbe(run, 'liveness', livenessProbe);
    if (!readinessProbe && !startupProbe) run.status.ready = true;
  }

  private scheduleProbe(run: ContainerRun, kind: 'startup' | 'readiness' | 'liveness', probe: Probe): void {
    const generation = run.generation;
    const periodMs = (probe.periodSeconds ?? 10) * 1000;
    const failureThreshold = probe.failureThreshold ?? 3;
    const successThreshold = probe.successThreshold ?? 1;
    const current = () => generation === run.generation && run.child !== undefined && !this.stopping;
    const tick = async () => {
      if (!current()) return;
      if (kind === 'startup' && run.status.started) return;
      if (kind !== 'startup' && !run.status.started) {
        run.timers.set(kind, setTimeout(tick, periodMs));
        return;
      }
      const ok = await runProbe(probe, this.probeTarget(run));
      if (!current()) return;
      const counts = run.probeCounts;
      if (kind === 'startup') {
        if (ok) {
          run.status.started = true;
          if (!run.spec.readinessProbe) run.status.ready = true;
          this.markDirty();
          return;
        }
        if (++counts.startFail >= failureThreshold) return this.failProbe(run, 'Startup');
      } else if (kind === 'readiness') {
        counts.readyOk = ok ? counts.readyOk + 1 : 0;
        counts.readyFail = ok ? 0 : counts.readyFail + 1;
        if (!run.status.ready && counts.readyOk >= successThreshold) {
          run.status.ready = true;
          this.markDirty();
        } else if (run.status.ready && counts.readyFail >= failureThreshold) {
          run.status.ready = false;
          this.event('Unhealthy', `Readiness probe failed for container ${run.spec.name}`, 'Warning');
          this.markDirty();
        }
      } else {
        counts.liveFail = ok ? 0 : counts.liveFail + 1;
        if (counts.liveFail >= failureThreshold) return this.failProbe(run, 'Liveness');
      }
      run.timers.set(kind, setTimeout(tick, periodMs));
    };
    run.timers.set(kind, setTimeout(tick, (probe.initialDelaySeconds ?? 0) * 1000));
  }

  /** A failed liveness or startup probe kills the container; restartPolicy decides what follows. */
  private failProbe(run: ContainerRun, kind: string): void {
    this.event('Unhealthy', `${kind} probe failed; container ${run.spec.name} will be restarted`, 'Warning');
    void this.killContainer(run, this.pod.spec.terminationGracePeriodSeconds ?? 30);
  }

  private terminationMessageFile(spec: Container): string {
    return path.join(this.podDir, 'termination', `${spec.name}.log`);
  }

  /** As the kubelet: the message file's content (4 KiB at most), else on failure with FallbackToLogsOnError the log's tail. */
  private terminationMessage(spec: Container, exitCode: number): { message?: string } {
    let message = '';
    try {
      message = fs.readFileSync(this.terminationMessageFile(spec), 'utf8').slice(0, 4096);
    } catch {
      // never written
    }
    if (!message && exitCode !== 0 && (spec as ContainerExtras).terminationMessagePolicy === 'FallbackToLogsOnError') {
      try {
        const lines = fs.readFileSync(path.join(this.podDir, 'logs', `${spec.name}.log`), 'utf8').trimEnd().split('\n');
        message = lines.slice(-80).join('\n').slice(-2048);
      } catch {
        // no log
      }
    }
    return message ? { message } : {};
  }

  private async killContainer(run: ContainerRun, graceSeconds: number): Promise<void> {
    const child = run.child;
    if (!child?.pid) return;
    // A preStop sleep (the usual way to let endpoints drop a pod before it drains) runs first,
    // within the grace period.
    const preStopSeconds = Math.min((run.spec as ContainerExtras).lifecycle?.preStop?.sleep?.seconds ?? 0, graceSeconds);
    if (preStopSeconds > 0) {
      await Promise.race([run.exited ?? Promise.resolve(), sleep(preStopSeconds * 1000)]);
      graceSeconds -= preStopSeconds;
      if (run.child !== child) return;
    }
    signalGroup(child.pid, 'SIGTERM');
    const exited = run.exited ?? Promise.resolve();
    const timedOut = await Promise.race([exited.then(() => false), sleep(graceSeconds * 1000).then(() => true)]);
    if (timedOut && run.child === child) {
      signalGroup(child.pid, 'SIGKILL');
      await Promise.race([exited, sleep(5000)]);
    }
  }

  /** Graceful deletion: SIGTERM, SIGKILL after the grace period, then remove the pod object. */
  async terminate(graceSeconds: number): Promise<void> {
    this.stopping = true;
    const active = [...this.initRuns, ...this.runs].filter((r) => r.child);
    for (const r of [...this.initRuns, ...this.runs]) {
      clearTimers(r);
      r.status.ready = false;
    }
    if (active.length > 0) this.event('Killing', `Stopping container(s) ${active.map((r) => r.spec.name).join(', ')}`);
    this.markDirty();
    await Promise.all(active.map((r) => this.killContainer(r, graceSeconds)));
    if (this.phase !== 'Succeeded' && this.phase !== 'Failed') {
      this.phase = this.runs.every((r) => r.status.state.terminated?.exitCode === 0) ? 'Succeeded' : 'Failed';
    }
    await this.flushNow();
    try {
      await this.ctx.client.delete(`/api/v1/namespaces/${this.pod.metadata.namespace}/pods/${this.pod.metadata.name}`, {
        gracePeriodSeconds: 0,
        preconditions: { uid: this.pod.metadata.uid },
      });
    } catch (err) {
      if (!isNotFound(err)) this.ctx.log(`${this.key}: final delete: ${(err as Error).message}`);
    }
    this.gone = true;
  }

  /**
   * Stops every process without writing to the API server: the pod object is gone (force-deleted)
   * or the agent itself is shutting down.
   */
  async kill(graceSeconds: number): Promise<void> {
    this.stopping = true;
    this.gone = true;
    const all = [...this.initRuns, ...this.runs];
    for (const r of all) clearTimers(r);
    await Promise.all(all.map((r) => this.killContainer(r, graceSeconds)));
  }

  private condition(type: string, ok: boolean, reason?: string, message?: string): PodCondition {
    const status = ok ? 'True' : 'False';
    const previous = this.transitions.get(type);
    if (!previous || previous.status !== status) this.transitions.set(type, { status, time: now() });
    return {
      type,
      status,
      lastProbeTime: null,
      lastTransitionTime: this.transitions.get(type)!.time,
      ...(reason ? { reason } : {}),
      ...(message ? { message } : {}),
    };
  }

  private buildStatus(): PodStatus {
    const containersReady = this.runs.every((r) => r.status.ready);
    const notReady = this.runs.filter((r) => !r.status.ready).map((r) => r.spec.name);
    const notReadyMessage = notReady.length ? `containers with unready status: [${notReady.join(' ')}]` : undefined;
    const terminal = this.phase === 'Succeeded' || this.phase === 'Failed';
    const gatesOk = (this.pod.spec.readinessGates ?? []).every((g) =>
      this.pod.status?.conditions?.some((c) => c.type === g.conditionType && c.status === 'True'),
    );
    return {
      phase: this.phase,
      hostIP: this.ctx.gateway,
      hostIPs: [{ ip: this.ctx.gateway }],
      podIP: this.podIP,
      podIPs: [{ ip: this.podIP }],
      startTime: this.startTime,
      ...(this.podMessage ? { message: this.podMessage } : {}),
      ...(this.podReason ? { reason: this.podReason } : {}),
      conditions: [
        this.condition('PodReadyToStartContainers', !terminal),
        this.condition('Initialized', this.initialized, this.initialized ? undefined : 'ContainersNotInitialized'),
        this.condition('ContainersReady', containersReady && !terminal, containersReady ? (terminal ? 'PodCompleted' : undefined) : 'ContainersNotReady', notReadyMessage),
        this.condition('Ready', containersReady && gatesOk && !terminal, containersReady ? (terminal ? 'PodCompleted' : undefined) : 'ContainersNotReady', notReadyMessage),
      ],
      initContainerStatuses: this.initRuns.map((r) => ({ ...r.status })),
      containerStatuses: this.runs.map((r) => ({ ...r.status })),
    };
  }

  private markDirty(): void {
    this.dirty = true;
    if (!this.flushing) this.flushing = this.flushLoop();
  }

  private async flushNow(): Promise<void> {
    this.markDirty();
    await this.flushing;
  }

  private async flushLoop(): Promise<void> {
    await sleep(20); // coalesce bursts of changes into one write
    while (this.dirty && !this.gone) {
      this.dirty = false;
      try {
        await this.ctx.client.patch(
          `/api/v1/namespaces/${this.pod.metadata.namespace}/pods/${this.pod.metadata.name}/status`,
          { metadata: { uid: this.pod.metadata.uid }, status: this.buildStatus() },
          'strategic',
        );
      } catch (err) {
        if (isNotFound(err)) {
          this.gone = true;
          break;
        }
        this.ctx.log(`${this.key}: status update: ${(err as Error).message}`);
        this.dirty = true;
        await sleep(500);
      }
    }
    this.flushing = undefined;
  }

  private event(reason: string, message: string, type: 'Normal' | 'Warning' = 'Normal'): void {
    const { namespace, name, uid } = this.pod.metadata;
    const time = now();
    this.ctx.client
      .create(`/api/v1/namespaces/${namespace}/events`, {
        apiVersion: 'v1',
        kind: 'Event',
        metadata: { generateName: `${name}.`, namespace },
        involvedObject: { apiVersion: 'v1', kind: 'Pod', namespace, name, uid },
        reason,
        message,
        type,
        source: { component: 'kubelet', host: this.nodeName },
        firstTimestamp: time,
        lastTimestamp: time,
        count: 1,
      })
      .catch(() => undefined);
  }
}

function clearTimers(run: ContainerRun): void {
  for (const t of run.timers.values()) clearTimeout(t);
  run.timers.clear();
}
