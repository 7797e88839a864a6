// A line chart on a canvas for metric curves that grow while they are drawn: many
// series, step or time on x, linear or log y, smoothing, hover values, drag to zoom
// (double-click to reset), and per-pixel reduction so that a million points draw as
// fast as a few thousand (each pixel column keeps its first, last, lowest and highest
// point, so nothing a line would show is lost). The pure functions are exported for the
// tests in tests/web.

export const PALETTE = [
  "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
  "#17becf", "#7f7f7f", "#bcbd22", "#393b79", "#ad494a", "#637939", "#8c6d31",
];

// Round tick values covering [min, max], about `count` of them.
export function niceTicks(min, max, count = 6) {
  if (!Number.isFinite(min) || !Number.isFinite(max)) return [];
  if (min === max) return [min];
  const raw = (max - min) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  const step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
  const ticks = [];
  for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) {
    ticks.push(Math.abs(v) < step * 1e-9 ? 0 : +v.toPrecision(12));
  }
  return ticks;
}

// Powers of ten covering [min, max] (both > 0), for a log axis.
export function logTicks(min, max) {
  const ticks = [];
  for (let e = Math.floor(Math.log10(min)); e <= Math.ceil(Math.log10(max)); e++) {
    const v = 10 ** e;
    if (v >= min * (1 - 1e-9) && v <= max * (1 + 1e-9)) ticks.push(v);
  }
  return ticks.length ? ticks : [min, max];
}

// Exponential moving average with TensorBoard's debiasing; NaN and infinities pass
// through without disturbing the average. weight 0 returns the values as they are.
export function smooth(ys, weight) {
  if (!weight) return ys;
  const out = new Array(ys.length);
  let last = 0;
  let n = 0;
  for (let i = 0; i < ys.length; i++) {
    const y = ys[i];
    if (!Number.isFinite(y)) {
      out[i] = y;
      continue;
    }
    last = last * weight + (1 - weight) * y;
    n++;
    out[i] = last / (1 - weight ** n);
  }
  return out;
}

// The first index whose x is >= target in sorted xs.
export function lowerBound(xs, target) {
  let lo = 0;
  let hi = xs.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (xs[mid] < target) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// The index of the point nearest to x (sorted xs), or -1 when there are none.
export function nearestIndex(xs, x) {
  if (!xs.length) return -1;
  const i = lowerBound(xs, x);
  if (i === 0) return 0;
  if (i === xs.length) return xs.length - 1;
  return x - xs[i - 1] <= xs[i] - x ? i - 1 : i;
}

// Reduces the points with x in [x0, x1] to at most four per pixel column of `width`
// (first, lowest, highest, last, in x order), plus the neighbours just outside the
// range so lines run to the edges. Returns indices into xs/ys. Non-finite ys are kept
// as first/last only (a gap in the line).
export function reduceToPixels(xs, ys, x0, x1, width) {
  const out = [];
  if (!xs.length || !(x1 >= x0)) return out;
  let start = lowerBound(xs, x0);
  let end = lowerBound(xs, x1 + Number.EPSILON * Math.abs(x1) + 1e-12);
  if (start > 0) start--;
  if (end < xs.length) end++;
  const span = x1 - x0 || 1;
  const cols = Math.max(1, Math.floor(width));
  let col = null;
  let first = -1;
  let last = -1;
  let low = -1;
  let high = -1;
  const flush = () => {
    if (first < 0) return;
    const picked = [first, low, high, last].filter((i) => i >= 0).sort((a, b) => a - b);
    for (let k = 0; k < picked.length; k++) {
      if (k === 0 || picked[k] !== picked[k - 1]) out.push(picked[k]);
    }
  };
  for (let i = start; i < end; i++) {
    const c = Math.floor(((xs[i] - x0) / span) * cols);
    if (c !== col) {
      flush();
      col = c;
      first = i;
      low = -1;
      high = -1;
    }
    last = i;
    const y = ys[i];
    if (Number.isFinite(y)) {
      if (low < 0 || y < ys[low]) low = i;
      if (high < 0 || y > ys[high]) high = i;
    }
  }
  flush();
  return out;
}

// Short labels for axis values.
export function formatValue(v) {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
  return +v.toPrecision(6) + "";
}

function formatTime(ms, span) {
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, "0");
  const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return span > 36e5 * 24 ? `${d.getMonth() + 1}/${d.getDate()} ${hms}` : hms;
}

