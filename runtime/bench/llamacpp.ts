// llama.cpp as a peer and an oracle, through node-llama-cpp (a devDependency, loaded only when a
// benchmark or a parity check asks for it): one GGUF on the CPU for the duration of `use`.
import type { Llama, LlamaModel } from 'node-llama-cpp';

export async function withLlamaCppModel<T>(gguf: string, opts: { threads?: number; vocabOnly?: boolean }, use: (model: LlamaModel, llama: Llama) => Promise<T>): Promise<T> {
  const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
  const llama = await getLlama({ gpu: false, logLevel: LlamaLogLevel.error, maxThreads: opts.threads });
  try {
    const model = await llama.loadModel({ modelPath: gguf, gpuLayers: 0, vocabOnly: opts.vocabOnly });
    try {
      return await use(model, llama);
    } finally {
      await model.dispose();
    }
  } finally {
    await llama.dispose();
  }
}
