// Seeded randomness for tests: each randomised test prints its seed so a failure can be replayed.

/** mulberry32: small, seeded, good enough for test inputs. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A new seed per run, or NPUSERVE_TEST_SEED to replay one; printed either way. */
export function freshSeed(label: string): number {
  const seed = process.env.NPUSERVE_TEST_SEED ? Number(process.env.NPUSERVE_TEST_SEED) >>> 0 : (Date.now() ^ (Math.random() * 2 ** 31)) >>> 0;
  console.log(`${label}: seed ${seed} (replay with NPUSERVE_TEST_SEED=${seed})`);
  return seed;
}

export function randomTokens(next: () => number, n: number, vocab: number): number[] {
  return Array.from({ length: n }, () => Math.floor(next() * vocab));
}
