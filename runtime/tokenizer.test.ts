// Tokenizers read from the model: GGUF vocabularies (byte-level BPE and SentencePiece) and Hugging
// Face folders give the same tokenizer; special tokens are parsed from text, BOS/EOS follow the
// model, streamed text is byte-exact, generation ends at the model's end-of-generation ids, and long
// inputs tokenize in seconds (no quadratic merge). Parity with llama.cpp: test/models/tokenizer-parity.test.ts.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { testModel, workDir } from '../test/unit/helpers.js';
import { convert } from './convert/convert.js';
import { Engine } from './engine.js';
import { generate } from './generate.js';
import { StreamDecoder, Tokenizer } from './tokenizer.js';
import { mistralV3Tokenizer, mistralV3Vocab } from './tokenizer/mistral-v3.js';
import { ggufTokenizer } from './tokenizer/parity.js';
import { PARITY_CORPUS } from './tokenizer/parity-corpus.js';
import { tokenizerFromGguf, tokenizerFromHfFolder } from './tokenizer/sources.js';
import { BYTE_TO_UNICODE, TokenType } from './tokenizer/vocab-json.js';

/** A small GGUF byte-level vocabulary: the 256 bytes, a few merges, ChatML control tokens. */
function byteLevelGguf(extra: Array<[string, unknown]> = []): Map<string, unknown> {
  const bytes = [...BYTE_TO_UNICODE];
  const merges = ['h e', 'l l', 'he ll', 'hell o', 'Ġ w', 'o r', 'Ġw or', 'Ġwor l', 'Ġworl d'];
  const merged = merges.map((m) => m.replace(' ', ''));
  const tokens = ['<|endoftext|>', '<|im_start|>', '<|im_end|>', ...bytes, ...merged];
  const types = tokens.map((_, id) => (id < 3 ? TokenType.control : TokenType.normal));
  return new Map<string, unknown>([
    ['tokenizer.ggml.model', 'gpt2'],
    ['tokenizer.ggml.pre', 'smollm'],
    ['tokenizer.ggml.tokens', tokens],
    ['tokenizer.ggml.token_type', types],
    ['tokenizer.ggml.merges', merges],
    ['tokenizer.ggml.bos_token_id', 1],
    ['tokenizer.ggml.eos_token_id', 2],
    ['tokenizer.ggml.add_bos_token', false],
    ['tokenizer.chat_template', '{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}'],
    ...extra,
  ]);
}

/** Streams ids one at a time and returns what was shown at each step. */
function streamed(tok: Tokenizer, ids: number[]): string[] {
  const d = new StreamDecoder(tok);
  const shown = ids.map((id) => d.push([id]));
  shown.push(d.flush());
  return shown;
}

