// A small SVG line chart for benchmark results (no chart dependency): side-by-side panels sharing a
// log2 x axis (concurrency 1, 2, 4 ...), one line with markers per series, and a legend.

export interface Series {
  name: string;
  points: ReadonlyArray<{ x: number; y: number }>;
}

export interface Panel {
  title: string;
  yLabel: string;
  series: readonly Series[];
}

const PANEL_WIDTH = 460;
const PANEL_HEIGHT = 320;
const MARGIN = { left: 64, right: 16, top: 56, bottom: 48 };
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e'];

const escape = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const fmt = (v: number) => (Math.abs(v) >= 1000 ? `${(v / 1000).toFixed(v % 1000 === 0 ? 0 : 1)}k` : String(Number(v.toPrecision(3))));

/** Round tick values covering [0, max]: steps of 1, 2 or 5 times a power of ten. */
export function niceTicks(max: number, count = 5): number[] {
  if (!(max > 0)) return [0, 1];
  const raw = max / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw)!;
  const ticks: number[] = [];
  for (let v = 0; v < max + step; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

export function lineChartSvg(title: string, xLabel: string, panels: readonly Panel[]): string {
  const width = PANEL_WIDTH * panels.length;
  const height = PANEL_HEIGHT + 40;
  const names = [...new Set(panels.flatMap((p) => p.series.map((s) => s.name)))];
  const legend = names
    .map((name, i) => {
      const x = 16 + i * 220;
      return `<line x1="${x}" y1="46" x2="${x + 24}" y2="46" stroke="${COLORS[i % COLORS.length]}" stroke-width="2.5"/><text x="${x + 30}" y="50" font-size="12">${escape(name)}</text>`;
    })
    .join('');
  const body = panels.map((p, i) => panelSvg(p, xLabel, i * PANEL_WIDTH, 40, names)).join('\n');
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="16" font-weight="bold">${escape(title)}</text>`,
    legend,
    body,
    '</svg>',
    '',
  ].join('\n');
}

function panelSvg(p: Panel, xLabel: string, left: number, top: number, names: string[]): string {
  const xs = [...new Set(p.series.flatMap((s) => s.points.map((q) => q.x)))].sort((a, b) => a - b);
  const plotW = PANEL_WIDTH - MARGIN.left - MARGIN.right;
  const plotH = PANEL_HEIGHT - MARGIN.top - MARGIN.bottom;
  const x0 = left + MARGIN.left;
  const y0 = top + MARGIN.top + plotH;
  const lx = (x: number) => Math.log2(x);
  const [minX, maxX] = [lx(xs[0] ?? 1), lx(xs.at(-1) ?? 2)];
  const px = (x: number) => x0 + (maxX === minX ? plotW / 2 : ((lx(x) - minX) / (maxX - minX)) * plotW);
  const yTicks = niceTicks(Math.max(0, ...p.series.flatMap((s) => s.points.map((q) => q.y))));
  const yMax = yTicks.at(-1)!;
  const py = (y: number) => y0 - (y / yMax) * plotH;
  const out: string[] = [`<text x="${x0 + plotW / 2}" y="${top + 36}" text-anchor="middle" font-size="14">${escape(p.title)}</text>`];
  for (const t of yTicks) {
    out.push(`<line x1="${x0}" y1="${py(t)}" x2="${x0 + plotW}" y2="${py(t)}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${x0 - 6}" y="${py(t) + 4}" text-anchor="end" font-size="11">${fmt(t)}</text>`);
  }
  for (const x of xs) out.push(`<text x="${px(x)}" y="${y0 + 16}" text-anchor="middle" font-size="11">${x}</text>`);
  out.push(`<line x1="${x0}" y1="${y0}" x2="${x0 + plotW}" y2="${y0}" stroke="black"/><line x1="${x0}" y1="${y0}" x2="${x0}" y2="${y0 - plotH}" stroke="black"/>`);
  out.push(`<text x="${x0 + plotW / 2}" y="${y0 + 36}" text-anchor="middle" font-size="12">${escape(xLabel)}</text>`);
  out.push(`<text transform="translate(${left + 16} ${y0 - plotH / 2}) rotate(-90)" text-anchor="middle" font-size="12">${escape(p.yLabel)}</text>`);
  for (const s of p.series) {
    const color = COLORS[names.indexOf(s.name) % COLORS.length];
    const pts = s.points.filter((q) => Number.isFinite(q.y));
    out.push(`<polyline fill="none" stroke="${color}" stroke-width="2.5" points="${pts.map((q) => `${px(q.x).toFixed(1)},${py(q.y).toFixed(1)}`).join(' ')}"/>`);
    for (const q of pts) out.push(`<circle cx="${px(q.x).toFixed(1)}" cy="${py(q.y).toFixed(1)}" r="3.5" fill="${color}"><title>${escape(`${s.name}: ${fmt(q.y)} at ${q.x}`)}</title></circle>`);
  }
  return out.join('\n');
}
