// Output text of one request, token by token: UTF-8-safe detokenization and OpenAI `stop` strings.
// Text that could be the start of a stop string is held back until it is known not to be, so a
// stream never shows any part of the stop text.
import { StreamDecoder, type Tokenizer } from '../tokenizer.js';

export interface TextStep {
  /** Text that may now be shown. */
  delta: string;
  /** A stop string appeared: the output ends before it. */
  stopped: boolean;
}

export class StopTextAssembler {
  private readonly decoder: StreamDecoder;
  /** Decoded text not shown yet. */
  private pending = '';

  constructor(
    tokenizer: Tokenizer,
    private readonly stop: readonly string[],
  ) {
    this.decoder = new StreamDecoder(tokenizer);
  }

  push(token: number): TextStep {
    this.pending += this.decoder.push([token]);
    return this.release(false);
  }

  /** At the end of generation: whatever was held back, still cut at a stop string. */
  finish(): TextStep {
    this.pending += this.decoder.flush();
    return this.release(true);
  }

  private release(final: boolean): TextStep {
    let cut = -1;
    for (const s of this.stop) {
      const at = this.pending.indexOf(s);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      const delta = this.pending.slice(0, cut);
      this.pending = '';
      return { delta, stopped: true };
    }
    const keep = final ? 0 : this.heldBack();
    const delta = this.pending.slice(0, this.pending.length - keep);
    this.pending = this.pending.slice(this.pending.length - keep);
    return { delta, stopped: false };
  }

  /** Length of the longest end of the pending text that begins some stop string. */
  private heldBack(): number {
    let keep = 0;
    for (const s of this.stop) {
      for (let n = Math.min(s.length - 1, this.pending.length); n > keep; n--) {
        if (this.pending.endsWith(s.slice(0, n))) {
          keep = n;
          break;
        }
      }
    }
    return keep;
  }
}
