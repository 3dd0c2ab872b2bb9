// Executions: a filterable list (status, skill, origin, dates) and one execution, live from the event stream:
// progress, history, input and output, cancel and rollback.
import { api, follow, query } from './api.js';
import { h, clear, field, select, problemView, pageHeader, section, pagedTable, link, badge, jsonBlock, fmtTime,
  run, ago, shortId, localToISO } from './ui.js';

const STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled', 'rolled_back'];
const FINISHED = new Set(['succeeded', 'failed', 'cancelled', 'rolled_back']);

export function executionsPage(main) {
  const params = new URLSearchParams(location.search);
  const status = select([['', 'Any'], ...STATUSES], params.get('status') || '', { name: 'status' });
  const skill = select([['', 'Any']], '', { name: 'skillId' });
  const origin = select([['', 'Any'], 'api', 'mcp', 'schedule', 'workflow'], params.get('origin') || '', { name: 'origin' });
  const from = h('input', { type: 'datetime-local', name: 'from' });
  const to = h('input', { type: 'datetime-local', name: 'to' });
  const results = h('div');
  const skillNames = new Map();
  const form = h('form', { class: 'filters' }, field('Status', status), field('Skill', skill), field('Origin', origin),
    field('Queued from', from), field('Queued before', to), h('button', { type: 'submit' }, 'Filter'));
  const load = () => {
    const filters = { status: status.value, skillId: skill.value, origin: origin.value, from: localToISO(from.value), to: localToISO(to.value) };
    history.replaceState(null, '', `/console/executions${query(filters)}`);
    clear(results, pagedTable({
      caption: 'Executions, newest first',
      columns: [
        { label: 'Execution', render: (execution) => link(`/console/executions/${execution.id}`, shortId(execution.id)) },
        { label: 'Skill', render: (execution) => skillNames.get(execution.skillId) || shortId(execution.skillId) },
        { label: 'Status', render: (execution) => badge(execution.status) },
        { label: 'Progress', render: (execution) => `${execution.progress}%` },
        { label: 'Origin', render: (execution) => execution.clientName ? `${execution.origin} (${execution.clientName})` : execution.origin },
        { label: 'Queued', render: (execution) => h('time', { datetime: execution.queuedAt, title: fmtTime(execution.queuedAt) }, ago(execution.queuedAt)) },
        { label: 'Duration', render: (execution) => (execution.durationMs === null ? '—' : `${execution.durationMs} ms`) },
      ],
      load: (cursor) => api.get(`/executions${query({ ...filters, limit: 25, cursor })}`),
      empty: 'No execution matches these filters.',
    }));
  };
  form.addEventListener('submit', (event) => { event.preventDefault(); load(); });
  main.append(pageHeader('Executions'), form, results);
  // The skill filter lists the first 100 skills by name; the table shows names for those.
  api.get('/skills?limit=100').then((page) => {
    for (const item of page.items) {
      skillNames.set(item.id, item.name);
      skill.append(h('option', { value: item.id, selected: item.id === params.get('skillId') }, item.name));
    }
    load();
  }).catch(() => load());
}

export function executionPage(main, params, ctx) {
  const id = params.id;
  const header = pageHeader(`Execution ${shortId(id)}`);
  const live = h('span', { class: 'live', id: 'live-state', 'aria-live': 'polite' }, 'connecting…');
  const summary = h('div');
  const historyArea = h('div');
  const errors = h('div');
  const actions = header.querySelector('.actions');
  main.append(header, errors, summary, section('History', historyArea));
  let stopped = false;
  let timer = null;
  let poll = null;
  let execution = null;

  async function refresh() {
    try {
      const [current, lines] = await Promise.all([api.get(`/executions/${id}`), api.get(`/executions/${id}/history`)]);
      if (stopped) return;
      execution = current;
      renderSummary(current);
      renderHistory(lines.items);
      renderActions(current);
    } catch (error) {
      if (!stopped) clear(summary, problemView(error));
    }
  }

  function renderSummary(current) {
    clear(summary,
      section('Status', h('div', { class: 'progress-row' },
        badge(current.status),
        h('progress', { id: 'execution-progress', max: 100, value: current.progress, 'aria-label': 'Progress' }),
        h('span', { id: 'execution-progress-text', 'data-status': current.status }, `${current.progress}%`), live),
        h('dl', { class: 'facts' },
          h('dt', {}, 'Skill'), h('dd', {}, link(`/console/skills/${current.skillId}`, shortId(current.skillId))),
          h('dt', {}, 'Origin'), h('dd', {}, current.clientName ? `${current.origin} (${current.clientName} ${current.clientVersion || ''})` : current.origin),
          h('dt', {}, 'Queued'), h('dd', {}, fmtTime(current.queuedAt)),
          h('dt', {}, 'Started'), h('dd', {}, fmtTime(current.startedAt)),
          h('dt', {}, 'Finished'), h('dd', {}, fmtTime(current.finishedAt)),
          h('dt', {}, 'Duration'), h('dd', {}, current.durationMs === null ? '—' : `${current.durationMs} ms`),
          h('dt', {}, 'Attempt'), h('dd', {}, String(current.attempt)),
          current.error ? [h('dt', {}, 'Error'), h('dd', { class: 'error-text' }, current.error)] : null)),
      h('div', { class: 'grid two' }, section('Input', jsonBlock(current.input)), section('Output', jsonBlock(current.output))));
  }

  function renderHistory(lines) {
    clear(historyArea, lines.length ? h('ol', { class: 'timeline', id: 'execution-history' }, lines.map((line) =>
      h('li', {}, h('time', { datetime: line.at }, fmtTime(line.at)), ' ', h('span', { class: `level ${line.level || ''}` }, line.level || ''), ' ', line.message,
        line.progress !== null && line.progress !== undefined ? ` (${line.progress}%)` : ''))) : h('p', { class: 'muted' }, 'Nothing yet.'));
  }

  function renderActions(current) {
    const buttons = [];
    if (ctx.can('executions:write') && !FINISHED.has(current.status)) {
      const cancel = h('button', { type: 'button', class: 'danger', id: 'cancel-execution' }, current.status === 'running' ? 'Cancel (stop it)' : 'Cancel');
      cancel.addEventListener('click', async () => { const done = await run(cancel, errors, () => api.post(`/executions/${id}/cancel`)); if (done) refresh(); });
      buttons.push(cancel);
    }
    if (ctx.can('executions:write') && ['succeeded', 'failed', 'cancelled'].includes(current.status)) {
      const rollback = h('button', { type: 'button', class: 'secondary', id: 'rollback-execution' }, 'Roll back');
      rollback.addEventListener('click', async () => { const done = await run(rollback, errors, () => api.post(`/executions/${id}/rollback`)); if (done) refresh(); });
      buttons.push(rollback);
    }
    clear(actions, buttons);
  }

  const schedule = () => { clearTimeout(timer); timer = setTimeout(refresh, 150); };
  const close = follow({ types: 'execution.*', resourceId: id }, schedule, (state) => { live.textContent = state === 'live' ? 'live' : state; });
  // If the stream is cut (a proxy that buffers), a slow poll still brings the page up to date.
  poll = setInterval(() => { if (!execution || !FINISHED.has(execution.status)) refresh(); }, 5000);
  refresh();
  return () => { stopped = true; clearTimeout(timer); clearInterval(poll); close(); };
}
