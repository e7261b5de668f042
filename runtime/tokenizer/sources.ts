// Reads a checkpoint's tokenizer into a TokenizerSpec: from a GGUF's `tokenizer.*` keys (llama.cpp's
// vocabulary, turned into a tokenizer.json) or from a Hugging Face folder's tokenizer.json,
// tokenizer_config.json and generation_config.json.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { FormatError, jsonProblem } from '../errors.js';
import type { PieceEncoding, TokenizerJson, TokenizerSpec } from '../tokenizer.js';
import { byteLevelBpeJson, endOfGenerationIds, sentencePieceJson } from './vocab-json.js';

/** A GGUF file's tokenizer (`tokenizer.ggml.*`, `tokenizer.chat_template`) as a spec. */
export function tokenizerFromGguf(path: string, metadata: ReadonlyMap<string, unknown>): TokenizerSpec {
  const fail = (detail: string): never => {
    throw new FormatError(path, detail);
  };
  const get = (key: string) => metadata.get(key);
  const strings = (key: string): string[] => {
    const v = get(key);
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) fail(`'${key}' must be an array of strings`);
    return v as string[];
  };
  const tokens = strings('tokenizer.ggml.tokens');
  const numbers = (key: string, fallback: number): number[] => {
    const v = get(key);
    if (v === undefined) return new Array<number>(tokens.length).fill(fallback);
    if (!Array.isArray(v) || v.length !== tokens.length || !v.every((x) => typeof x === 'number')) fail(`'${key}' must be an array of ${tokens.length} numbers (one per token)`);
    return v as number[];
  };
  const id = (key: string): number | null => {
    const v = get(key);
    if (v === undefined) return null;
    const n = typeof v === 'bigint' || typeof v === 'number' ? Number(v) : NaN;
    if (!Number.isSafeInteger(n) || n < 0 || n >= tokens.length) fail(`'${key}' ${String(v)} is not a token id of the vocabulary of ${tokens.length}`);
    return n;
  };
  const flag = (key: string, fallback: boolean): boolean => {
    const v = get(key);
    if (v === undefined) return fallback;
    if (typeof v !== 'boolean') fail(`'${key}' must be true or false, got ${String(v)}`);
    return v as boolean;
  };
  const types = numbers('tokenizer.ggml.token_type', 1);
  const model = get('tokenizer.ggml.model');
  const template = get('tokenizer.chat_template');
  if (template !== undefined && typeof template !== 'string') fail(`'tokenizer.chat_template' must be a string`);
  const bosId = id('tokenizer.ggml.bos_token_id');
  const eosId = id('tokenizer.ggml.eos_token_id');
  const eog = [eosId, id('tokenizer.ggml.eot_token_id'), id('tokenizer.ggml.eom_token_id')];
  let json: TokenizerJson;
  let pieces: PieceEncoding;
  if (model === 'llama') {
    json = sentencePieceJson({ tokens, types, scores: numbers('tokenizer.ggml.scores', 0) }, flag('tokenizer.ggml.add_space_prefix', true), id('tokenizer.ggml.unknown_token_id'));
    pieces = 'sentencepiece';
  } else if (model === 'gpt2') {
    const pre = get('tokenizer.ggml.pre') ?? 'default';
    if (typeof pre !== 'string') fail(`'tokenizer.ggml.pre' must be a string`);
    try {
      json = byteLevelBpeJson({ tokens, types }, strings('tokenizer.ggml.merges'), pre as string);
    } catch (e) {
      return fail(`'tokenizer.ggml.pre': ${(e as Error).message}`);
    }
    pieces = 'byte-level';
  } else {
    return fail(`'tokenizer.ggml.model' ${JSON.stringify(model)} is not supported (expected "llama" for SentencePiece or "gpt2" for byte-level BPE)`);
  }
  return {
    kind: 'tokenizer.json',
    tokenizerJson: JSON.stringify(json),
    pieces,
    bosId,
    eosId,
    endOfGenerationIds: endOfGenerationIds({ tokens, types }, eog),
    // llama.cpp's defaults: SentencePiece adds BOS, byte-level BPE does not unless told.
    addBos: flag('tokenizer.ggml.add_bos_token', model === 'llama'),
    addEos: flag('tokenizer.ggml.add_eos_token', false),
    chatTemplate: (template as string | undefined) ?? null,
  };
}

