// Chat messages -> prompt tokens: the model's own chat template (Jinja, carried in the .npu) rendered
// with @huggingface/jinja (bos_token, eos_token, add_generation_prompt), then tokenized with the
// special tokens it writes out ("<|im_start|>", "[INST]") parsed as their ids. A model without a
// template cannot chat: its chat requests are refused, completions still work. A template comes from
// a checkpoint and may loop or allocate without bound: the server renders it in a worker with a
// deadline and a heap limit (chat-sandbox.ts); this file renders it in the calling thread.
import { Template } from '@huggingface/jinja';

import type { Tokenizer } from './tokenizer.js';

export type ChatRole = 'system' | 'user' | 'assistant';

export interface ChatMessage {
  role: ChatRole;
  content: string;
}

/** What rendering needs: the template's source and the special tokens it may write. */
export interface TemplateSpec {
  source: string | null;
  bosToken: string;
  eosToken: string;
}

export function templateSpec(tokenizer: Tokenizer): TemplateSpec {
  const special = (id: number | null) => (id === null ? '' : (tokenizer.vocab[id] ?? ''));
  return { source: tokenizer.spec.chatTemplate, bosToken: special(tokenizer.bosId), eosToken: special(tokenizer.eosId) };
}

/** The template refused the conversation (its raise_exception), failed rendering it, or there is none. */
export class ChatTemplateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ChatTemplateError';
  }
}

export const NO_TEMPLATE_MESSAGE =
  "this model has no chat template (its tokenizer_config.json or GGUF carries none), so it cannot take chat messages; complete a prompt instead (/v1/completions, npuserve generate --prompt)";

/** A parsed template and the special tokens it renders with. */
export class TemplateRenderer {
  private readonly template: Template | null;

  /** Parses the template once; a template that does not parse fails here, at startup. */
  constructor(private readonly spec: TemplateSpec) {
    try {
      this.template = spec.source === null ? null : new Template(spec.source);
    } catch (e) {
      throw new Error(`the model's chat template does not parse: ${(e as Error).message}`);
    }
  }

  get hasTemplate(): boolean {
    return this.template !== null;
  }

  /** The prompt text, ending where the assistant's answer starts. */
  render(messages: readonly ChatMessage[]): string {
    if (!this.template) throw new ChatTemplateError(NO_TEMPLATE_MESSAGE);
    try {
      return this.template.render({ messages, bos_token: this.spec.bosToken, eos_token: this.spec.eosToken, add_generation_prompt: true });
    } catch (e) {
      // Templates refuse conversations they do not support with raise_exception('...').
      throw new ChatTemplateError(`the model's chat template refused these messages: ${(e as Error).message}`);
    }
  }
}

export class ChatTemplate {
  private readonly renderer: TemplateRenderer;

  constructor(private readonly tokenizer: Tokenizer) {
    this.renderer = new TemplateRenderer(templateSpec(tokenizer));
  }

  render(messages: readonly ChatMessage[]): string {
    return this.renderer.render(messages);
  }

  /** The prompt's tokens (BOS added if the model asks and the template did not write it). */
  encode(messages: readonly ChatMessage[]): number[] {
    return this.tokenizer.encode(this.render(messages));
  }
}
