// Chat prompts: the model's template or Mistral's [INST] format, tokenized as Mistral's own
// tokenizer does (control tokens as single ids, no stray separator spaces).
import { describe, expect, it } from 'vitest';

import { ChatTemplate, ChatTemplateError } from './chat.js';
import { Tokenizer } from './tokenizer.js';

const tok = Tokenizer.mistralV3();
const piece = (ids: number[]) => ids.map((i) => tok.vocab[i]);

describe('ChatTemplate', () => {
  it("renders Mistral's [INST] format when the model has no template, with control tokens as ids", () => {
    const chat = new ChatTemplate(tok, null);
    const messages = [
      { role: 'user', content: 'Hi' },
      { role: 'assistant', content: 'Hello!' },
      { role: 'user', content: 'More' },
    ] as const;
    expect(chat.render(messages)).toBe('<s>[INST] Hi [/INST]Hello!</s>[INST] More [/INST]');
    expect(piece(chat.encode(messages))).toEqual(['<s>', '[INST]', '▁Hi', '[/INST]', '▁Hello', '!', '</s>', '[INST]', '▁More', '[/INST]']);
  });

  it("uses the model's own template and reports its refusals as ChatTemplateError", () => {
    const chat = new ChatTemplate(tok, "{% if messages[0]['role'] != 'user' %}{{ raise_exception('start with a user message') }}{% endif %}<s>{{ messages[0]['content'] }}");
    expect(chat.encode([{ role: 'user', content: 'x' }])).toEqual([tok.bosId, ...tok.encode('x', { bos: false })]);
    expect(() => chat.render([{ role: 'assistant', content: 'x' }])).toThrow(ChatTemplateError);
    expect(() => chat.render([{ role: 'assistant', content: 'x' }])).toThrow(/start with a user message/);
  });

  it('fails at construction on a template that does not parse', () => {
    expect(() => new ChatTemplate(tok, '{% for %}')).toThrow(/chat template does not parse/);
  });
});
