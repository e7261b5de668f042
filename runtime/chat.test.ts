// Chat prompts: the model's own template rendered with its special tokens, tokenized as llama.cpp
// tokenizes the rendered text (special tokens parsed as single ids, BOS not doubled).
import { describe, expect, it } from 'vitest';

import { ChatTemplate, ChatTemplateError } from './chat.js';
import { MISTRAL_CHAT_TEMPLATE } from './testmodel.js';
import { Tokenizer } from './tokenizer.js';
import { mistralV3Tokenizer } from './tokenizer/mistral-v3.js';

const mistral = mistralV3Tokenizer();
const withTemplate = (template: string | null) => new Tokenizer({ ...mistral.spec, chatTemplate: template });
const pieces = (tok: Tokenizer, ids: number[]) => ids.map((i) => tok.vocab[i]);

describe('ChatTemplate', () => {
  it("renders Mistral's [INST] template with bos/eos and parses its control tokens as ids", () => {
    const tok = withTemplate(MISTRAL_CHAT_TEMPLATE);
    const chat = new ChatTemplate(tok);
    const messages = [
      { role: 'user', content: 'Hi' },
      { role: 'assistant', content: 'Hello!' },
      { role: 'user', content: 'More' },
    ] as const;
    expect(chat.render(messages)).toBe('<s>[INST] Hi [/INST]Hello!</s>[INST] More [/INST]');
    // llama.cpp prefixes a space to the text after each special token: " Hi " is "▁▁Hi▁". The
    // template writes <s> itself, so BOS is not added a second time.
    expect(pieces(tok, chat.encode(messages))).toEqual(['<s>', '[INST]', '▁▁', 'Hi', '▁', '[/INST]', '▁Hello', '!', '</s>', '[INST]', '▁▁', 'More', '▁', '[/INST]']);
  });

  it('adds BOS when the model asks for it and the template does not write it', () => {
    const tok = withTemplate("{% for m in messages %}{{ '[INST]' + m['content'] + '[/INST]' }}{% endfor %}");
    expect(pieces(tok, new ChatTemplate(tok).encode([{ role: 'user', content: 'x' }]))).toEqual(['<s>', '[INST]', '▁x', '[/INST]']);
  });

  it("uses the model's own template and reports its refusals as ChatTemplateError", () => {
    const tok = withTemplate("{% if messages[0]['role'] != 'user' %}{{ raise_exception('start with a user message') }}{% endif %}<s>{{ messages[0]['content'] }}");
    const chat = new ChatTemplate(tok);
    expect(chat.encode([{ role: 'user', content: 'x' }])).toEqual([tok.bosId, ...tok.encode('x', { addSpecial: false })]);
    expect(() => chat.render([{ role: 'assistant', content: 'x' }])).toThrow(ChatTemplateError);
    expect(() => chat.render([{ role: 'assistant', content: 'x' }])).toThrow(/start with a user message/);
  });

  it('refuses chat for a model without a template, saying to use completions', () => {
    const chat = new ChatTemplate(withTemplate(null));
    expect(() => chat.render([{ role: 'user', content: 'x' }])).toThrow(ChatTemplateError);
    expect(() => chat.render([{ role: 'user', content: 'x' }])).toThrow(/no chat template .* complete a prompt instead \(\/v1\/completions, npuserve generate --prompt\)/);
  });

  it('fails at construction on a template that does not parse', () => {
    expect(() => new ChatTemplate(withTemplate('{% for %}'))).toThrow(/chat template does not parse/);
  });
});