describe('Tokenizer from a GGUF byte-level BPE vocabulary', () => {
  const spec = tokenizerFromGguf('tiny.gguf', byteLevelGguf());
  const tok = new Tokenizer(spec);
  const piece = (ids: number[]) => ids.map((i) => tok.vocab[i]);

  it('merges by rank, splits digits (smollm), and parses ChatML special tokens as single ids', () => {
    expect(piece(tok.encode('hello world'))).toEqual(['hello', 'Ġworld']);
    expect(piece(tok.encode('42'))).toEqual(['4', '2']);
    expect(piece(tok.encode('<|im_start|>user\nhello<|im_end|>'))).toEqual(['<|im_start|>', 'u', 's', 'e', 'r', 'Ċ', 'hello', '<|im_end|>']);
  });

  it('takes BOS, EOS, add_bos and the template from the model, and ends generation at <|im_end|> and <|endoftext|>', () => {
    expect(spec).toMatchObject({ pieces: 'byte-level', bosId: 1, eosId: 2, addBos: false, addEos: false, endOfGenerationIds: [0, 2] });
    expect(spec.chatTemplate).toContain('<|im_start|>');
    const withBos = new Tokenizer(tokenizerFromGguf('tiny.gguf', byteLevelGguf([['tokenizer.ggml.add_bos_token', true], ['tokenizer.ggml.eot_token_id', 0]])));
    expect(withBos.encode('hello')[0]).toBe(1);
    // BOS is <|im_start|> here: a text that starts with it does not get a second one.
    expect(withBos.encode('<|im_start|>hello')).toEqual(withBos.encode('<|im_start|>hello', { addSpecial: false }));
    expect(withBos.encode('<|im_start|>hello').filter((id) => id === 1)).toHaveLength(1);
  });

  it('streams byte-exact text, holding back a character split across byte tokens until it is whole', () => {
    const text = 'hello wörld 🙂 東京';
    const ids = tok.encode(text);
    const shown = streamed(tok, ids);
    expect(shown.join('')).toBe(text);
    // The emoji is four byte tokens: nothing shows until its last byte arrives.
    const emoji = ids.findIndex((id) => tok.vocab[id] === BYTE_TO_UNICODE[0xf0]);
    expect(shown.slice(emoji, emoji + 3)).toEqual(['', '', '']);
    expect(shown[emoji + 3]).toBe('🙂');
    expect(tok.decode(tok.encode('<|im_start|>hi<|im_end|>'))).toBe('hi');
  });

  it('refuses an unknown pre-tokenizer or tokenizer model, naming the key', () => {
    expect(() => tokenizerFromGguf('x.gguf', byteLevelGguf([['tokenizer.ggml.pre', 'deepseek-coder']]))).toThrow(/'tokenizer.ggml.pre': pre-tokenizer 'deepseek-coder' is not supported/);
    expect(() => tokenizerFromGguf('x.gguf', byteLevelGguf([['tokenizer.ggml.model', 'bert']]))).toThrow(/'tokenizer.ggml.model' "bert" is not supported/);
  });
});

describe('Tokenizer from the Mistral v3 SentencePiece vocabulary', () => {
  const tok = mistralV3Tokenizer();

  it('adds BOS, prefixes the SentencePiece space, and falls back to bytes for characters not in the vocabulary', () => {
    expect(tok.encode('Hello world').map((i) => tok.vocab[i])).toEqual(['<s>', '▁Hello', '▁world']);
    const ids = tok.encode('🦙', { addSpecial: false });
    expect(ids.map((i) => tok.vocab[i])).toEqual(['▁', '<0xF0>', '<0x9F>', '<0xA6>', '<0x99>']);
  });

  it('streams byte-exact text without the leading space the encoder added', () => {
    for (const text of ['Hello world', ' two  spaces', 'tab\there\nnewline', 'Café 東京 🦙 x']) {
      expect(streamed(tok, tok.encode(text)).join('')).toBe(text);
    }
    const shown = streamed(tok, tok.encode('🦙!', { addSpecial: false }));
    expect(shown.slice(0, 5)).toEqual(['', '', '', '', '🦙']);
  });

  it('keeps a leading space when the vocabulary does not prefix one (add_space_prefix false)', () => {
    const v = mistralV3Vocab();
    const meta = new Map<string, unknown>([
      ['tokenizer.ggml.model', 'llama'],
      ['tokenizer.ggml.tokens', v.tokens],
      ['tokenizer.ggml.scores', v.scores],
      ['tokenizer.ggml.token_type', v.types],
      ['tokenizer.ggml.bos_token_id', 1],
      ['tokenizer.ggml.add_space_prefix', false],
    ]);
    const plain = new Tokenizer(tokenizerFromGguf('x.gguf', meta));
    expect(plain.encode('Hello world').map((i) => plain.vocab[i])).toEqual(['<s>', 'Hello', '▁world']);
    expect(plain.decode(plain.encode(' Hello'))).toBe(' Hello');
  });

  it('bounds the tokens a text needs by the longest token: no token covers more than maxTokenBytes', () => {
    for (const text of PARITY_CORPUS) {
      const bytes = Buffer.byteLength(text);
      expect(tok.encode(text, { addSpecial: false }).length).toBeGreaterThanOrEqual(Math.ceil(bytes / tok.maxTokenBytes));
    }
  });
});

