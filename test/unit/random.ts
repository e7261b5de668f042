// Seeded randomness for tests: each randomised test prints its seed so a failure can be replayed.

import { seededRandom } from '../../common/random.js';

/** A seeded generator of test inputs (mulberry32). */
export const rng = seededRandom;

/** A new seed per run, or NPUSERVE_TEST_SEED to replay one; printed either way. */
export function freshSeed(label: string): number {
  const seed = process.env.NPUSERVE_TEST_SEED ? Number(process.env.NPUSERVE_TEST_SEED) >>> 0 : (Date.now() ^ (Math.random() * 2 ** 31)) >>> 0;
  console.log(`${label}: seed ${seed} (replay with NPUSERVE_TEST_SEED=${seed})`);
  return seed;
}

export function randomTokens(next: () => number, n: number, vocab: number): number[] {
  return Array.from({ length: n }, () => Math.floor(next() * vocab));
}
