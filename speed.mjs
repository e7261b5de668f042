// node --import tsx speed.mjs WORKTREE NPU: CPU time (user+sys, all threads) of a 512-token prefill
// and of 32 batch-1 decode steps, best of 3 (CPU time, because the VM's steal time makes wall time noisy).
const [wt, npu] = process.argv.slice(2);
const { Engine } = await import(`${wt}/runtime/engine.ts`);
const e = await Engine.load(npu, { threads: 2, maxSeqLen: 600, kvCacheTokens: 1200, kvCacheDtype: "f16", int8Activations: process.env.ACT });
const V = e.metadata.config.vocabSize;
const toks = (n, s) => Array.from({ length: n }, (_, i) => 3 + ((i * 7919 + s * 104729) % (V - 3)));
const cpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };
let pf = Infinity, dc = Infinity, pfw = 0, dcw = 0;
for (let r = 0; r < 3; r++) {
  const seq = e.createSequence();
  let c0 = cpu(), t0 = performance.now();
  let res = await e.step([{ sequence: seq, tokens: toks(512, r), temperature: 0 }]);
  pf = Math.min(pf, cpu() - c0); pfw = Math.max(pfw, 512 / ((performance.now() - t0) / 1000));
  c0 = cpu(); t0 = performance.now();
  for (let i = 0; i < 32; i++) res = await e.step([{ sequence: seq, tokens: [res[0].token], temperature: 0 }]);
  dc = Math.min(dc, (cpu() - c0) / 32); dcw = Math.max(dcw, 32 / ((performance.now() - t0) / 1000));
  e.releaseSequence(seq);
}
console.log(`${npu}: prefill 512 CPU ${pf.toFixed(0)} ms (wall best ${pfw.toFixed(0)} tok/s), decode CPU ${dc.toFixed(2)} ms/token (wall best ${dcw.toFixed(1)} tok/s)`);
