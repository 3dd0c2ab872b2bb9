// Workflows: the list, one workflow drawn as a graph with its runs and a form to start one, and one run whose
// graph colours each step by its state, live.
import { api, follow, query } from './api.js';
import { h, clear, field, problemView, pageHeader, section, pagedTable, link, badge, jsonBlock, fmtTime, run, ago, shortId, parseJSON } from './ui.js';
import { dagGraph } from './charts.js';

const FINISHED = new Set(['succeeded', 'failed', 'cancelled', 'rolled_back']);

export function workflowsPage(main) {
  main.append(pageHeader('Workflows'), pagedTable({
    caption: 'Workflows',
    columns: [
      { label: 'Name', render: (workflow) => link(`/console/workflows/${workflow.id}`, workflow.name) },
      { label: 'Slug', render: (workflow) => h('code', {}, workflow.slug) },
      { label: 'Steps', render: (workflow) => String(workflow.steps.length) },
      { label: 'Version', render: (workflow) => String(workflow.version) },
      { label: 'State', render: (workflow) => (workflow.enabled ? 'enabled' : 'disabled') },
    ],
    load: (cursor) => api.get(`/workflows${query({ limit: 25, cursor })}`),
    empty: 'No workflows yet. Create them with POST /api/v1/workflows.',
  }));
}

export function workflowPage(main, params, ctx) {
  const area = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  main.append(area);
  (async () => {
    let workflow;
    try { workflow = await api.get(`/workflows/${encodeURIComponent(params.id)}`); } catch (error) { clear(area, pageHeader('Workflow'), problemView(error)); return; }
    const startArea = [];
    if (ctx.can('skills:execute') && workflow.enabled) {
      const input = h('textarea', { rows: 5, class: 'code', spellcheck: 'false', name: 'input' }, '{}');
      const errors = h('div', { class: 'form-errors' });
      const submit = h('button', { type: 'submit', id: 'start-workflow-run' }, 'Start a run');
      const form = h('form', { class: 'stack' }, field('Input (JSON object)', input), errors, submit);
      form.addEventListener('submit', async (event) => {
        event.preventDefault();
        const started = await run(submit, errors, async () => {
          return api.post(`/workflows/${workflow.id}/runs`, { input: parseJSON(input.value, 'The input') ?? {} });
        });
        if (started) ctx.navigate(`/console/workflows/${workflow.id}/runs/${started.id}`);
      });
      startArea.push(section('Start a run', form));
    }
    clear(area, pageHeader(workflow.name),
      workflow.description ? h('p', {}, workflow.description) : null,
      section(`Graph (version ${workflow.version})`, h('div', { class: 'graph-wrap' }, dagGraph(workflow.steps))),
      section('Steps', h('table', {}, h('thead', {}, h('tr', {}, ['Step', 'Skill', 'Depends on', 'Retries', 'Timeout'].map((label) => h('th', { scope: 'col' }, label)))),
        h('tbody', {}, workflow.steps.map((step) => h('tr', {},
          h('td', { 'data-label': 'Step' }, h('code', {}, step.id)),
          h('td', { 'data-label': 'Skill' }, link(`/console/skills/${step.skillId}`, shortId(step.skillId))),
          h('td', { 'data-label': 'Depends on' }, step.dependsOn.join(', ') || '—'),
          h('td', { 'data-label': 'Retries' }, `${step.retry.maxAttempts} attempts`),
          h('td', { 'data-label': 'Timeout' }, `${step.timeoutSeconds} s`)))))),
      startArea,
      section('Runs', pagedTable({
        columns: [
          { label: 'Run', render: (item) => link(`/console/workflows/${workflow.id}/runs/${item.id}`, shortId(item.id)) },
          { label: 'Status', render: (item) => badge(item.status) },
          { label: 'Progress', render: (item) => `${item.progress}%` },
          { label: 'Started', render: (item) => ago(item.createdAt) },
        ],
        load: (cursor) => api.get(`/workflows/${workflow.id}/runs${query({ limit: 20, cursor })}`),
        empty: 'No runs yet.',
      })));
  })();
}

