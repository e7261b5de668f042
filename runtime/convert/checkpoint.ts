// Opens a source checkpoint for conversion: a Hugging Face folder (config.json + one or sharded
// safetensors files), a single .safetensors file beside its config.json, or a GGUF file. All are
// presented with Hugging Face tensor names and HF weight layouts. Every file read from a folder must
// resolve inside it (files.ts): a symlinked shard cannot make convert read a file elsewhere.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

import { FormatError, UsageError } from '../errors.js';
import { fromHfConfig, type ModelConfig } from '../model-config.js';
import type { TokenizerSpec } from '../tokenizer.js';
import { tokenizerFromGguf, tokenizerFromHfFolder } from '../tokenizer/sources.js';
import { isSymlink, readJsonFile, realFolder, requireInside } from './files.js';
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
  /** The checkpoint's tokenizer, special tokens and chat template. */
  tokenizer: TokenizerSpec;
}

/** Files of a Hugging Face folder read besides the weights, when present (tokenizer/sources.ts reads the last four). */
const HF_SIDE_FILES = ['config.json', 'model.safetensors.index.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json', 'chat_template.jinja'];

function openHfFolder(dir: string, weights?: string): Checkpoint {
  const root = realFolder(dir);
  for (const f of HF_SIDE_FILES) if (existsSync(join(dir, f)) || isSymlink(join(dir, f))) requireInside(root, join(dir, f));
  const configPath = join(dir, 'config.json');
  if (!existsSync(configPath)) throw new FormatError(dir, 'no config.json: a Hugging Face checkpoint folder needs one beside its safetensors files');
  const config = fromHfConfig(configPath, readJsonFile(configPath));
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
  const tokenizer = tokenizerFromHfFolder(dir);
  if (!tokenizer) {
    source.close();
    throw new FormatError(dir, 'no tokenizer.json: a Hugging Face checkpoint folder needs its tokenizer (tokenizer.json, and tokenizer_config.json for special tokens and the chat template)');
  }
  const tokenizerFiles = ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json'].map((f) => join(dir, f)).filter((f) => existsSync(f));
  return { format: 'safetensors', config, source, files: [...files, ...tokenizerFiles], tokenizer };
}

function openGguf(path: string): Checkpoint {
  const g = new GgufCheckpoint(path);
  try {
    return { format: 'gguf', config: g.config, source: g, files: [path], tokenizer: tokenizerFromGguf(path, g.file.metadata) };
  } catch (e) {
    g.close();
    throw e;
  }
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
      requireInside(realFolder(input), join(input, ggufs[0]));
      return openGguf(join(input, ggufs[0]));
    }
    return openHfFolder(input);
  }
  requireInside(realFolder(dirname(input)), input);
  if (format === 'gguf' || (format === 'auto' && input.endsWith('.gguf'))) return openGguf(input);
  if (format === 'safetensors' || input.endsWith('.safetensors')) return openHfFolder(dirname(input), input);
  throw new UsageError(`cannot tell the format of ${basename(input)}: give a folder, a .safetensors or a .gguf file, or --format`);
}
