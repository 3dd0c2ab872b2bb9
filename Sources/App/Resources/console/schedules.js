// Schedules: the list, a new schedule (its next five fire times shown while the expression is typed), and one
// schedule with pause, resume, run now and delete.
import { api, query } from './api.js';
import { h, clear, field, select, problemView, pageHeader, section, pagedTable, link, badge, jsonBlock, fmtTime, run,
  confirmButton, shortId, parseJSON } from './ui.js';

export function schedulesPage(main, params, ctx) {
  main.append(pageHeader('Schedules', ctx.can('skills:execute') ? link('/console/schedules/new', 'New schedule', { class: 'button' }) : null),
    pagedTable({
      caption: 'Schedules',
      columns: [
        { label: 'Name', render: (item) => link(`/console/schedules/${item.id}`, item.name) },
        { label: 'Cron', render: (item) => h('code', {}, item.cron) },
        { label: 'Time zone', render: (item) => item.timezone },
        { label: 'State', render: (item) => (item.enabled ? 'active' : 'paused') },
        { label: 'Next', render: (item) => fmtTime(item.nextRunAt) },
        { label: 'Last', render: (item) => (item.lastStatus ? badge(item.lastStatus) : '—') },
      ],
      load: (cursor) => api.get(`/schedules${query({ limit: 25, cursor })}`),
      empty: 'No schedules yet.',
    }));
}

/** The next fire times of an expression, from the server (GET /schedules/preview), refreshed as it is typed. */
function previewer(cron, timezone) {
  const area = h('div', { class: 'preview', 'aria-live': 'polite', id: 'cron-preview' });
  let timer;
  const update = () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      if (!cron.value.trim()) { clear(area); return; }
      try {
        const preview = await api.get(`/schedules/preview${query({ cron: cron.value.trim(), timezone: timezone.value.trim() || 'UTC', count: 5 })}`);
        clear(area, h('p', {}, 'Next five fire times:'), h('ol', {}, preview.next.map((at) => h('li', {}, h('time', { datetime: at }, fmtTime(at))))));
      } catch (error) {
        clear(area, problemView(error));
      }
    }, 300);
  };
  cron.addEventListener('input', update);
  timezone.addEventListener('input', update);
  update();
  return area;
}

export function scheduleEditPage(main, params, ctx) {
  const area = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  main.append(area);
  (async () => {
    const [skills, workflows] = await Promise.all([
      api.get('/skills?limit=100').catch(() => ({ items: [] })),
      ctx.can('workflows:read') ? api.get('/workflows?limit=100').catch(() => ({ items: [] })) : { items: [] },
    ]);
    const name = h('input', { type: 'text', name: 'name', required: true, maxlength: 200 });
    const target = select([
      ...skills.items.map((skill) => [`skill:${skill.id}`, `Skill: ${skill.name}`]),
      ...workflows.items.map((workflow) => [`workflow:${workflow.id}`, `Workflow: ${workflow.name}`]),
    ], '', { name: 'target' });
    const cron = h('input', { type: 'text', name: 'cron', required: true, value: '*/15 * * * *', class: 'code' });
    const timezone = h('input', { type: 'text', name: 'timezone', value: Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC' });
    const input = h('textarea', { rows: 4, class: 'code', name: 'input', spellcheck: 'false' }, '{}');
    const overlap = select(['skip', 'queue', 'allow'], 'skip', { name: 'overlapPolicy' });
    const catchUp = select(['last', 'none', 'all'], 'last', { name: 'catchUp' });
    const errors = h('div', { class: 'form-errors' });
    const save = h('button', { type: 'submit' }, 'Create schedule');
    const form = h('form', { class: 'stack' }, field('Name', name), field('Runs', target),
      field('Cron expression', cron, 'Five fields (minute hour day month weekday), six with seconds, or @hourly, @daily…'),
      field('Time zone', timezone, 'An IANA name such as Europe/Berlin.'), previewer(cron, timezone),
      field('Input (JSON object)', input), field('When a run is still going', overlap), field('Missed while down', catchUp), errors, save);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const created = await run(save, errors, async () => {
        const body = parseJSON(input.value, 'The input') ?? {};
        const [kind, id] = target.value.split(':');
        return api.post('/schedules', {
          name: name.value.trim(), cron: cron.value.trim(), timezone: timezone.value.trim() || 'UTC', input: body,
          target: kind === 'workflow' ? { workflowId: id } : { skillId: id }, overlapPolicy: overlap.value, catchUp: catchUp.value,
        });
      });
      if (created) ctx.navigate(`/console/schedules/${created.id}`);
    });
    clear(area, pageHeader('New schedule'), skills.items.length || workflows.items.length ? form : h('p', {}, 'There is no skill or workflow to schedule yet.'));
  })();
}

