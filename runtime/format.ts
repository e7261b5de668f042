// The offline model format (.npu), the one source of truth for its layout:
//
//   [0, 64)            header: magic "NPUSERVE", format version, metadata and data ranges, file size,
//                      CRC-32 of the metadata block
//   [64, dataOffset)   metadata: UTF-8 JSON (NpuMetadata), padded with spaces
//   [dataOffset, end)  tensor data, each tensor 64-byte aligned, already in the layout the kernels read
//
// Tensor layouts: `row-major` is [rows][cols]. `packed16` groups rows by 16 (zero rows pad the last
// group); inside a group f32/f16 store [cols][16] and i8 stores [cols/4][16][4] with cols padded with
// zeros to a multiple of 32. An i8 weight `W` comes with `W.scale`: f16, one scale per row and group
// of 32 columns (w = q * scale), ordered [rows][groups] for row-major and [rows/16][groups][16] for
// packed16 (padding rows have scale 0). Version 1 files (one f32 scale per row) are refused.
import { closeSync, constants, fstatSync, openSync, statSync } from 'node:fs';
import { crc32 as zlibCrc32 } from 'node:zlib';

import { FormatError } from './errors.js';
import { validateConfig, type ModelConfig } from './model-config.js';
import { readExact } from './convert/tensors.js';
import type { TokenizerSpec } from './tokenizer.js';

export const MAGIC = 'NPUSERVE';
export const FORMAT_VERSION = 2;
export const HEADER_BYTES = 64;
export const TENSOR_ALIGN = 64;
/** The metadata block is read and parsed whole: a larger one is refused before it is read. */
export const MAX_METADATA_BYTES = 256 * 2 ** 20;

export type Precision = 'FP32' | 'FP16' | 'INT8';
export type TensorDType = 'f32' | 'f16' | 'i8';
export type TensorLayout = 'row-major' | 'packed16';

export interface NpuTensor {
  name: string;
  dtype: TensorDType;
  layout: TensorLayout;
  shape: number[];
  /** Byte offset from the start of the data section. */
  offset: number;
  bytes: number;
}

export interface AccuracyReport {
  reference: 'FP32';
  prompts: number;
  positions: number;
  /** Mean over calibration prompts of the cosine similarity of last-position logits. */
  cosineSimilarity: number;
  minCosineSimilarity: number;
  /** Fraction of all prompt positions whose argmax token matches the reference. */
  top1Agreement: number;
}

export interface NpuMetadata {
  format: 'npuserve-model';
  formatVersion: number;
  converterVersion: string;
  engineVersion: string;
  architecture: ModelConfig['architecture'];
  config: ModelConfig;
  precision: Precision;
  optimizeLevel: number;
  quantization: null | typeof INT8_QUANTIZATION;
  source: { format: 'safetensors' | 'gguf' | 'npu'; files: string[]; bytes: number; digest: string };
  tokenizer: TokenizerSpec;
  accuracy: AccuracyReport | null;
  createdAt: string;
  tensors: NpuTensor[];
}

/** Columns that share one i8 scale, in weights and in activations (as llama.cpp's Q8_0). */
export const INT8_GROUP_SIZE = 32;

/** The INT8 scheme this format version stores, as named in the metadata. */
export const INT8_QUANTIZATION = {
  weights: 'int8-symmetric-group32',
  activations: 'int8-dynamic-group32',
  groupSize: INT8_GROUP_SIZE,
  scales: 'f16',
} as const;

export interface NpuHeader {
  formatVersion: number;
  metadataOffset: number;
  metadataBytes: number;
  dataOffset: number;
  dataBytes: number;
  fileBytes: number;
  metadataCrc32: number;
}

const DTYPE_BYTES: Record<TensorDType, number> = { f32: 4, f16: 2, i8: 1 };

export const alignUp = (n: number, a: number): number => Math.ceil(n / a) * a;

/** Bytes a weight of this dtype/layout/shape occupies (must agree with native weight_data_bytes). */
export function tensorBytes(dtype: TensorDType, layout: TensorLayout, shape: readonly number[]): number {
  if (shape.length === 1) return shape[0] * DTYPE_BYTES[dtype];
  const [rows, cols] = shape;
  if (layout === 'row-major') return rows * cols * DTYPE_BYTES[dtype];
  return alignUp(rows, 16) * (dtype === 'i8' ? alignUp(cols, INT8_GROUP_SIZE) : cols) * DTYPE_BYTES[dtype];
}