// One series: points sorted by x (step or time), appended as they arrive.
export class Series {
  constructor(id, label, color) {
    this.id = id;
    this.label = label;
    this.color = color;
    this.hidden = false;
    this.steps = [];
    this.times = [];
    this.values = [];
  }

  // Adds points {step, timestamp, value} keeping step order (training loops log in
  // order, so this is an append).
  add(points) {
    for (const p of points) {
      const n = this.steps.length;
      if (n === 0 || p.step > this.steps[n - 1] ||
          (p.step === this.steps[n - 1] && p.timestamp >= this.times[n - 1])) {
        this.steps.push(p.step);
        this.times.push(p.timestamp);
        this.values.push(p.value);
      } else {
        let i = lowerBound(this.steps, p.step);
        while (i < n && this.steps[i] === p.step && this.times[i] <= p.timestamp) i++;
        this.steps.splice(i, 0, p.step);
        this.times.splice(i, 0, p.timestamp);
        this.values.splice(i, 0, p.value);
      }
    }
  }

  get length() {
    return this.steps.length;
  }

  // x values in x order for the axis, and the values in the same order.
  axis(kind) {
    if (kind !== "time") return { xs: this.steps, ys: this.values };
    if (this._timeCache && this._timeCache.n === this.length) return this._timeCache;
    const order = this.times.map((_, i) => i).sort((a, b) => this.times[a] - this.times[b]);
    this._timeCache = {
      n: this.length,
      xs: order.map((i) => this.times[i]),
      ys: order.map((i) => this.values[i]),
    };
    return this._timeCache;
  }
}

const MARGIN = { left: 64, right: 16, top: 12, bottom: 30 };

export class Chart {
  // `host` is an element the chart fills; `onZoom(range|null)` is told when the user
  // zooms; `onPaint()` after every frame drawn.
  constructor(host, { onZoom = () => {}, onPaint = () => {} } = {}) {
    this.host = host;
    this.onZoom = onZoom;
    this.onPaint = onPaint;
    this.series = new Map();
    this.xKind = "step";
    this.logY = false;
    this.smoothing = 0;
    this.zoom = null; // [x0, x1] or null: everything
    this.hoverX = null;
    this.drag = null;
    host.classList.add("chart");
    this.canvas = document.createElement("canvas");
    this.canvas.setAttribute("role", "img");
    this.canvas.tabIndex = 0;
    this.tip = document.createElement("div");
    this.tip.className = "chart-tip";
    this.tip.hidden = true;
    this.legend = document.createElement("ul");
    this.legend.className = "chart-legend";
    host.append(this.canvas, this.tip, this.legend);
    this.pending = false;
    this.resizeObserver = new ResizeObserver(() => this.draw());
    this.resizeObserver.observe(host);
    this.canvas.addEventListener("mousemove", (e) => this.mouseMove(e));
    this.canvas.addEventListener("mouseleave", () => {
      this.hoverX = null;
      this.tip.hidden = true;
      this.draw();
    });
    this.canvas.addEventListener("mousedown", (e) => {
      const x = this.offsetX(e);
      if (x >= MARGIN.left) this.drag = { from: x, to: x };
    });
    window.addEventListener("mouseup", () => this.mouseUp());
    this.canvas.addEventListener("dblclick", () => this.setZoom(null, true));
    this.canvas.addEventListener("keydown", (e) => {
      if (e.key === "Escape" || e.key === "0") this.setZoom(null, true);
    });
  }

  destroy() {
    this.resizeObserver.disconnect();
    this.host.replaceChildren();
  }

  upsert(id, label, color) {
    let s = this.series.get(id);
    if (!s) {
      s = new Series(id, label, color || PALETTE[this.series.size % PALETTE.length]);
      this.series.set(id, s);
      this.renderLegend();
    }
    return s;
  }

  remove(id) {
    this.series.delete(id);
    this.renderLegend();
    this.schedule();
  }

  setZoom(range, byUser = false) {
    this.zoom = range;
    if (byUser) this.onZoom(range);
    this.schedule();
  }

  set(options) {
    Object.assign(this, options);
    this.schedule();
  }

  // Draws at the next animation frame (many points arriving at once draw once).
  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  renderLegend() {
    this.legend.replaceChildren(...[...this.series.values()].map((s) => {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.setAttribute("aria-pressed", String(!s.hidden));
      button.innerHTML = `<span class="swatch" style="background:${s.color}"></span>`;
      button.append(document.createTextNode(s.label));
      button.title = "Show or hide this curve";
      button.addEventListener("click", () => {
        s.hidden = !s.hidden;
        button.setAttribute("aria-pressed", String(!s.hidden));
        this.schedule();
      });
      li.append(button);
      return li;
    }));
  }

