import { Engine } from '/work/wt-int8/runtime/engine.ts';
import { Tokenizer } from '/work/wt-int8/runtime/tokenizer.ts';
import { ChatTemplate } from '/work/wt-int8/runtime/chat.ts';
const files = process.argv.slice(2);
for (const f of files) {
  const e = await Engine.load(f, { threads: 2, int8Activations: (process.env.ACT ?? "int16") as never, maxSeqLen: 512, kvCacheTokens: 1024 });
  const tok = new Tokenizer(e.metadata.tokenizer);
  const ct = new ChatTemplate(tok, e.metadata.tokenizer.chatTemplate);
  const ids = ct.encode ? ct.encode([{ role: 'user', content: 'What is the capital of France?' }]) : [];
  const [r] = await e.step([{ sequence: e.createSequence(), tokens: ids, logits: 'last', sample: false }]);
  const l = r.logits!;
  const top = [...l.keys()].sort((a, b) => l[b] - l[a]).slice(0, 5);
  console.log(f, ids.length, top.map((t) => `${JSON.stringify(tok.decode([t]))}:${l[t].toFixed(3)}`).join(' '));
}
