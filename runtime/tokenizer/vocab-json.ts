// Builds Hugging Face tokenizer.json documents from llama.cpp-style vocabularies (token strings,
// scores, token types, merges), so a GGUF's tokenizer runs through the same tokenizer.json engine as
// a Hugging Face checkpoint's, and tokenizes as llama.cpp does.
import type { AddedTokenJson, TokenizerJson } from '../tokenizer.js';

/**
 * GPT-2's byte-to-unicode table: the printable character a byte-level vocabulary writes for each
 * byte (printable Latin-1 bytes stand for themselves, the others for U+0100 onwards in order).
 */
export const BYTE_TO_UNICODE: readonly string[] = (() => {
  let shifted = 0;
  return Array.from({ length: 256 }, (_, b) => {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    return String.fromCharCode(printable ? b : 256 + shifted++);
  });
})();

/** llama.cpp's token types (GGUF `tokenizer.ggml.token_type`). */
export const TokenType = { normal: 1, unknown: 2, control: 3, userDefined: 4, unused: 5, byte: 6 } as const;

/**
 * llama.cpp's pre-tokenizer regexes per `tokenizer.ggml.pre` (llama-vocab.cpp), applied in order,
 * each splitting the pieces of the previous one and keeping the text between matches as pieces.
 */
const GPT2_REGEX = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
const LLAMA3_REGEX =
  "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
export const PRE_TOKENIZER_REGEXES: Record<string, string[]> = {
  default: ['[\\p{P}\\$\\+<=>\\^~\\|]+', GPT2_REGEX, '\\p{N}+', '[0-9][0-9][0-9]'],
  'gpt-2': [GPT2_REGEX],
  smollm: ['\\p{N}', GPT2_REGEX],
  starcoder: ['\\p{N}', GPT2_REGEX],
  'llama-bpe': [LLAMA3_REGEX],
  llama3: [LLAMA3_REGEX],
  'llama-v3': [LLAMA3_REGEX],
  qwen2: [
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  ],
};

/** Pre-tokenizers whose llama.cpp tokenizer takes a whole piece that is a token without merging. */
const IGNORE_MERGES = new Set(['llama-bpe', 'llama3', 'llama-v3']);

export interface LlamaVocab {
  tokens: readonly string[];
  types: readonly number[];
}

/**
 * Tokens llama.cpp matches in text as whole tokens when special tokens are parsed: control,
 * user-defined and unknown ones. User-defined tokens are ordinary text when decoded.
 */
function addedTokens(v: LlamaVocab): AddedTokenJson[] {
  const out: AddedTokenJson[] = [];
  v.types.forEach((type, id) => {
    if (type !== TokenType.control && type !== TokenType.userDefined && type !== TokenType.unknown) return;
    if (v.tokens[id] === '') return;
    out.push({ id, content: v.tokens[id], special: type !== TokenType.userDefined, normalized: false, lstrip: false, rstrip: false, single_word: false });
  });
  return out;
}

/** The vocabulary as tokenizer.json's token -> id object (the first id of a repeated string wins). */
function vocabObject(tokens: readonly string[]): Record<string, number> {
  const vocab: Record<string, number> = Object.create(null);
  tokens.forEach((t, id) => {
    if (!(t in vocab)) vocab[t] = id;
  });
  return vocab;
}

/** GGUF `gpt2`: byte-level BPE with the merges, pre-tokenized by llama.cpp's regexes for `pre`. */
export function byteLevelBpeJson(v: LlamaVocab, merges: readonly string[], pre: string): TokenizerJson {
  const regexes = PRE_TOKENIZER_REGEXES[pre];
  if (!regexes) throw new Error(`pre-tokenizer '${pre}' is not supported (supported: ${Object.keys(PRE_TOKENIZER_REGEXES).join(', ')})`);
  return {
    version: '1.0',
    added_tokens: addedTokens(v),
    normalizer: null,
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        ...regexes.map((r) => ({ type: 'Split', pattern: { Regex: r }, behavior: 'Isolated', invert: false })),
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
      ],
    },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
    model: { type: 'BPE', vocab: vocabObject(v.tokens), merges: [...merges], byte_fallback: false, ignore_merges: IGNORE_MERGES.has(pre), dropout: null, unk_token: null, fuse_unk: false },
  };
}

/**
 * GGUF `llama` (SentencePiece BPE with scores, Mistral and Llama 2): llama.cpp merges the adjacent
 * pair whose concatenation is a token of the highest score, leftmost first, starting from single
 * characters; a character that is no token falls back to its `<0xXX>` byte tokens. That is BPE with
 * one merge per way of splitting a token into two symbols, ranked by the token's score (llama.cpp
 * considers every token, whatever its type).
 */
export function sentencePieceJson(v: LlamaVocab & { scores: readonly number[] }, addSpacePrefix: boolean, unknownId: number | null): TokenizerJson {
  const vocab = vocabObject(v.tokens);
  const isSymbol = (s: string) => s in vocab || [...s].length === 1;
  const ranked: Array<{ pair: [string, string]; score: number; id: number; split: number }> = [];
  v.tokens.forEach((token, id) => {
    if (vocab[token] !== id) return;
    const chars = [...token];
    for (let i = 1; i < chars.length; i++) {
      const left = chars.slice(0, i).join('');
      const right = chars.slice(i).join('');
      if (isSymbol(left) && isSymbol(right)) ranked.push({ pair: [left, right], score: v.scores[id], id, split: i });
    }
  });
  ranked.sort((a, b) => b.score - a.score || a.id - b.id || a.split - b.split);
  const normalizers: unknown[] = [{ type: 'Replace', pattern: { String: ' ' }, content: '\u2581' }];
  if (addSpacePrefix) normalizers.unshift({ type: 'Prepend', prepend: '\u2581' });
  return {
    version: '1.0',
    added_tokens: addedTokens(v),
    normalizer: { type: 'Sequence', normalizers },
    pre_tokenizer: null,
    post_processor: null,
    decoder: {
      type: 'Sequence',
      decoders: [{ type: 'Replace', pattern: { String: '\u2581' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, ...(addSpacePrefix ? [{ type: 'Strip', content: ' ', start: 1, stop: 0 }] : [])],
    },
    model: {
      type: 'BPE',
      vocab,
      merges: ranked.map((m) => m.pair),
      byte_fallback: true,
      ignore_merges: false,
      dropout: null,
      unk_token: unknownId === null ? null : v.tokens[unknownId],
      fuse_unk: false,
    },
  };
}

/**
 * Tokens that end generation: the given ids (EOS, EOT, EOM) and, as llama.cpp does, control tokens
 * whose text is a known end-of-turn marker.
 */
const END_OF_GENERATION_TEXTS = new Set(['</s>', '<|eot_id|>', '<|eom_id|>', '<|im_end|>', '<|end|>', '<end_of_turn>', '<|endoftext|>', '<EOT>', '<|end_of_text|>']);

export function endOfGenerationIds(v: LlamaVocab, explicit: ReadonlyArray<number | null>): number[] {
  const ids = new Set<number>();
  for (const id of explicit) if (id !== null) ids.add(id);
  v.types.forEach((type, id) => {
    if (type === TokenType.control && END_OF_GENERATION_TEXTS.has(v.tokens[id])) ids.add(id);
  });
  return [...ids].sort((a, b) => a - b);
}
