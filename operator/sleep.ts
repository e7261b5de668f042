// A sleep that an AbortSignal ends early. Its abort listener goes away when the timer fires: loops
// that sleep on the operator's one stop signal (leader renewals, autoscaler passes) would otherwise
// add a listener per turn, growing without bound and tripping MaxListenersExceededWarning.
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const onAbort = () => {
      clearTimeout(t);
      resolve();
    };
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
