// The model's tokenizer, built from the serializable spec the .npu carries (a Hugging Face
// tokenizer.json plus BOS/EOS, end-of-generation ids and the chat template): encoding through
// @huggingface/tokenizers, decoding and streaming through our own byte table so partial UTF-8 is
// held back exactly.
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';

import { BYTE_TO_UNICODE } from './tokenizer/vocab-json.js';

/** How a vocabulary's token strings stand for bytes. */
export type PieceEncoding =
  /** GPT-2 byte-level BPE: each character of a token is one byte through the byte-to-unicode map. */
  | 'byte-level'
  /** SentencePiece: '▁' is a space, `<0xXX>` a raw byte (the space the encoder prefixed is dropped). */
  | 'sentencepiece';

/** Everything needed to tokenize for a model; JSON, stored in the .npu metadata. */
export interface TokenizerSpec {
  kind: 'tokenizer.json';
  /**
   * A Hugging Face tokenizer.json document (model, normalizer, pre_tokenizer, decoder, added_tokens)
   * as text: a megabyte of vocabulary and merges costs the .npu metadata's parser one string, not
   * tens of thousands of objects, when the tokenizer is not needed.
   */
  tokenizerJson: string;
  pieces: PieceEncoding;
  bosId: number | null;
  eosId: number | null;
  /** Every token that ends generation (EOS, EOT, EOM, `<|im_end|>` ...). */
  endOfGenerationIds: number[];
  addBos: boolean;
  addEos: boolean;
  chatTemplate: string | null;
}

export interface AddedTokenJson {
  id: number;
  content: string;
  special: boolean;
  normalized: boolean;
  lstrip: boolean;
  rstrip: boolean;
  single_word: boolean;
}

export interface TokenizerJson {
  model: { type: string; vocab: Record<string, number> | unknown; merges?: unknown[]; [k: string]: unknown };
  normalizer: unknown;
  pre_tokenizer: unknown;
  post_processor: unknown;
  decoder: unknown;
  added_tokens: AddedTokenJson[];
  [k: string]: unknown;
}

/** Token strings by id: the model's vocabulary (an object, or Unigram's [piece, score] list) and the added tokens. */
function tokenStrings(json: TokenizerJson): string[] {
  const vocab: string[] = [];
  const model = json.model.vocab;
  if (Array.isArray(model)) model.forEach((entry, id) => (vocab[id] = (entry as [string, number])[0]));
  else for (const [token, id] of Object.entries(model as Record<string, number>)) vocab[id] = token;
  for (const t of json.added_tokens) vocab[t.id] = t.content;
  return vocab;
}

const vocabSizes = new Map<string, number>();

/**
 * Ids the tokenizer can produce run from 0 to this - 1. Every engine load asks (~0.1 s to parse a
 * large tokenizer.json), so the last few answers are kept, keyed by the JSON text itself.
 */
export function tokenizerVocabSize(spec: TokenizerSpec): number {
  let size = vocabSizes.get(spec.tokenizerJson);
  if (size === undefined) {
    size = tokenStrings(JSON.parse(spec.tokenizerJson) as TokenizerJson).length;
    if (vocabSizes.size >= 4) vocabSizes.delete(vocabSizes.keys().next().value!);
    vocabSizes.set(spec.tokenizerJson, size);
  }
  return size;
}

const BYTE_PIECE = /^<0x([0-9A-Fa-f]{2})>$/;

export class Tokenizer {
  readonly spec: TokenizerSpec;
  /** Token strings by id (holes are ids the tokenizer does not use). */
  readonly vocab: readonly string[];
  readonly bosId: number | null;
  readonly eosId: number | null;
  /** The most UTF-8 bytes of input any one token stands for (bounds the tokens a text needs from below). */
  readonly maxTokenBytes: number;
  /** Built on first use (a second or so for a large vocabulary): decoding alone does not need it. */
  private hf: HfTokenizer | undefined;
  private readonly json: TokenizerJson;
  private readonly pieceBytes: Uint8Array[];
  /** Special (control) tokens: written out only when asked, never part of the output text. */
  private readonly special = new Set<number>();
  /** SentencePiece encoders that prefix a space to the text: decoding drops it again. */
  readonly dropsLeadingSpace: boolean;