describe('Tokenizer from a Hugging Face folder', () => {
  it("reads tokenizer.json with tokenizer_config.json's special tokens, add_bos_token and chat template, and generation_config's EOS ids", () => {
    const dir = join(workDir, 'hf-tokenizer');
    mkdirSync(dir, { recursive: true });
    const gguf = tokenizerFromGguf('tiny.gguf', byteLevelGguf());
    writeFileSync(join(dir, 'tokenizer.json'), gguf.tokenizerJson);
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<|im_start|>', eos_token: { content: '<|im_end|>' }, add_bos_token: true, chat_template: 'T' }));
    writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: [2, 0] }));
    const spec = tokenizerFromHfFolder(dir)!;
    expect(spec).toMatchObject({ pieces: 'byte-level', bosId: 1, eosId: 2, addBos: true, addEos: false, endOfGenerationIds: [0, 2], chatTemplate: 'T' });
    expect(new Tokenizer(spec).encode('hello world')).toEqual([1, ...new Tokenizer(gguf).encode('hello world')]);
  });

  it("gives the test model's folder and its GGUF twin the same tokenizer", () => {
    const model = testModel('tokenizer-twin', { gguf: 'F32' });
    const hf = new Tokenizer(tokenizerFromHfFolder(model.dir)!);
    const gguf = ggufTokenizer(join(model.dir, 'model.gguf'));
    expect(hf.spec).toMatchObject({ bosId: 1, eosId: 2, addBos: true, endOfGenerationIds: [2] });
    expect(hf.spec.chatTemplate).toBe(gguf.spec.chatTemplate);
    for (const text of PARITY_CORPUS) expect(hf.encode(text)).toEqual(gguf.encode(text));
  });
});

describe('end of generation', () => {
  it("stops at any end-of-generation id the checkpoint names (generation_config.json's eos_token_id list), through the .npu", { timeout: 120_000 }, async () => {
    const model = testModel('eog', { layers: 1, hidden: 64, heads: 2, kvHeads: 1, intermediate: 96 });
    const greedy = async (npu: string) => {
      await convert({ input: model.dir, output: npu, precision: 'FP32', optimizeLevel: 0 });
      const engine = await Engine.load(npu, { threads: 1, maxSeqLen: 32, kvCacheTokens: 32 });
      return generate(engine, mistralV3Tokenizer().encode('The capital of France is'), { maxTokens: 12 });
    };
    const free = await greedy(join(workDir, 'eog-before.npu'));
    // The first generated token that did not appear before it becomes an end-of-generation token.
    const at = free.tokens.findIndex((t, i) => i > 0 && !free.tokens.slice(0, i).includes(t) && t !== 2);
    expect(at).toBeGreaterThan(0);
    writeFileSync(join(model.dir, 'generation_config.json'), JSON.stringify({ eos_token_id: [2, free.tokens[at]] }));
    const stopped = await greedy(join(workDir, 'eog-after.npu'));
    expect(stopped).toEqual({ tokens: free.tokens.slice(0, at), finishReason: 'stop' });
  });
});

describe('tokenizing time', () => {
  // SentencePiece has no pre-tokenizer: 'a' x 160 000 is one 160 000-character word to merge. Heap
  // merging is n log n (a second or so here); a quadratic merge would need minutes. 160 KB is about
  // the largest prompt the server tokenizes at all (2048 tokens of at most 81 bytes for SmolLM2).
  it('encodes a 160 KB single word and 160 KB of words within seconds', { timeout: 60_000 }, () => {
    const tok = mistralV3Tokenizer();
    tok.encode('warm up');
    for (const unit of ['a', 'the quick brown fox ']) {
      const text = unit.repeat(Math.ceil(160_000 / unit.length));
      const t0 = performance.now();
      const ids = tok.encode(text);
      const ms = performance.now() - t0;
      console.log(`${JSON.stringify(unit)} x 160 KB: ${ids.length} tokens in ${ms.toFixed(0)} ms`);
      expect(ids.length).toBeGreaterThan(160_000 / tok.maxTokenBytes);
      expect(ms).toBeLessThan(15_000);
    }
  });
});
