// Versions recorded in every .npu file. ENGINE_VERSION changes whenever a layout or the meaning of a
// stored tensor changes, so the operator's revision hash (which includes it) forces reconversion.
export const CONVERTER_VERSION = '0.1.0';
export const ENGINE_VERSION = '2';