  constructor(spec: TokenizerSpec) {
    if (spec?.kind !== 'tokenizer.json' || typeof spec.tokenizerJson !== 'string')
      throw new Error("the model's tokenizer is not in the form this npuserve reads (converted by an older version?): convert it again");
    this.spec = spec;
    this.json = JSON.parse(spec.tokenizerJson) as TokenizerJson;
    const vocab = tokenStrings(this.json);
    this.vocab = vocab;
    for (const t of this.json.added_tokens) if (t.special) this.special.add(t.id);
    this.bosId = spec.bosId;
    this.eosId = spec.eosId;
    const prefixing = JSON.stringify([this.json.normalizer, this.json.pre_tokenizer]);
    this.dropsLeadingSpace = spec.pieces === 'sentencepiece' && /"Prepend"|"prepend_scheme":"(first|always)"|"add_prefix_space":true/.test(prefixing);
    const enc = new TextEncoder();
    const byteLevel = spec.pieces === 'byte-level' ? new Map(BYTE_TO_UNICODE.map((c, b) => [c, b])) : null;
    const added = new Set(this.json.added_tokens.map((t) => t.id));
    this.pieceBytes = vocab.map((piece, id) => {
      if (this.special.has(id)) return new Uint8Array(0);
      if (added.has(id)) return enc.encode(piece);
      if (byteLevel) return Uint8Array.from([...piece], (c) => byteLevel.get(c) ?? 0x3f);
      const m = BYTE_PIECE.exec(piece);
      if (m) return Uint8Array.of(parseInt(m[1], 16));
      return enc.encode(piece.replaceAll('\u2581', ' '));
    });
    // A special token covers its written text; any other token the bytes it decodes to (a character
    // that falls back to <unk> covers up to 4).
    let longest = 4;
    vocab.forEach((piece, id) => (longest = Math.max(longest, this.special.has(id) ? enc.encode(piece).length : this.pieceBytes[id].length)));
    this.maxTokenBytes = longest;
  }

  /** Ids run from 0 to vocabSize - 1. */
  get vocabSize(): number {
    return this.vocab.length;
  }

  /**
   * Text -> ids. Special tokens written in the text (`<|im_start|>`, `[INST]`) become their ids; with
   * `addSpecial` (default) BOS/EOS are added as the model asks (add_bos/add_eos). A text that already
   * starts with BOS (a chat template that writes it) does not get a second one, unlike llama.cpp.
   */
  encode(text: string, opts: { addSpecial?: boolean } = {}): number[] {
    this.hf ??= new HfTokenizer(this.json, {});
    const ids = text.length === 0 ? [] : this.hf.encode(text, { add_special_tokens: false }).ids;
    if (opts.addSpecial === false) return ids;
    if (this.spec.addBos && this.bosId !== null && ids[0] !== this.bosId) ids.unshift(this.bosId);
    if (this.spec.addEos && this.eosId !== null) ids.push(this.eosId);
    return ids;
  }

  /** The bytes a token contributes to the output text (none for special tokens). */
  bytesOf(id: number): Uint8Array {
    return this.pieceBytes[id] ?? new Uint8Array(0);
  }

  /** ids -> text, without special tokens. */
  decode(ids: readonly number[]): string {
    const d = new StreamDecoder(this);
    return d.push(ids) + d.flush();
  }
}

/**
 * Incremental detokenizer for streaming: returns only complete UTF-8 characters, holding back the
 * bytes of a character split across tokens until it is whole. SentencePiece's leading space (the
 * prefix the encoder adds) is dropped from the first piece.
 */
export class StreamDecoder {
  private pending: number[] = [];
  private started = false;
  private readonly utf8 = new TextDecoder('utf-8');

  constructor(private readonly tok: Tokenizer) {}

  push(ids: readonly number[]): string {
    for (const id of ids) {
      let bytes = this.tok.bytesOf(id);
      if (!this.started && bytes.length > 0) {
        this.started = true;
        if (this.tok.dropsLeadingSpace && bytes[0] === 0x20 && this.tok.vocab[id]?.startsWith('\u2581')) bytes = bytes.subarray(1);
      }
      for (const b of bytes) this.pending.push(b);
    }
    const end = completeUtf8Prefix(this.pending);
    const text = this.utf8.decode(Uint8Array.from(this.pending.slice(0, end)));
    this.pending = this.pending.slice(end);
    return text;
  }

  /** Whatever is held back (an incomplete character decodes to U+FFFD). */
  flush(): string {
    const text = this.utf8.decode(Uint8Array.from(this.pending));
    this.pending = [];
    return text;
  }
}

/** Length of the longest prefix that does not end inside a UTF-8 multi-byte sequence. */
function completeUtf8Prefix(bytes: number[]): number {
  const n = bytes.length;
  for (let back = 1; back <= Math.min(4, n); back++) {
    const b = bytes[n - back];
    if ((b & 0xc0) === 0x80) continue; // continuation byte
    const need = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 1;
    return need > back ? n - back : n;
  }
  return n;
}
