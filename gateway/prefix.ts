// The key a request is routed by: the first N characters of its prompt as the server would see it
// before the chat template, so requests sharing a system prompt or a conversation's first turns hash
// alike. Chat: each message's role and text content in order; completions: the prompt (a string, the
// first string of a list, or token ids written out).

/** KubeAI's default prefix length. */
export const DEFAULT_PREFIX_CHARS = 100;

/** A message's text: a string content, or its text parts joined. */
export function contentText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content.map((part) => (part && typeof part === 'object' && typeof (part as { text?: unknown }).text === 'string' ? (part as { text: string }).text : '')).join('');
}

function promptText(prompt: unknown): string {
  if (typeof prompt === 'string') return prompt;
  if (Array.isArray(prompt)) {
    const first = prompt[0];
    if (typeof first === 'string') return first;
    if (Array.isArray(first)) return first.join(',');
    return prompt.join(',');
  }
  return '';
}

/** The routing key of a parsed request body: at most `chars` characters (a body without a prompt gives ''). */
export function prefixKey(body: unknown, chars = DEFAULT_PREFIX_CHARS): string {
  if (!body || typeof body !== 'object') return '';
  const b = body as { messages?: unknown; prompt?: unknown };
  let text = '';
  if (Array.isArray(b.messages)) {
    for (const m of b.messages) {
      if (!m || typeof m !== 'object') continue;
      const msg = m as { role?: unknown; content?: unknown };
      text += `${typeof msg.role === 'string' ? msg.role : ''}\n${contentText(msg.content)}\n`;
      if (text.length >= chars) break;
    }
  } else {
    text = promptText(b.prompt);
  }
  return text.slice(0, chars);
}
