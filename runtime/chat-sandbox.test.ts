// Chat templates from a checkpoint rendered under a deadline and a heap limit: a looping or
// allocating template gets a clear error in bounded time, and the sandbox keeps rendering after it.
import { describe, expect, it } from 'vitest';

import { ChatTemplateError, type TemplateSpec } from './chat.js';
import { RenderedTooLongError, SandboxedChatTemplate, TemplateLimitError } from './chat-sandbox.js';

const spec = (source: string | null): TemplateSpec => ({ source, bosToken: '<s>', eosToken: '</s>' });
const CHATML = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
const hi = [{ role: 'user' as const, content: 'Hi' }];

describe('SandboxedChatTemplate', () => {
  it('renders a well-behaved template with bos/eos and the generation prompt', async () => {
    const sandbox = await SandboxedChatTemplate.start(spec(`{{ bos_token }}${CHATML}`));
    try {
      expect(await sandbox.render(hi)).toBe('<s><|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n');
      await expect(sandbox.render(hi, 10)).rejects.toBeInstanceOf(RenderedTooLongError);
    } finally {
      await sandbox.close();
    }
  });

  it('stops a template that loops past the deadline, then renders the next request in a fresh renderer', async () => {
    const looping = `{% if messages[0]['content'] == 'loop' %}{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{% endif %}${CHATML}`;
    const sandbox = await SandboxedChatTemplate.start(spec(looping), { timeoutMs: 300, heapMb: 64 });
    try {
      const t0 = performance.now();
      const err = await sandbox.render([{ role: 'user', content: 'loop' }]).catch((e: Error) => e);
      const ms = performance.now() - t0;
      console.log(`looping template stopped after ${ms.toFixed(0)} ms`);
      expect(err).toBeInstanceOf(TemplateLimitError);
      expect((err as TemplateLimitError).message).toMatch(/did not finish rendering within 300 ms/);
      expect(ms).toBeLessThan(2000);
      expect(await sandbox.render(hi)).toContain('Hi');
      // Renders queued behind a looping one go to the fresh renderer.
      const [looped, queued] = await Promise.allSettled([sandbox.render([{ role: 'user', content: 'loop' }]), sandbox.render(hi)]);
      expect(looped.status === 'rejected' && looped.reason).toBeInstanceOf(TemplateLimitError);
      expect(queued.status === 'fulfilled' && queued.value).toContain('Hi');
    } finally {
      await sandbox.close();
    }
  });

  it('ends a template that allocates past the heap limit with a memory error, and keeps serving', async () => {
    const allocating = `{% if messages[0]['content'] == 'oom' %}{% set xs = range(30000000) %}{{ xs | length }}{% endif %}${CHATML}`;
    const sandbox = await SandboxedChatTemplate.start(spec(allocating), { timeoutMs: 20_000, heapMb: 32 });
    try {
      const err = await sandbox.render([{ role: 'user', content: 'oom' }]).catch((e: Error) => e);
      expect(err).toBeInstanceOf(TemplateLimitError);
      expect((err as TemplateLimitError).limit).toBe('memory');
      expect((err as Error).message).toMatch(/more than the 32 MiB heap/);
      expect(await sandbox.render(hi)).toContain('Hi');
    } finally {
      await sandbox.close();
    }
  });

  it("reports the template's own refusals and a missing template as ChatTemplateError", async () => {
    const refusing = await SandboxedChatTemplate.start(spec("{{ raise_exception('only users may speak') }}"));
    const none = await SandboxedChatTemplate.start(spec(null));
    try {
      await expect(refusing.render(hi)).rejects.toThrow(/refused these messages: .*only users may speak/);
      await expect(none.render(hi)).rejects.toBeInstanceOf(ChatTemplateError);
    } finally {
      await refusing.close();
      await none.close();
    }
  });

  it('fails to start on a template that does not parse', async () => {
    await expect(SandboxedChatTemplate.start(spec('{% for %}'))).rejects.toThrow(/chat template does not parse/);
  });
});