  offsetX(e) {
    return e.clientX - this.canvas.getBoundingClientRect().left;
  }

  mouseMove(e) {
    const x = this.offsetX(e);
    if (this.drag) this.drag.to = x;
    this.hoverX = x;
    this.draw();
  }

  mouseUp() {
    if (!this.drag) return;
    const { from, to } = this.drag;
    this.drag = null;
    if (Math.abs(to - from) > 4 && this.frame) {
      const a = this.frame.invX(Math.min(from, to));
      const b = this.frame.invX(Math.max(from, to));
      this.setZoom([a, b], true);
    } else {
      this.draw();
    }
  }

  // The data extent along x and y of the visible series within [x0, x1].
  extent() {
    let x0 = Infinity;
    let x1 = -Infinity;
    for (const s of this.series.values()) {
      if (s.hidden || !s.length) continue;
      const { xs } = s.axis(this.xKind);
      x0 = Math.min(x0, xs[0]);
      x1 = Math.max(x1, xs[xs.length - 1]);
    }
    if (this.zoom) [x0, x1] = this.zoom;
    let y0 = Infinity;
    let y1 = -Infinity;
    for (const s of this.series.values()) {
      if (s.hidden || !s.length) continue;
      const { xs, ys } = s.axis(this.xKind);
      const vs = smooth(ys, this.smoothing);
      const a = lowerBound(xs, x0);
      const b = lowerBound(xs, x1 + 1e-9 * Math.abs(x1) + 1e-12);
      for (let i = a; i < b; i++) {
        const y = vs[i];
        if (!Number.isFinite(y) || (this.logY && y <= 0)) continue;
        if (y < y0) y0 = y;
        if (y > y1) y1 = y;
      }
    }
    return { x0, x1, y0, y1 };
  }

  draw() {
    const started = performance.now();
    this.paint();
    this.lastDrawMs = performance.now() - started;
    if (globalThis.arborTest) globalThis.arborTest.lastDrawMs = this.lastDrawMs;
  }