function readJson(path: string): Record<string, unknown> {
  try {
    const v = JSON.parse(readFileSync(path, 'utf8'));
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not a JSON object');
    return v;
  } catch (e) {
    throw new FormatError(path, e instanceof SyntaxError ? jsonProblem(e) : (e as Error).message);
  }
}

/** A token named in tokenizer_config.json: a string or `{ content }`. */
function tokenText(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && v !== null && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return null;
}

/** The chat template of tokenizer_config.json (a string, or named templates with a `default`), or chat_template.jinja. */
function hfChatTemplate(dir: string, config: Record<string, unknown>): string | null {
  const t = config.chat_template;
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) {
    const named = t.find((x) => x?.name === 'default') ?? t[0];
    if (typeof named?.template === 'string') return named.template;
  }
  const jinja = join(dir, 'chat_template.jinja');
  return existsSync(jinja) ? readFileSync(jinja, 'utf8') : null;
}

/** Whether tokenizer.json's post-processor puts `token` before the text (a TemplateProcessing `single`). */
function postProcessorAdds(json: TokenizerJson, token: string | null, where: 'before' | 'after'): boolean {
  const single = (json.post_processor as { type?: string; single?: Array<Record<string, { id?: string }>> } | null)?.single;
  if (!token || !Array.isArray(single)) return false;
  const textAt = single.findIndex((p) => 'Sequence' in p);
  return single.some((p, i) => p.SpecialToken?.id === token && (where === 'before' ? i < textAt : i > textAt));
}

/** A Hugging Face folder's tokenizer, or null when it has no tokenizer.json. */
export function tokenizerFromHfFolder(dir: string): TokenizerSpec | null {
  const jsonPath = join(dir, 'tokenizer.json');
  if (!existsSync(jsonPath)) return null;
  const json = readJson(jsonPath) as unknown as TokenizerJson;
  if (typeof json.model !== 'object' || json.model === null) throw new FormatError(jsonPath, "no 'model' object");
  json.added_tokens ??= [];
  for (const key of ['normalizer', 'pre_tokenizer', 'post_processor', 'decoder'] as const) json[key] ??= null;
  const configPath = join(dir, 'tokenizer_config.json');
  const config = existsSync(configPath) ? readJson(configPath) : {};
  const idOf = (text: string | null): number | null => {
    if (text === null) return null;
    const added = json.added_tokens.find((t) => t.content === text);
    if (added) return added.id;
    const id = (json.model.vocab as Record<string, number>)[text];
    return typeof id === 'number' ? id : null;
  };
  const bosText = tokenText(config.bos_token);
  const eosText = tokenText(config.eos_token);
  const bosId = idOf(bosText);
  const eosId = idOf(eosText);
  const genPath = join(dir, 'generation_config.json');
  const genEos = existsSync(genPath) ? readJson(genPath).eos_token_id : undefined;
  const eog = [eosId, ...(Array.isArray(genEos) ? genEos : genEos === undefined ? [] : [genEos]).map((x) => (typeof x === 'number' ? x : null))];
  const decoderText = JSON.stringify(json.decoder ?? null);
  const pieces: PieceEncoding = decoderText.includes('"ByteLevel"') ? 'byte-level' : 'sentencepiece';
  const added = json.added_tokens;
  const tokens: string[] = [];
  const types: number[] = [];
  for (const t of added) {
    tokens[t.id] = t.content;
    types[t.id] = t.special ? 3 : 4;
  }
  return {
    kind: 'tokenizer.json',
    tokenizerJson: JSON.stringify(json),
    pieces,
    bosId,
    eosId,
    endOfGenerationIds: endOfGenerationIds({ tokens, types }, eog),
    addBos: typeof config.add_bos_token === 'boolean' ? config.add_bos_token : postProcessorAdds(json, bosText, 'before'),
    addEos: typeof config.add_eos_token === 'boolean' ? config.add_eos_token : postProcessorAdds(json, eosText, 'after'),
    chatTemplate: hfChatTemplate(dir, config),
  };
}
