// Reads `/metrics` of a model's ready serving pods into the policy's scrape rounds: a small parser of
// the Prometheus text format (samples with labels; counters, gauges, histogram buckets) and the HTTP GET.
import type { PodMetrics, ScrapeRound } from './policy.js';

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

function parseValue(s: string): number {
  if (s === '+Inf' || s === 'Inf') return Infinity;
  if (s === '-Inf') return -Infinity;
  return Number(s);
}

/** `a="x",b="y\"z"` -> { a: 'x', b: 'y"z' }; returns the labels and the index after the closing brace. */
function parseLabels(line: string, from: number): [Record<string, string>, number] {
  const labels: Record<string, string> = {};
  let i = from;
  while (i < line.length && line[i] !== '}') {
    while (line[i] === ' ' || line[i] === ',') i++;
    if (line[i] === '}') break;
    const eq = line.indexOf('=', i);
    if (eq < 0 || line[eq + 1] !== '"') throw new Error(`metrics line '${line}': expected name="value" at column ${i}`);
    const name = line.slice(i, eq).trim();
    let value = '';
    for (i = eq + 2; i < line.length && line[i] !== '"'; i++) {
      if (line[i] === '\\') {
        i++;
        value += line[i] === 'n' ? '\n' : line[i];
      } else value += line[i];
    }
    if (i >= line.length) throw new Error(`metrics line '${line}': unterminated label value of '${name}'`);
    labels[name] = value;
    i++;
  }
  if (line[i] !== '}') throw new Error(`metrics line '${line}': missing '}'`);
  return [labels, i + 1];
}

/** Samples of a Prometheus text exposition (version 0.0.4); comments, HELP and TYPE lines are skipped. */
export function parsePrometheusText(text: string): Sample[] {
  const out: Sample[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const brace = line.indexOf('{');
    const space = line.indexOf(' ');
    let name: string;
    let labels: Record<string, string> = {};
    let rest: string;
    if (brace >= 0 && (space < 0 || brace < space)) {
      name = line.slice(0, brace);
      let end: number;
      [labels, end] = parseLabels(line, brace + 1);
      rest = line.slice(end).trim();
    } else {
      if (space < 0) throw new Error(`metrics line '${line}': no value`);
      name = line.slice(0, space);
      rest = line.slice(space + 1).trim();
    }
    const text = rest.split(/\s+/)[0] ?? '';
    const value = parseValue(text);
    // prom-client writes NaN as 'Nan'
    if (Number.isNaN(value) && text.toLowerCase() !== 'nan') throw new Error(`metrics line '${line}': value '${rest}' is not a number`);
    out.push({ name, labels, value });
  }
  return out;
}

const sum = (samples: Sample[], name: string) => samples.filter((s) => s.name === name).reduce((a, s) => a + s.value, 0);

/** The serving pod's metrics the policy reads, summed over the `model` label (one pod serves one model). */
export function podMetrics(samples: Sample[]): PodMetrics {
  if (!samples.some((s) => s.name === 'npuserve_generation_tokens_total')) throw new Error('no npuserve_generation_tokens_total in /metrics: is this an npuserve serving pod?');
  const buckets = new Map<number, number>();
  for (const s of samples) {
    if (s.name !== 'npuserve_time_to_first_token_seconds_bucket' || s.labels.le === undefined) continue;
    const le = parseValue(s.labels.le);
    buckets.set(le, (buckets.get(le) ?? 0) + s.value);
  }
  return {
    generationTokens: sum(samples, 'npuserve_generation_tokens_total'),
    promptTokens: sum(samples, 'npuserve_prompt_tokens_total'),
    requests: sum(samples, 'npuserve_requests_total'),
    ttftBuckets: [...buckets].sort((a, b) => a[0] - b[0]),
    waiting: sum(samples, 'npuserve_requests_waiting'),
    running: sum(samples, 'npuserve_requests_running'),
  };
}

/** GET http://IP:PORT/metrics within `timeoutMs`. */
export async function scrapePod(ip: string, port: number, timeoutMs: number): Promise<PodMetrics> {
  const host = ip.includes(':') ? `[${ip}]` : ip;
  const res = await fetch(`http://${host}:${port}/metrics`, { signal: AbortSignal.timeout(timeoutMs) });
  if (!res.ok) throw new Error(`GET http://${host}:${port}/metrics: HTTP ${res.status}`);
  return podMetrics(parsePrometheusText(await res.text()));
}

export interface ServingPod {
  name: string;
  ip: string;
}

/** One round over the given ready pods, in parallel; a pod that fails is listed without metrics and reported. */
export async function scrapeRound(pods: ServingPod[], port: number, timeoutMs: number, onFailure: (pod: string, error: string) => void): Promise<ScrapeRound> {
  const timeMs = Date.now();
  const results = await Promise.allSettled(pods.map((p) => scrapePod(p.ip, port, timeoutMs)));
  return {
    timeMs,
    pods: pods.map((p, i) => {
      const r = results[i]!;
      if (r.status === 'rejected') onFailure(p.name, (r.reason as Error).message);
      return { name: p.name, metrics: r.status === 'fulfilled' ? r.value : undefined };
    }),
  };
}