  paint() {
    const width = this.host.clientWidth || 600;
    const height = Math.max(160, this.host.clientHeight - this.legend.offsetHeight || 320);
    const ratio = window.devicePixelRatio || 1;
    if (this.canvas.width !== Math.round(width * ratio) ||
        this.canvas.height !== Math.round(height * ratio)) {
      this.canvas.width = Math.round(width * ratio);
      this.canvas.height = Math.round(height * ratio);
      this.canvas.style.width = `${width}px`;
      this.canvas.style.height = `${height}px`;
    }
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.font = "12px system-ui, sans-serif";
    const plotW = width - MARGIN.left - MARGIN.right;
    const plotH = height - MARGIN.top - MARGIN.bottom;
    let { x0, x1, y0, y1 } = this.extent();
    if (!Number.isFinite(x0) || !Number.isFinite(y0)) {
      ctx.fillStyle = "#666";
      ctx.fillText(this.series.size ? "no points yet" : "pick runs and metrics to chart",
        MARGIN.left + 8, MARGIN.top + 20);
      this.frame = null;
      this.canvas.setAttribute("aria-label", "empty chart");
      this.onPaint();
      return;
    }
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    if (y0 === y1) {
      const d = Math.abs(y0) * 0.1 || 1;
      y0 = this.logY ? y0 / 2 : y0 - d;
      y1 = this.logY ? y1 * 2 : y1 + d;
    } else if (!this.logY) {
      const pad = (y1 - y0) * 0.05;
      y0 -= pad;
      y1 += pad;
    }
    const ly = (v) => (this.logY ? Math.log10(v) : v);
    const [ly0, ly1] = [ly(y0), ly(y1)];
    const sx = (x) => MARGIN.left + ((x - x0) / (x1 - x0)) * plotW;
    const sy = (y) => MARGIN.top + plotH - ((ly(y) - ly0) / (ly1 - ly0)) * plotH;
    this.frame = { invX: (px) => x0 + ((px - MARGIN.left) / plotW) * (x1 - x0), sx, sy };

    // Grid and axes.
    ctx.strokeStyle = "#e3e3e3";
    ctx.fillStyle = "#555";
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    const yTicks = this.logY ? logTicks(y0, y1) : niceTicks(y0, y1, Math.max(2, plotH / 50));
    for (const t of yTicks) {
      const py = Math.round(sy(t)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(MARGIN.left, py);
      ctx.lineTo(MARGIN.left + plotW, py);
      ctx.stroke();
      ctx.fillText(formatValue(t), MARGIN.left - 6, py);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (const t of niceTicks(x0, x1, Math.max(2, plotW / 110))) {
      const px = Math.round(sx(t)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(px, MARGIN.top);
      ctx.lineTo(px, MARGIN.top + plotH);
      ctx.stroke();
      ctx.fillText(this.xKind === "time" ? formatTime(t, x1 - x0) : formatValue(t),
        px, MARGIN.top + plotH + 6);
    }
    ctx.strokeStyle = "#999";
    ctx.strokeRect(MARGIN.left + 0.5, MARGIN.top + 0.5, plotW, plotH);

    // Curves, reduced to what the pixels can show.
    ctx.save();
    ctx.beginPath();
    ctx.rect(MARGIN.left, MARGIN.top, plotW, plotH);
    ctx.clip();
    let drawn = 0;
    for (const s of this.series.values()) {
      if (s.hidden || !s.length) continue;
      const { xs, ys } = s.axis(this.xKind);
      const vs = smooth(ys, this.smoothing);
      const idx = reduceToPixels(xs, vs, x0, x1, plotW);
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      let pen = false;
      for (const i of idx) {
        const y = vs[i];
        if (!Number.isFinite(y) || (this.logY && y <= 0)) {
          pen = false;
          continue;
        }
        const px = sx(xs[i]);
        const py = sy(y);
        if (pen) ctx.lineTo(px, py);
        else ctx.moveTo(px, py);
        pen = true;
      }
      ctx.stroke();
      if (idx.length === 1) {
        ctx.fillStyle = s.color;
        ctx.fillRect(sx(xs[idx[0]]) - 2, sy(vs[idx[0]]) - 2, 4, 4);
      }
      drawn += idx.length;
    }
    ctx.restore();
    this.canvas.setAttribute("aria-label",
      `chart of ${this.series.size} curves, x ${formatValue(x0)} to ${formatValue(x1)}`);
    this.canvas.dataset.drawnPoints = String(drawn);

    // Zoom selection and hover.
    if (this.drag) {
      ctx.fillStyle = "rgba(31,119,180,0.15)";
      const a = Math.min(this.drag.from, this.drag.to);
      ctx.fillRect(a, MARGIN.top, Math.abs(this.drag.to - this.drag.from), plotH);
    }
    this.drawHover(ctx, plotH);
    this.onPaint();
  }

  drawHover(ctx, plotH) {
    if (this.hoverX === null || this.hoverX < MARGIN.left || !this.frame) {
      this.tip.hidden = true;
      return;
    }
    const x = this.frame.invX(this.hoverX);
    const rows = [];
    let at = null;
    for (const s of this.series.values()) {
      if (s.hidden || !s.length) continue;
      const { xs, ys } = s.axis(this.xKind);
      const i = nearestIndex(xs, x);
      const vs = this.smoothing ? smooth(ys, this.smoothing) : ys;
      at = at === null || Math.abs(xs[i] - x) < Math.abs(at - x) ? xs[i] : at;
      rows.push(`<tr><td><span class="swatch" style="background:${s.color}"></span>${escapeHtml(s.label)}</td>` +
        `<td>${formatValue(vs[i])}</td><td class="muted">${this.xKind === "time" ? formatTime(xs[i], 0) : "step " + xs[i]}</td></tr>`);
      if (Number.isFinite(vs[i]) && !(this.logY && vs[i] <= 0)) {
        ctx.fillStyle = s.color;
        ctx.beginPath();
        ctx.arc(this.frame.sx(xs[i]), this.frame.sy(vs[i]), 3, 0, 2 * Math.PI);
        ctx.fill();
      }
    }
    if (at !== null) {
      const px = Math.round(this.frame.sx(at)) + 0.5;
      ctx.strokeStyle = "rgba(0,0,0,0.3)";
      ctx.beginPath();
      ctx.moveTo(px, MARGIN.top);
      ctx.lineTo(px, MARGIN.top + plotH);
      ctx.stroke();
    }
    this.tip.innerHTML = `<table>${rows.slice(0, 20).join("")}</table>` +
      (rows.length > 20 ? `<div class="muted">and ${rows.length - 20} more</div>` : "");
    this.tip.hidden = rows.length === 0;
    const left = Math.min(this.hoverX + 12, this.host.clientWidth - this.tip.offsetWidth - 4);
    this.tip.style.left = `${Math.max(0, left)}px`;
    this.tip.style.top = `${MARGIN.top}px`;
  }
}

export function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) =>
    ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