/** Entries of the f16 scale vector that goes with an i8 weight: one per padded row and group. */
export function scaleCount(layout: TensorLayout, rows: number, cols: number): number {
  return (layout === 'packed16' ? alignUp(rows, 16) : rows) * Math.ceil(cols / INT8_GROUP_SIZE);
}

/** CRC-32 (IEEE, as zlib and the header store it), computed natively by zlib. */
export function crc32(bytes: Uint8Array): number {
  return zlibCrc32(bytes) >>> 0;
}

export function encodeHeader(h: NpuHeader): Uint8Array {
  const buf = new Uint8Array(HEADER_BYTES);
  const dv = new DataView(buf.buffer);
  buf.set(new TextEncoder().encode(MAGIC), 0);
  dv.setUint32(8, h.formatVersion, true);
  dv.setUint32(12, HEADER_BYTES, true);
  dv.setBigUint64(16, BigInt(h.metadataOffset), true);
  dv.setBigUint64(24, BigInt(h.metadataBytes), true);
  dv.setBigUint64(32, BigInt(h.dataOffset), true);
  dv.setBigUint64(40, BigInt(h.dataBytes), true);
  dv.setBigUint64(48, BigInt(h.fileBytes), true);
  dv.setUint32(56, h.metadataCrc32, true);
  return buf;
}

function u64(dv: DataView, off: number): number {
  const v = dv.getBigUint64(off, true);
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
}

export interface NpuFile {
  path: string;
  header: NpuHeader;
  metadata: NpuMetadata;
}

/** Reads and validates the header and metadata of a .npu file (tensor data is left to the engine). */
export function readNpuFile(path: string): NpuFile {
  const fail = (detail: string): never => {
    throw new FormatError(path, detail);
  };
  // Anything but a regular file is refused before it is opened: opening a FIFO waits for a writer,
  // a device may never end. O_NONBLOCK covers a path swapped for one between the stat and the open.
  if (!statSync(path).isFile()) fail('not a regular file (a model must be a .npu file, not a FIFO, device or directory)');
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) fail('not a regular file (a model must be a .npu file, not a FIFO, device or directory)');
    const size = stat.size;
    if (size < HEADER_BYTES) fail(`file has ${size} bytes, too short for the ${HEADER_BYTES}-byte .npu header`);
    const hb = readExact(fd, path, 0, HEADER_BYTES);
    const dv = new DataView(hb.buffer);
    if (new TextDecoder().decode(hb.subarray(0, 8)) !== MAGIC) fail('not an npuserve model (bad magic; expected "NPUSERVE")');
    const header: NpuHeader = {
      formatVersion: dv.getUint32(8, true),
      metadataOffset: u64(dv, 16),
      metadataBytes: u64(dv, 24),
      dataOffset: u64(dv, 32),
      dataBytes: u64(dv, 40),
      fileBytes: u64(dv, 48),
      metadataCrc32: dv.getUint32(56, true),
    };
    if (header.formatVersion === 1)
      fail(`format version 1 (INT8 with one scale per row) is no longer read; this build reads version ${FORMAT_VERSION}: re-convert the model with \`npuserve convert\``);
    if (header.formatVersion !== FORMAT_VERSION) fail(`format version ${header.formatVersion} is not supported (this build reads version ${FORMAT_VERSION})`);
    if (header.fileBytes !== size) fail(`file is ${size} bytes but its header says ${header.fileBytes}: truncated or appended to`);
    if (header.metadataOffset !== HEADER_BYTES || header.metadataOffset + header.metadataBytes > header.dataOffset)
      fail(`metadata range [${header.metadataOffset}, +${header.metadataBytes}) does not fit before the data at ${header.dataOffset}`);
    if (header.dataOffset % TENSOR_ALIGN !== 0 || header.dataOffset + header.dataBytes !== size)
      fail(`data range [${header.dataOffset}, +${header.dataBytes}) does not end at the end of the file (${size} bytes)`);
    if (header.metadataBytes > MAX_METADATA_BYTES)
      fail(`metadata block of ${header.metadataBytes} bytes is larger than the ${MAX_METADATA_BYTES} bytes a model's config, tensor table and tokenizer need`);
    const metaBytes = readExact(fd, path, header.metadataOffset, header.metadataBytes);
    const crc = crc32(metaBytes);
    if (crc !== header.metadataCrc32) fail(`metadata checksum ${crc.toString(16)} does not match the header's ${header.metadataCrc32.toString(16)}: the file is corrupt`);
    let metadata: NpuMetadata;
    try {
      metadata = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(metaBytes));
    } catch (e) {
      return fail(`metadata is not valid JSON: ${(e as Error).message}`);
    }
    validateTensorTable(path, metadata, header.dataBytes);
    validateModelConfig(path, metadata.config);
    return { path, header, metadata };
  } finally {
    closeSync(fd);
  }
}

