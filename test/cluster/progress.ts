// Progress lines for long waits of the demo and the local cluster's start: what is awaited, then the
// elapsed time every few seconds until it settles, so no step sits silent for minutes.

export interface WaitOptions {
  log?: (line: string) => void;
  /** Seconds between "still waiting" lines. */
  everySeconds?: number;
  /** Extra detail for each "still waiting" line (the current phase, a count). */
  detail?: () => string | undefined;
}

const elapsed = (startedMs: number) => `${((Date.now() - startedMs) / 1000).toFixed(0)} s`;

/** Awaits `work`, logging `waiting for WHAT` first, a line every few seconds, and the total time at the end. */
export async function waitingFor<T>(what: string, work: Promise<T>, options: WaitOptions = {}): Promise<T> {
  const log = options.log ?? ((line: string) => console.log(line));
  const started = Date.now();
  log(`waiting for ${what} ...`);
  const timer = setInterval(() => {
    const detail = options.detail?.();
    log(`  still waiting for ${what} (${elapsed(started)}${detail ? `; ${detail}` : ''})`);
  }, (options.everySeconds ?? 10) * 1000);
  try {
    const result = await work;
    log(`  ${what}: done after ${elapsed(started)}`);
    return result;
  } catch (err) {
    log(`  ${what}: failed after ${elapsed(started)}`);
    throw err;
  } finally {
    clearInterval(timer);
  }
}
