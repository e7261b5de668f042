// Writes a .npu file: plans every tensor's dtype, layout and offset, writes header and metadata,
// then packs and writes tensors one at a time (peak memory: one tensor). The metadata block keeps
// spare room so the accuracy report can be filled in afterwards without moving the data.
import { closeSync, ftruncateSync, openSync, writeSync } from 'node:fs';

import { native } from '../engine.js';
import {
  alignUp,
  crc32,
  encodeHeader,
  FORMAT_VERSION,
  HEADER_BYTES,
  scaleCount,
  TENSOR_ALIGN,
  tensorBytes,
  type NpuMetadata,
  type NpuTensor,
  type TensorDType,
  type TensorLayout,
} from '../format.js';

/** A tensor to write: its stored form and how to produce its float32 values (row-major). */
export interface PlannedTensor {
  name: string;
  dtype: TensorDType;
  layout: TensorLayout;
  shape: number[];
  produce: () => Float32Array;
}

const METADATA_SPARE_BYTES = 16384;

function tableOf(plan: PlannedTensor[]): NpuTensor[] {
  const table: NpuTensor[] = [];
  let offset = 0;
  const add = (name: string, dtype: TensorDType, layout: TensorLayout, shape: number[]) => {
    const bytes = tensorBytes(dtype, layout, shape);
    table.push({ name, dtype, layout, shape, offset, bytes });
    offset = alignUp(offset + bytes, TENSOR_ALIGN);
  };
  for (const t of plan) {
    add(t.name, t.dtype, t.layout, t.shape);
    if (t.dtype === 'i8') add(`${t.name}.scale`, 'f16', 'row-major', [scaleCount(t.layout, t.shape[0], t.shape[1])]);
  }
  return table;
}

function encodeMetadata(meta: NpuMetadata, capacity?: number): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(meta));
  const size = capacity ?? json.length + METADATA_SPARE_BYTES;
  if (json.length > size) throw new Error(`metadata grew to ${json.length} bytes, beyond the ${size} reserved`);
  const out = new Uint8Array(size).fill(0x20);
  out.set(json);
  return out;
}

export class NpuWriter {
  private fd: number;
  private metaCapacity: number;
  private dataOffset: number;
  private dataBytes: number;
  readonly meta: NpuMetadata;

  /** Creates `path` and writes header and metadata; `meta.tensors` is filled from the plan. */
  constructor(
    readonly path: string,
    meta: Omit<NpuMetadata, 'tensors' | 'formatVersion'>,
    private readonly plan: PlannedTensor[],
  ) {
    const tensors = tableOf(plan);
    this.meta = { ...meta, formatVersion: FORMAT_VERSION, tensors } as NpuMetadata;
    const metaBytes = encodeMetadata(this.meta);
    this.metaCapacity = metaBytes.length;
    this.dataOffset = alignUp(HEADER_BYTES + metaBytes.length, TENSOR_ALIGN);
    const last = tensors[tensors.length - 1];
    this.dataBytes = last ? alignUp(last.offset + last.bytes, TENSOR_ALIGN) : 0;
    this.fd = openSync(path, 'w');
    ftruncateSync(this.fd, this.dataOffset + this.dataBytes);
    this.writeMetadata(metaBytes);
  }

  private writeMetadata(metaBytes: Uint8Array): void {
    const header = encodeHeader({
      formatVersion: FORMAT_VERSION,
      metadataOffset: HEADER_BYTES,
      metadataBytes: metaBytes.length,
      dataOffset: this.dataOffset,
      dataBytes: this.dataBytes,
      fileBytes: this.dataOffset + this.dataBytes,
      metadataCrc32: crc32(metaBytes),
    });
    writeSync(this.fd, header, 0, header.length, 0);
    writeSync(this.fd, metaBytes, 0, metaBytes.length, HEADER_BYTES);
  }

  /** Produces, packs and writes every tensor; `onTensor` reports progress by bytes written. */
  writeTensors(onTensor?: (name: string, doneBytes: number, totalBytes: number) => void): void {
    const byName = new Map(this.meta.tensors.map((t) => [t.name, t]));
    let done = 0;
    for (const t of this.plan) {
      const values = t.produce();
      const rows = t.shape.length === 2 ? t.shape[0] : 1;
      const cols = t.shape.length === 2 ? t.shape[1] : t.shape[0];
      const packed = native().packWeight(values, rows, cols, t.dtype, t.layout);
      const entry = byName.get(t.name)!;
      this.writeAt(entry, packed.data);
      if (t.dtype === 'i8') this.writeAt(byName.get(`${t.name}.scale`)!, new Uint8Array(packed.scales!.buffer));
      done += entry.bytes;
      onTensor?.(t.name, done, this.dataBytes);
    }
  }

  private writeAt(entry: NpuTensor, bytes: Uint8Array): void {
    if (bytes.length !== entry.bytes) throw new Error(`tensor '${entry.name}': packed ${bytes.length} bytes, the table says ${entry.bytes}`);
    let written = 0;
    while (written < bytes.length) written += writeSync(this.fd, bytes, written, bytes.length - written, this.dataOffset + entry.offset + written);
  }

  /** Rewrites the metadata in place (same reserved size), e.g. to add the accuracy report. */
  updateMetadata(update: Partial<NpuMetadata>): void {
    Object.assign(this.meta, update);
    this.writeMetadata(encodeMetadata(this.meta, this.metaCapacity));
  }

  close(): void {
    closeSync(this.fd);
  }
}