export function runPage(main, params, ctx) {
  const header = pageHeader(`Run ${shortId(params.runId)}`);
  const actions = header.querySelector('.actions');
  const errors = h('div');
  const area = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const live = h('span', { class: 'live', 'aria-live': 'polite' }, 'connecting…');
  main.append(header, errors, area);
  let workflow = null;
  let current = null;
  let stopped = false;
  let timer = null;

  async function refresh() {
    try {
      const [loadedWorkflow, loadedRun] = await Promise.all([
        workflow ? workflow : api.get(`/workflows/${encodeURIComponent(params.id)}`),
        api.get(`/workflows/${encodeURIComponent(params.id)}/runs/${encodeURIComponent(params.runId)}`),
      ]);
      if (stopped) return;
      workflow = loadedWorkflow;
      current = loadedRun;
      render();
    } catch (error) {
      if (!stopped) clear(area, problemView(error));
    }
  }

  function render() {
    const states = Object.fromEntries(current.steps.map((step) => [step.stepId, step.status]));
    const byStep = new Map(current.steps.map((step) => [step.stepId, step]));
    clear(area,
      section('Status', h('div', { class: 'progress-row' }, badge(current.status),
        h('progress', { max: 100, value: current.progress, 'aria-label': 'Progress' }), h('span', { id: 'run-progress-text', 'data-status': current.status }, `${current.progress}%`), live),
        current.error ? h('p', { class: 'error-text' }, current.error) : null),
      section('Graph', h('div', { class: 'graph-wrap' }, dagGraph(workflow.steps, {
        states,
        href: (step) => { const s = byStep.get(step.id); return s && s.executionId ? `/console/executions/${s.executionId}` : null; },
      }))),
      section('Steps', h('table', {}, h('thead', {}, h('tr', {}, ['Step', 'Status', 'Attempts', 'Execution', 'Started', 'Error'].map((label) => h('th', { scope: 'col' }, label)))),
        h('tbody', {}, current.steps.map((step) => h('tr', {},
          h('td', { 'data-label': 'Step' }, h('code', {}, step.stepId)),
          h('td', { 'data-label': 'Status' }, badge(step.status)),
          h('td', { 'data-label': 'Attempts' }, String(step.attempts)),
          h('td', { 'data-label': 'Execution' }, step.executionId ? link(`/console/executions/${step.executionId}`, shortId(step.executionId)) : '—'),
          h('td', { 'data-label': 'Started' }, fmtTime(step.startedAt)),
          h('td', { 'data-label': 'Error' }, step.error || '—')))))),
      section('Input', jsonBlock(current.input)),
      current.history && current.history.length ? section('History', h('ol', { class: 'timeline' }, current.history.map((line) =>
        h('li', {}, h('time', { datetime: line.at }, fmtTime(line.at)), ' ', line.action)))) : null);
    const buttons = [];
    if (ctx.can('skills:execute') && !FINISHED.has(current.status)) {
      const cancel = h('button', { type: 'button', class: 'danger' }, 'Cancel run');
      cancel.addEventListener('click', async () => { if (await run(cancel, errors, () => api.post(`/workflows/${params.id}/runs/${params.runId}/cancel`))) refresh(); });
      buttons.push(cancel);
    }
    if (ctx.can('skills:execute') && ['succeeded', 'failed', 'cancelled'].includes(current.status)) {
      const rollback = h('button', { type: 'button', class: 'secondary' }, 'Roll back');
      rollback.addEventListener('click', async () => { if (await run(rollback, errors, () => api.post(`/workflows/${params.id}/runs/${params.runId}/rollback`))) refresh(); });
      buttons.push(rollback);
    }
    clear(actions, buttons);
  }

  const schedule = () => { if (!stopped) { clearTimeout(timer); timer = setTimeout(refresh, 250); } };
  // Step executions are new resources as the run advances: follow every execution and run event, and re-read.
  const close = follow({ types: 'workflow.run.*,execution.*' }, (event) => {
    if (!current || !FINISHED.has(current.status) || event.resourceId === params.runId) schedule();
  }, (state) => { live.textContent = state; });
  const poll = setInterval(() => { if (!current || !FINISHED.has(current.status)) refresh(); }, 5000);
  refresh();
  return () => { stopped = true; clearTimeout(timer); clearInterval(poll); close(); };
}
