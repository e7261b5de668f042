// A progress bar on stderr when it is a terminal; silent otherwise (logs stay clean).
export class Progress {
  private readonly tty = process.stderr.isTTY === true;
  private lastDraw = 0;

  update(label: string, done: number, total: number): void {
    if (!this.tty) return;
    const now = Date.now();
    if (now - this.lastDraw < 100 && done < total) return;
    this.lastDraw = now;
    const width = 30;
    const frac = total > 0 ? Math.min(1, done / total) : 0;
    const filled = Math.round(frac * width);
    const bar = `${'#'.repeat(filled)}${'.'.repeat(width - filled)}`;
    process.stderr.write(`\r[${bar}] ${(frac * 100).toFixed(0).padStart(3)}% ${label.padEnd(24).slice(0, 24)}`);
  }

  done(): void {
    if (this.tty) process.stderr.write('\r\x1b[K');
  }
}