// Bounds on the architecture fields (the native loader applies the same): anything sized from the
// config before the tensors are checked against it (RoPE frequencies here) stays small.
const CONFIG_LIMITS: ReadonlyArray<[keyof ModelConfig, number]> = [
  ['hiddenSize', 2 ** 20],
  ['numLayers', 1024],
  ['numHeads', 4096],
  ['numKvHeads', 4096],
  ['headDim', 4096],
  ['intermediateSize', 2 ** 20],
  ['vocabSize', 2 ** 24],
  ['maxPositionEmbeddings', 2 ** 30],
];

function validateModelConfig(path: string, c: ModelConfig): void {
  const fail = (detail: string): never => {
    throw new FormatError(path, detail);
  };
  for (const [key, max] of CONFIG_LIMITS) {
    const v = c[key];
    if (!Number.isSafeInteger(v) || (v as number) < 1 || (v as number) > max) fail(`config.${key} must be an integer in [1, ${max}], got ${JSON.stringify(v)}`);
  }
  for (const key of ['ropeTheta', 'rmsNormEps'] as const)
    if (typeof c[key] !== 'number' || !Number.isFinite(c[key]) || c[key] <= 0) fail(`config.${key} must be a positive number, got ${JSON.stringify(c[key])}`);
  if (c.ropeScaling?.type === 'freq-factors' && !Array.isArray(c.ropeScaling.factors)) fail('config.ropeScaling.factors must be an array');
  validateConfig(path, c);
}

function validateTensorTable(path: string, m: NpuMetadata, dataBytes: number): void {
  const fail = (detail: string): never => {
    throw new FormatError(path, detail);
  };
  if (m?.format !== 'npuserve-model' || !Array.isArray(m.tensors) || typeof m.config !== 'object') fail('metadata lacks format, config or tensors');
  const seen = new Set<string>();
  const ranges: Array<[number, number, string]> = [];
  for (const t of m.tensors) {
    if (typeof t?.name !== 'string') fail('a tensor entry has no name');
    if (seen.has(t.name)) fail(`tensor '${t.name}' is listed twice`);
    seen.add(t.name);
    if (!(t.dtype in DTYPE_BYTES)) fail(`tensor '${t.name}': dtype ${JSON.stringify(t.dtype)} is not f32, f16 or i8`);
    if (t.layout !== 'row-major' && t.layout !== 'packed16') fail(`tensor '${t.name}': layout ${JSON.stringify(t.layout)} is unknown`);
    if (!Array.isArray(t.shape) || t.shape.length < 1 || t.shape.length > 2 || !t.shape.every((d) => Number.isSafeInteger(d) && d > 0))
      fail(`tensor '${t.name}': shape ${JSON.stringify(t.shape)} must be 1 or 2 positive integers`);
    if (!Number.isSafeInteger(t.offset) || t.offset < 0 || t.offset % TENSOR_ALIGN !== 0) fail(`tensor '${t.name}': offset ${t.offset} is not a 64-byte aligned position`);
    const expected = tensorBytes(t.dtype, t.layout, t.shape);
    if (t.bytes !== expected) fail(`tensor '${t.name}': ${t.bytes} bytes, its dtype, layout and shape need ${expected}`);
    if (t.offset + t.bytes > dataBytes) fail(`tensor '${t.name}' ends at data byte ${t.offset + t.bytes}, the data section has ${dataBytes}`);
    ranges.push([t.offset, t.offset + t.bytes, t.name]);
  }
  ranges.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < ranges.length; i++) if (ranges[i][0] < ranges[i - 1][1]) fail(`tensors '${ranges[i - 1][2]}' and '${ranges[i][2]}' overlap`);
}
