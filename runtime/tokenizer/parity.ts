// Tokenizer parity with llama.cpp: our ids for each string of a corpus against node-llama-cpp's
// `model.tokenize(text, true)` (special tokens parsed, no BOS) on the same GGUF, loaded vocabulary only.
import { GgufFile } from '../convert/gguf.js';
import { withLlamaCppModel } from '../bench/llamacpp.js';
import { Tokenizer } from '../tokenizer.js';
import { PARITY_CORPUS } from './parity-corpus.js';
import { tokenizerFromGguf } from './sources.js';


export interface TokenizerMismatch {
  text: string;
  ours: number[];
  llamaCpp: number[];
}

export interface TokenizerParity {
  strings: number;
  mismatches: TokenizerMismatch[];
}

/** The tokenizer npuserve builds from this GGUF's metadata (what convert puts in the .npu). */
export function ggufTokenizer(path: string): Tokenizer {
  const file = new GgufFile(path);
  try {
    return new Tokenizer(tokenizerFromGguf(path, file.metadata));
  } finally {
    file.close();
  }
}

export async function compareTokenizerWithLlamaCpp(ggufPath: string, corpus: readonly string[] = PARITY_CORPUS): Promise<TokenizerParity> {
  const ours = ggufTokenizer(ggufPath);
  return withLlamaCppModel(ggufPath, { vocabOnly: true }, async (model) => {
    const mismatches: TokenizerMismatch[] = [];
    for (const text of corpus) {
      const a = ours.encode(text, { addSpecial: false });
      const b = [...model.tokenize(text, true)].map(Number);
      if (a.length !== b.length || a.some((id, i) => id !== b[i])) mismatches.push({ text, ours: a, llamaCpp: b });
    }
    return { strings: corpus.length, mismatches };
  });
}

/** A report a person can read: the count, and each mismatch with both id lists. */
export function formatTokenizerParity(path: string, r: TokenizerParity): string {
  const lines = [`tokenizer: ${r.strings - r.mismatches.length}/${r.strings} strings tokenized identically to llama.cpp (${path})`];
  for (const m of r.mismatches) lines.push(`  ${JSON.stringify(m.text)}\n    npuserve  ${m.ours.join(' ')}\n    llama.cpp ${m.llamaCpp.join(' ')}`);
  return lines.join('\n');
}