export function schedulePage(main, params, ctx) {
  const area = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  main.append(area);
  const load = async () => {
    let schedule;
    try { schedule = await api.get(`/schedules/${encodeURIComponent(params.id)}`); } catch (error) { clear(area, pageHeader('Schedule'), problemView(error)); return; }
    const errors = h('div');
    const buttons = [];
    if (ctx.can('skills:execute')) {
      const toggle = h('button', { type: 'button', class: 'secondary', id: 'toggle-schedule' }, schedule.enabled ? 'Pause' : 'Resume');
      toggle.addEventListener('click', async () => { if (await run(toggle, errors, () => api.patch(`/schedules/${schedule.id}`, { enabled: !schedule.enabled }))) load(); });
      const now = h('button', { type: 'button', id: 'run-schedule-now' }, 'Run now');
      now.addEventListener('click', async () => {
        const started = await run(now, errors, () => api.post(`/schedules/${schedule.id}/run-now`));
        if (!started) return;
        await load();
        // The answer is the execution (skill target) or the workflow run it started.
        const href = schedule.target.skillId ? `/console/executions/${started.id}` : `/console/workflows/${schedule.target.workflowId}/runs/${started.id}`;
        area.querySelector('.page-header').after(h('p', { class: 'notice ok', role: 'status' }, 'Started: ', link(href, shortId(started.id), { id: 'started-link' })));
      });
      buttons.push(now, toggle, confirmButton('Delete', 'Confirm delete', async (button) => {
        const done = await run(button, errors, () => api.del(`/schedules/${schedule.id}`));
        if (done !== undefined) ctx.navigate('/console/schedules');
      }));
    }
    const timezone = h('input', { type: 'hidden', value: schedule.timezone });
    const cron = h('input', { type: 'hidden', value: schedule.cron });
    clear(area, pageHeader(schedule.name, buttons), errors,
      section('Schedule', h('dl', { class: 'facts' },
        h('dt', {}, 'Cron'), h('dd', {}, h('code', {}, schedule.cron)),
        h('dt', {}, 'Time zone'), h('dd', {}, schedule.timezone),
        h('dt', {}, 'State'), h('dd', { id: 'schedule-state' }, schedule.enabled ? 'active' : 'paused'),
        h('dt', {}, 'Target'), h('dd', {}, schedule.target.skillId ? link(`/console/skills/${schedule.target.skillId}`, `skill ${shortId(schedule.target.skillId)}`)
          : link(`/console/workflows/${schedule.target.workflowId}`, `workflow ${shortId(schedule.target.workflowId)}`)),
        h('dt', {}, 'Overlap'), h('dd', {}, schedule.overlapPolicy),
        h('dt', {}, 'Catch-up'), h('dd', {}, schedule.catchUp),
        h('dt', {}, 'Next run'), h('dd', {}, fmtTime(schedule.nextRunAt)),
        h('dt', {}, 'Last run'), h('dd', {}, fmtTime(schedule.lastRunAt), ' ', schedule.lastStatus ? badge(schedule.lastStatus) : ''),
        schedule.lastError ? [h('dt', {}, 'Last error'), h('dd', { class: 'error-text' }, schedule.lastError)] : null,
        schedule.lastExecutionId ? [h('dt', {}, 'Last execution'), h('dd', {}, link(`/console/executions/${schedule.lastExecutionId}`, shortId(schedule.lastExecutionId)))] : null,
        schedule.lastRunId ? [h('dt', {}, 'Last workflow run'), h('dd', {}, link(`/console/workflows/${schedule.target.workflowId}/runs/${schedule.lastRunId}`, shortId(schedule.lastRunId)))] : null)),
      section('Upcoming', schedule.enabled ? previewer(cron, timezone) : h('p', { class: 'muted' }, 'Paused: it does not fire until resumed.')),
      section('Input', jsonBlock(schedule.input)));
  };
  load();
}
