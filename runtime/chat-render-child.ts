// The child process behind SandboxedChatTemplate: parses the model's chat template once, then renders
// the conversations it is sent, one at a time. The parent caps its V8 heap (--max-old-space-size) and
// kills it when a render passes its deadline, so a hostile template costs this process, never the
// server: a V8 heap out-of-memory aborts a whole process, which is why this is not a worker thread.
import { ChatTemplateError, TemplateRenderer, type TemplateSpec } from './chat.js';
import type { RenderReply, RenderRequest } from './chat-sandbox.js';

let renderer: TemplateRenderer | undefined;

const reply = (r: RenderReply) => process.send!(r);

process.on('message', (msg: { spec: TemplateSpec } | RenderRequest) => {
  if ('spec' in msg) {
    try {
      renderer = new TemplateRenderer(msg.spec);
      reply({ id: -1 });
    } catch (e) {
      reply({ id: -1, error: (e as Error).message, refused: false });
    }
    return;
  }
  try {
    const text = renderer!.render(msg.messages);
    // A prompt too long to fit is refused by its length: the text itself need not cross processes.
    reply(text.length > msg.maxLength ? { id: msg.id, tooLong: text.length } : { id: msg.id, text });
  } catch (e) {
    reply({ id: msg.id, error: (e as Error).message, refused: e instanceof ChatTemplateError });
  }
});
// The parent went away: nothing left to render for.
process.on('disconnect', () => process.exit(0));
