// Chat messages -> prompt tokens: the model's own chat template (Jinja, carried in the .npu) rendered
// with @huggingface/jinja, or Mistral's [INST] format when the model has none, then tokenized with
// the control tokens it writes out ("<s>", "[INST]") mapped to their ids.
import { Template } from '@huggingface/jinja';

import { MISTRAL_CHAT_TEMPLATE } from './testmodel.js';
import type { Tokenizer } from './tokenizer.js';

export type ChatRole = 'system' | 'user' | 'assistant';

export interface ChatMessage {
  role: ChatRole;
  content: string;
}

/** The template refused the conversation (its raise_exception) or failed rendering it. */
export class ChatTemplateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ChatTemplateError';
  }
}

export class ChatTemplate {
  private readonly template: Template;

  /** Parses the template once; a template that does not parse fails here, at startup. */
  constructor(
    private readonly tokenizer: Tokenizer,
    source: string | null,
  ) {
    try {
      this.template = new Template(source ?? MISTRAL_CHAT_TEMPLATE);
    } catch (e) {
      throw new Error(`the model's chat template does not parse: ${(e as Error).message}`);
    }
  }

  /** The prompt text, ending where the assistant's answer starts. */
  render(messages: readonly ChatMessage[]): string {
    try {
      return this.template.render({
        messages,
        bos_token: this.tokenizer.vocab[this.tokenizer.bosId],
        eos_token: this.tokenizer.vocab[this.tokenizer.eosId],
        add_generation_prompt: true,
      });
    } catch (e) {
      // Templates refuse conversations they do not support with raise_exception('...').
      throw new ChatTemplateError(`the model's chat template refused these messages: ${(e as Error).message}`);
    }
  }

  encode(messages: readonly ChatMessage[]): number[] {
    return this.tokenizer.encodeWithControlTokens(this.render(messages));
  }
}
