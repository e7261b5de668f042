// A float64 reference forward pass of the Mistral/Llama/Qwen2 decoder, written from the Hugging Face
// MistralForCausalLM / LlamaForCausalLM / Qwen2ForCausalLM definitions (q/k/v biases, llama's
// attention_bias also on o_proj, rotate_half
// RoPE with linear or llama3 frequency scaling, GQA by repeat_kv, sliding-window mask
// p - j < window, RMSNorm, SwiGLU), used by tests as the ground truth for the engine.
import type { ModelConfig } from '../../runtime/model-config.js';

export type Weights = (name: string) => Float32Array;

function matvec(w: Float32Array, rows: number, cols: number, x: Float64Array): Float64Array {
  const y = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    const base = r * cols;
    for (let c = 0; c < cols; c++) s += w[base + c] * x[c];
    y[r] = s;
  }
  return y;
}

function rmsnorm(x: Float64Array, w: Float32Array, eps: number): Float64Array {
  let ss = 0;
  for (const v of x) ss += v * v;
  const inv = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => v * inv * w[i]);
}

/**
 * The RoPE frequency of rotation pair i, written from the papers' formulas independently of the
 * product's ropeInverseFrequencies: linear interpolation divides positions by the factor; Llama 3.1
 * keeps wavelengths under original / high_freq_factor, stretches those over original /
 * low_freq_factor by the factor and blends linearly in original / wavelength between.
 */
export function referenceFrequency(cfg: ModelConfig, i: number): number {
  const theta = cfg.ropeTheta ** (-(2 * i) / cfg.headDim);
  const s = cfg.ropeScaling;
  if (!s) return theta;
  if (s.type === 'linear') return theta / s.factor;
  if (s.type === 'freq-factors') return theta / s.factors[i];
  const ratio = (s.originalMaxPositionEmbeddings * theta) / (2 * Math.PI); // original / wavelength
  if (ratio > s.highFreqFactor) return theta;
  if (ratio < s.lowFreqFactor) return theta / s.factor;
  const t = (ratio - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
  return theta * (t + (1 - t) / s.factor);
}

function rope(v: Float64Array, heads: number, hd: number, pos: number, cfg: ModelConfig): void {
  const half = hd / 2;
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      const angle = pos * referenceFrequency(cfg, i);
      const c = Math.cos(angle);
      const s = Math.sin(angle);
      const a = v[h * hd + i];
      const b = v[h * hd + i + half];
      v[h * hd + i] = a * c - b * s;
      v[h * hd + i + half] = b * c + a * s;
    }
  }
}

/** Logits (vocab) at every position of `tokens`, processed as one causal sequence. */
export function referenceLogits(cfg: ModelConfig, w: Weights, tokens: number[]): Float64Array[] {
  const D = cfg.hiddenSize;
  const hd = cfg.headDim;
  const H = cfg.numHeads;
  const KV = cfg.numKvHeads;
  const F = cfg.intermediateSize;
  const emb = w('model.embed_tokens.weight');
  const lmHead = cfg.tieWordEmbeddings ? emb : w('lm_head.weight');
  const keys: Float64Array[][] = Array.from({ length: cfg.numLayers }, () => []);
  const values: Float64Array[][] = Array.from({ length: cfg.numLayers }, () => []);
  const out: Float64Array[] = [];
  tokens.forEach((token, pos) => {
    let x = Float64Array.from(emb.subarray(token * D, (token + 1) * D));
    for (let l = 0; l < cfg.numLayers; l++) {
      const p = `model.layers.${l}.`;
      const xn = rmsnorm(x, w(`${p}input_layernorm.weight`), cfg.rmsNormEps);
      const proj = (name: string, rows: number) => {
        const y = matvec(w(`${p}self_attn.${name}_proj.weight`), rows, D, xn);
        if (cfg.attentionBias) w(`${p}self_attn.${name}_proj.bias`).forEach((b, i) => (y[i] += b));
        return y;
      };
      const q = proj('q', H * hd);
      const k = proj('k', KV * hd);
      const v = proj('v', KV * hd);
      rope(q, H, hd, pos, cfg);
      rope(k, KV, hd, pos, cfg);
      keys[l].push(k);
      values[l].push(v);
      const attn = new Float64Array(H * hd);
      const lo = cfg.slidingWindow ? Math.max(0, pos - cfg.slidingWindow + 1) : 0;
      for (let h = 0; h < H; h++) {
        const kvh = Math.floor(h / (H / KV));
        const scores: number[] = [];
        for (let j = lo; j <= pos; j++) {
          let s = 0;
          for (let i = 0; i < hd; i++) s += q[h * hd + i] * keys[l][j][kvh * hd + i];
          scores.push(s / Math.sqrt(hd));
        }
        const m = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - m));
        const sum = e.reduce((a, b) => a + b, 0);
        for (let j = lo; j <= pos; j++) {
          const pj = e[j - lo] / sum;
          for (let i = 0; i < hd; i++) attn[h * hd + i] += pj * values[l][j][kvh * hd + i];
        }
      }
      const o = matvec(w(`${p}self_attn.o_proj.weight`), D, H * hd, attn);
      if (cfg.attentionBias && cfg.architecture === 'llama') w(`${p}self_attn.o_proj.bias`).forEach((b, i) => (o[i] += b));
      x = x.map((val, i) => val + o[i]);
      const xn2 = rmsnorm(x, w(`${p}post_attention_layernorm.weight`), cfg.rmsNormEps);
      const g = matvec(w(`${p}mlp.gate_proj.weight`), F, D, xn2);
      const u = matvec(w(`${p}mlp.up_proj.weight`), F, D, xn2);
      const hdn = g.map((gv, i) => (gv / (1 + Math.exp(-gv))) * u[i]);
      const down = matvec(w(`${p}mlp.down_proj.weight`), D, F, hdn);
      x = x.map((val, i) => val + down[i]);
    }
    out.push(matvec(lmHead, cfg.vocabSize, D, rmsnorm(x, w('model.norm.weight'), cfg.rmsNormEps)));
  });
  return out;
}
