// Chat messages -> prompt tokens: the model's own chat template (Jinja, carried in the .npu) rendered
// with @huggingface/jinja (bos_token, eos_token, add_generation_prompt), then tokenized with the
// special tokens it writes out ("<|im_start|>", "[INST]") parsed as their ids. A model without a
// template cannot chat: its chat requests are refused, completions still work.
import { Template } from '@huggingface/jinja';

import type { Tokenizer } from './tokenizer.js';

export type ChatRole = 'system' | 'user' | 'assistant';

export interface ChatMessage {
  role: ChatRole;
  content: string;
}

/** The template refused the conversation (its raise_exception), failed rendering it, or there is none. */
export class ChatTemplateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ChatTemplateError';
  }
}

export class ChatTemplate {
  private readonly template: Template | null;

  /** Parses the model's template once; a template that does not parse fails here, at startup. */
  constructor(private readonly tokenizer: Tokenizer) {
    const source = tokenizer.spec.chatTemplate;
    try {
      this.template = source === null ? null : new Template(source);
    } catch (e) {
      throw new Error(`the model's chat template does not parse: ${(e as Error).message}`);
    }
  }

  /** The prompt text, ending where the assistant's answer starts. */
  render(messages: readonly ChatMessage[]): string {
    if (!this.template) throw new ChatTemplateError("this model has no chat template (its tokenizer_config.json or GGUF carries none), so it cannot take chat messages; complete a prompt instead (/v1/completions, npuserve generate --prompt)");
    const special = (id: number | null) => (id === null ? '' : (this.tokenizer.vocab[id] ?? ''));
    try {
      return this.template.render({
        messages,
        bos_token: special(this.tokenizer.bosId),
        eos_token: special(this.tokenizer.eosId),
        add_generation_prompt: true,
      });
    } catch (e) {
      // Templates refuse conversations they do not support with raise_exception('...').
      throw new ChatTemplateError(`the model's chat template refused these messages: ${(e as Error).message}`);
    }
  }

  /** The prompt's tokens (BOS added if the model asks and the template did not write it). */
  encode(messages: readonly ChatMessage[]): number[] {
    return this.tokenizer.encode(this.render(messages));
  }
}
