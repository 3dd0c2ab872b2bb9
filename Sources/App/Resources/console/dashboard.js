// The dashboard: request rate and latency (this instance), executions by status, the queue, webhook failures and
// the latest failed executions. It reads GET /api/v1/admin/stats every few seconds, and at once when an
// execution event arrives on the stream.
import { api, follow } from './api.js';
import { h, clear, problemView, pageHeader, section, wideSection, link, badge, ago, shortId } from './ui.js';
import { barChart, lineChart } from './charts.js';

const POLL_MS = 5000;
const STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled', 'rolled_back'];

export function dashboardPage(main, params, ctx) {
  const updated = h('span', { class: 'muted', id: 'dashboard-updated', 'aria-live': 'polite' });
  main.append(pageHeader('Dashboard', updated));
  const canStats = ctx.can('analytics:read');
  const canExecutions = ctx.can('executions:read');
  const statsArea = h('div', { class: 'grid' });
  const failedArea = h('div');
  if (canStats) main.append(statsArea);
  else main.append(section('Welcome', h('p', {}, `Signed in as ${ctx.me.user.email}. Pick a page from the menu.`)));
  if (canExecutions) main.append(section('Recent failed executions', failedArea));

  const history = [];
  let stopped = false;
  let timer = null;
  let pending = null;

  async function refresh() {
    if (stopped) return;
    clearTimeout(timer);
    try {
      const [stats, failed] = await Promise.all([
        canStats ? api.get('/admin/stats') : null,
        canExecutions ? api.get('/executions?status=failed&limit=5') : null,
      ]);
      if (stopped) return;
      if (stats) {
        history.push({ t: Date.now(), rate: stats.requests.last1m.requestsPerSecond, p95: stats.requests.last1m.p95Ms || 0 });
        if (history.length > 120) history.shift();
        renderStats(statsArea, stats, history);
      }
      if (failed) renderFailed(failedArea, failed.items);
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      if (!stopped) clear(canStats ? statsArea : failedArea, problemView(error));
    }
    if (!stopped) timer = setTimeout(refresh, POLL_MS);
  }
  refresh();
  const close = canExecutions ? follow({ types: 'execution.*' }, () => {
    if (pending) return;
    pending = setTimeout(() => { pending = null; refresh(); }, 700);
  }) : null;
  return () => { stopped = true; clearTimeout(timer); clearTimeout(pending); if (close) close(); };
}

function ms(value) {
  return value === null || value === undefined ? '—' : `${value < 10 ? value.toFixed(2) : Math.round(value)} ms`;
}

function renderStats(area, stats, history) {
  const windows = [['last1m', '1 min'], ['last5m', '5 min'], ['last60m', '60 min']];
  const requests = h('table', { id: 'request-figures' },
    h('caption', { class: 'sr-only' }, 'Requests served by this instance'),
    h('thead', {}, h('tr', {}, ['Window', 'Requests/s', 'p50', 'p95', 'p99', '5xx'].map((label) => h('th', { scope: 'col' }, label)))),
    h('tbody', {}, windows.map(([key, label]) => {
      const window = stats.requests[key];
      return h('tr', {},
        h('th', { scope: 'row' }, label),
        h('td', { 'data-label': 'Requests/s' }, String(window.requestsPerSecond)),
        h('td', { 'data-label': 'p50' }, ms(window.p50Ms)),
        h('td', { 'data-label': 'p95' }, ms(window.p95Ms)),
        h('td', { 'data-label': 'p99' }, ms(window.p99Ms)),
        h('td', { 'data-label': '5xx' }, String(window.serverErrors)));
    })));
  const queued = stats.queue.depth.filter((row) => row.status === 'queued').reduce((sum, row) => sum + row.count, 0);
  const running = stats.queue.depth.filter((row) => row.status === 'running').reduce((sum, row) => sum + row.count, 0);
  clear(area,
    wideSection('Requests (this instance)', requests, h('div', { class: 'charts' },
      h('figure', {}, lineChart(history.map((point) => ({ t: point.t, v: point.rate })), { title: 'Requests per second over the last minute', unit: '/s' }),
        h('figcaption', { class: 'muted' }, 'Requests per second (1-minute window), while this page is open')),
      h('figure', {}, lineChart(history.map((point) => ({ t: point.t, v: point.p95 })), { title: 'p95 latency over the last minute', unit: ' ms' }),
        h('figcaption', { class: 'muted' }, 'p95 latency (1-minute window)')))),
    section('Executions by status',
      barChart(STATUSES.map((status) => ({ label: status, value: stats.executions[status] || 0, className: `s-${status}` })), { title: 'Executions by status' })),
    section('Queue', h('dl', { class: 'facts', id: 'queue-figures' },
      h('dt', {}, 'Queued jobs'), h('dd', {}, String(queued)),
      h('dt', {}, 'Running jobs'), h('dd', {}, String(running)),
      h('dt', {}, 'Oldest queued job waiting'), h('dd', {}, `${stats.queue.lagSeconds.toFixed(1)} s`),
      h('dt', {}, 'Open event streams'), h('dd', {}, String(stats.streams)))),
    section('Webhooks', h('dl', { class: 'facts', id: 'webhook-figures' },
      h('dt', {}, 'Deliveries failed (24 h)'), h('dd', {}, String(stats.webhooks.failedLast24h)),
      h('dt', {}, 'Deliveries retrying'), h('dd', {}, String(stats.webhooks.retrying)),
      h('dt', {}, 'Failing endpoints'), h('dd', {}, String(stats.webhooks.failing)),
      h('dt', {}, 'Disabled subscriptions'), h('dd', {}, String(stats.webhooks.disabled)))));
}

function renderFailed(area, items) {
  if (!items.length) { clear(area, h('p', { class: 'muted' }, 'No failed executions.')); return; }
  clear(area, h('ul', { class: 'plain' }, items.map((execution) => h('li', {},
    badge(execution.status), ' ', link(`/console/executions/${execution.id}`, shortId(execution.id)), ' ',
    h('span', { class: 'muted' }, ago(execution.finishedAt || execution.queuedAt)), ' ', execution.error || ''))));
}
