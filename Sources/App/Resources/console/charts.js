// Charts and the workflow graph, drawn as SVG by hand: no library, and nothing but presentation attributes and
// classes (the CSP allows no inline style).
import { h } from './ui.js';

const svg = (tag, attrs, ...children) => h(`svg:${tag}`, attrs, ...children);

/** Horizontal bars: `items` is [{ label, value, className }]. */
export function barChart(items, { title, width = 420, rowHeight = 26 } = {}) {
  const max = Math.max(1, ...items.map((item) => item.value));
  const labelWidth = 110;
  const height = items.length * rowHeight + 4;
  return svg('svg', { viewBox: `0 0 ${width} ${height}`, width, height, class: 'chart', role: 'img', 'aria-label': title || 'Bar chart' },
    svg('title', {}, title || ''),
    items.map((item, index) => {
      const y = index * rowHeight + 2;
      const barWidth = Math.round(((width - labelWidth - 50) * item.value) / max);
      return svg('g', {},
        svg('text', { x: 0, y: y + rowHeight / 2 + 4, class: 'chart-label' }, item.label),
        svg('rect', { x: labelWidth, y: y + 4, width: Math.max(barWidth, item.value ? 2 : 0), height: rowHeight - 10, rx: 3, class: `bar ${item.className || ''}` }),
        svg('text', { x: labelWidth + barWidth + 6, y: y + rowHeight / 2 + 4, class: 'chart-value' }, String(item.value)));
    }));
}

/** A line over time: `points` is [{ t (ms), v }]. */
export function lineChart(points, { title, width = 420, height = 120, unit = '' } = {}) {
  const pad = 28;
  const chart = svg('svg', { viewBox: `0 0 ${width} ${height}`, width, height, class: 'chart', role: 'img', 'aria-label': title || 'Line chart' },
    svg('title', {}, title || ''));
  if (points.length < 2) {
    chart.append(svg('text', { x: width / 2, y: height / 2, class: 'chart-label', 'text-anchor': 'middle' }, 'Collecting…'));
    return chart;
  }
  const t0 = points[0].t;
  const t1 = points[points.length - 1].t;
  const max = Math.max(...points.map((point) => point.v), 0.001);
  const x = (t) => pad + ((width - pad - 6) * (t - t0)) / Math.max(t1 - t0, 1);
  const y = (v) => height - 18 - ((height - 30) * v) / max;
  const path = points.map((point, index) => `${index ? 'L' : 'M'}${x(point.t).toFixed(1)},${y(point.v).toFixed(1)}`).join(' ');
  chart.append(
    svg('line', { x1: pad, y1: height - 18, x2: width - 6, y2: height - 18, class: 'axis' }),
    svg('text', { x: 2, y: 14, class: 'chart-label' }, `${formatNumber(max)}${unit}`),
    svg('text', { x: 2, y: height - 20, class: 'chart-label' }, `0`),
    svg('text', { x: pad, y: height - 4, class: 'chart-label' }, new Date(t0).toLocaleTimeString()),
    svg('text', { x: width - 6, y: height - 4, class: 'chart-label', 'text-anchor': 'end' }, new Date(t1).toLocaleTimeString()),
    svg('path', { d: path, class: 'line' }));
  return chart;
}

function formatNumber(value) {
  return value >= 100 ? Math.round(value).toString() : value.toFixed(value >= 10 ? 1 : 2);
}

/**
 * A workflow's steps as a left-to-right DAG: each step sits one column after the deepest step it depends on.
 * `states` maps step id to a status (its colour); links point at the step page when `href(step)` gives one.
 */
export function dagGraph(steps, { states = {}, href } = {}) {
  const byId = new Map(steps.map((step) => [step.id, step]));
  const depth = new Map();
  const depthOf = (id, seen = new Set()) => {
    if (depth.has(id)) return depth.get(id);
    if (seen.has(id)) return 0;
    seen.add(id);
    const step = byId.get(id);
    const d = step && step.dependsOn.length ? 1 + Math.max(...step.dependsOn.map((dep) => depthOf(dep, seen))) : 0;
    depth.set(id, d);
    return d;
  };
  steps.forEach((step) => depthOf(step.id));
  const columns = [];
  steps.forEach((step) => { const d = depth.get(step.id); (columns[d] = columns[d] || []).push(step); });
  const boxW = 150; const boxH = 46; const gapX = 60; const gapY = 18;
  const rows = Math.max(...columns.map((column) => column.length));
  const width = columns.length * (boxW + gapX) - gapX + 20;
  const height = rows * (boxH + gapY) - gapY + 20;
  const position = new Map();
  columns.forEach((column, ci) => column.forEach((step, ri) => {
    const offset = ((rows - column.length) * (boxH + gapY)) / 2;
    position.set(step.id, { x: 10 + ci * (boxW + gapX), y: 10 + offset + ri * (boxH + gapY) });
  }));
  const edges = [];
  steps.forEach((step) => step.dependsOn.forEach((dep) => {
    const from = position.get(dep); const to = position.get(step.id);
    if (!from || !to) return;
    const x1 = from.x + boxW; const y1 = from.y + boxH / 2; const x2 = to.x; const y2 = to.y + boxH / 2;
    const mid = (x1 + x2) / 2;
    edges.push(svg('path', { d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2 - 6},${y2}`, class: 'edge', 'marker-end': 'url(#arrow)' }));
  }));
  const nodes = steps.map((step) => {
    const { x, y } = position.get(step.id);
    const state = states[step.id] || 'pending';
    const group = svg('g', { class: `node s-${state}`, 'data-step': step.id, 'data-state': state },
      svg('rect', { x, y, width: boxW, height: boxH, rx: 8 }),
      svg('text', { x: x + 10, y: y + 19, class: 'node-title' }, step.id.length > 18 ? `${step.id.slice(0, 17)}…` : step.id),
      svg('text', { x: x + 10, y: y + 36, class: 'node-state' }, state));
    const target = href && href(step);
    return target ? svg('a', { href: target, 'aria-label': `Step ${step.id}: ${state}` }, group) : group;
  });
  // Drawn at its natural size (never scaled up); narrower screens scale it down or scroll.
  return svg('svg', { viewBox: `0 0 ${Math.max(width, 200)} ${Math.max(height, 60)}`, width: Math.max(width, 200), height: Math.max(height, 60), class: 'dag', role: 'img', 'aria-label': `Workflow graph of ${steps.length} steps` },
    svg('defs', {}, svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 5, refY: 5, markerWidth: 8, markerHeight: 8, orient: 'auto-start-reverse' },
      svg('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: 'arrowhead' }))),
    edges, nodes);
}
