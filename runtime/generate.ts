// Text generation on one sequence: prefill the prompt, then decode until max tokens or a token that
// ends generation (the model's EOS, EOT, <|im_end|> ...), streaming each token to `onToken`.
import type { Engine } from './engine.js';

export interface GenerateOptions {
  maxTokens: number;
  temperature?: number;
  topP?: number;
  seed?: number;
  /** Stop at the model's end-of-generation tokens (default true). */
  stopAtEos?: boolean;
  onToken?: (token: number) => void;
}

export interface Generation {
  tokens: number[];
  finishReason: 'stop' | 'length';
}

export async function generate(engine: Engine, prompt: readonly number[], opts: GenerateOptions): Promise<Generation> {
  const endOfGeneration = new Set(engine.metadata.tokenizer.endOfGenerationIds);
  const seq = engine.createSequence(opts.seed ?? 0);
  const tokens: number[] = [];
  try {
    let input: readonly number[] = prompt;
    while (tokens.length < opts.maxTokens) {
      const [r] = await engine.step([{ sequence: seq, tokens: input, temperature: opts.temperature ?? 0, topP: opts.topP ?? 1 }]);
      if (endOfGeneration.has(r.token) && opts.stopAtEos !== false) return { tokens, finishReason: 'stop' };
      tokens.push(r.token);
      opts.onToken?.(r.token);
      input = [r.token];
    }
    return { tokens, finishReason: 'length' };
  } finally {
    engine.releaseSequence(seq);
  }
}
