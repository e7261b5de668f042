// Opens a source checkpoint for conversion: a Hugging Face folder (config.json + one or sharded
// safetensors files), a single .safetensors file beside its config.json, or a GGUF file. All are
// presented with Hugging Face tensor names and HF weight layouts.
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

import { FormatError, UsageError } from '../errors.js';
import { fromHfConfig, type ModelConfig } from '../model-config.js';
import { GgufCheckpoint } from './gguf-model.js';
import { SafetensorsFile, ShardedSafetensors } from './safetensors.js';
import type { TensorSource } from './tensors.js';

export type SourceFormat = 'auto' | 'safetensors' | 'gguf';

export interface Checkpoint {
  format: 'safetensors' | 'gguf';
  config: ModelConfig;
  source: TensorSource;
  /** Files whose bytes make up the checkpoint (hashed into the source digest). */
  files: string[];
  chatTemplate: string | null;
}

function readJson(path: string): unknown {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new FormatError(path, `not valid JSON: ${(e as Error).message}`);
  }
}

function chatTemplateIn(dir: string): string | null {
  const path = join(dir, 'tokenizer_config.json');
  if (!existsSync(path)) return null;
  const t = (readJson(path) as { chat_template?: unknown }).chat_template;
  return typeof t === 'string' ? t : null;
}

function openHfFolder(dir: string, weights?: string): Checkpoint {
  const configPath = join(dir, 'config.json');
  if (!existsSync(configPath)) throw new FormatError(dir, 'no config.json: a Hugging Face checkpoint folder needs one beside its safetensors files');
  const config = fromHfConfig(configPath, readJson(configPath));
  const index = join(dir, 'model.safetensors.index.json');
  let source: TensorSource;
  let files: string[];
  if (weights) {
    source = new SafetensorsFile(weights);
    files = [configPath, weights];
  } else if (existsSync(index)) {
    const sharded = new ShardedSafetensors(index);
    source = sharded;
    files = [configPath, index, ...new Set(sharded.shardPaths)];
  } else if (existsSync(join(dir, 'model.safetensors'))) {
    source = new SafetensorsFile(join(dir, 'model.safetensors'));
    files = [configPath, join(dir, 'model.safetensors')];
  } else {
    throw new FormatError(dir, 'no model.safetensors or model.safetensors.index.json found');
  }
  return { format: 'safetensors', config, source, files, chatTemplate: chatTemplateIn(dir) };
}

function openGguf(path: string): Checkpoint {
  const g = new GgufCheckpoint(path);
  return { format: 'gguf', config: g.config, source: g, files: [path], chatTemplate: g.chatTemplate };
}

/** Opens `input` (folder or file) as the given format, or detects it. */
export function openCheckpoint(input: string, format: SourceFormat = 'auto'): Checkpoint {
  if (!existsSync(input)) throw new UsageError(`input ${input} does not exist`);
  const isDir = statSync(input).isDirectory();
  if (isDir) {
    const ggufs = readdirSync(input).filter((f) => f.endsWith('.gguf'));
    const hasSafetensors = existsSync(join(input, 'model.safetensors')) || existsSync(join(input, 'model.safetensors.index.json'));
    if (format === 'gguf' || (format === 'auto' && !hasSafetensors && ggufs.length > 0)) {
      if (ggufs.length !== 1) throw new FormatError(input, `expected exactly one .gguf file, found ${ggufs.length}`);
      return openGguf(join(input, ggufs[0]));
    }
    return openHfFolder(input);
  }
  if (format === 'gguf' || (format === 'auto' && input.endsWith('.gguf'))) return openGguf(input);
  if (format === 'safetensors' || input.endsWith('.safetensors')) return openHfFolder(dirname(input), input);
  throw new UsageError(`cannot tell the format of ${basename(input)}: give a folder, a .safetensors or a .gguf file, or --format`);
}
