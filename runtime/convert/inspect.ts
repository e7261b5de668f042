// What a .npu file holds, read from its validated header and metadata (`npuserve inspect`): the
// operator inspects a prebuilt source so the model's status reports the file's own precision, not
// the one its spec names.
import { existsSync, statSync } from 'node:fs';

import { UsageError } from '../errors.js';
import type { ModelFootprint } from '../../common/serving-memory.js';
import { readNpuFile, type NpuMetadata, type Precision } from '../format.js';
import { modelFootprint } from '../model-config.js';

export interface InspectSummary {
  input: string;
  precision: Precision;
  optimizeLevel: number;
  architecture: NpuMetadata['architecture'];
  engineVersion: string;
  fileBytes: number;
  /** What sizes a serving pod of this file (the operator records it per revision). */
  model: ModelFootprint;
  accuracy: NpuMetadata['accuracy'];
}

export function inspectNpu(input: string): InspectSummary {
  if (!existsSync(input)) throw new UsageError(`input ${input} does not exist`);
  if (statSync(input).isDirectory()) throw new UsageError(`input ${input} is a directory; a model is one .npu file`);
  const { header, metadata } = readNpuFile(input);
  return {
    input,
    precision: metadata.precision,
    optimizeLevel: metadata.optimizeLevel,
    architecture: metadata.architecture,
    engineVersion: metadata.engineVersion,
    fileBytes: header.fileBytes,
    model: modelFootprint(metadata.config, header.fileBytes),
    accuracy: metadata.accuracy,
  };
}
