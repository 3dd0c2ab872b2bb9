// Skills: full-text search, one skill, create and edit (with a JSON Schema editor checked before saving), and
// run (a form generated from the skill's inputSchema).
import { api, query } from './api.js';
import { h, clear, field, select, problemView, pageHeader, section, pagedTable, link, badge, jsonBlock, fmtTime,
  run, confirmButton, ago, shortId } from './ui.js';
import { schemaForm, schemaProblems } from './schema-form.js';

const BUILTINS = ['echo', 'sleep', 'fail', 'transform'];

export function skillsPage(main, params, ctx) {
  const search = new URLSearchParams(location.search);
  const q = h('input', { type: 'search', name: 'q', value: search.get('q') || '', placeholder: 'Search name, description, tags' });
  const category = h('input', { type: 'text', name: 'category', value: search.get('category') || '' });
  const results = h('div');
  const form = h('form', { class: 'filters', role: 'search' }, field('Search', q), field('Category', category), h('button', { type: 'submit' }, 'Search'));
  const load = () => {
    const filters = { q: q.value.trim(), category: category.value.trim() };
    history.replaceState(null, '', `/console/skills${query(filters)}`);
    clear(results, pagedTable({
      caption: 'Skills',
      columns: [
        { label: 'Name', render: (skill) => link(`/console/skills/${encodeURIComponent(skill.slug)}`, skill.name) },
        { label: 'Slug', render: (skill) => h('code', {}, skill.slug) },
        { label: 'Category', render: (skill) => skill.category },
        { label: 'Tags', render: (skill) => skill.tags.join(', ') },
        { label: 'Runs', render: (skill) => String(skill.executionCount) },
        { label: 'State', render: (skill) => (skill.enabled ? 'enabled' : 'disabled') },
      ],
      load: (cursor) => api.get(`/skills${query({ ...filters, limit: 20, cursor })}`),
      empty: filters.q ? 'No skill matches this search.' : 'No skills yet.',
    }));
  };
  form.addEventListener('submit', (event) => { event.preventDefault(); load(); });
  main.append(pageHeader('Skills', ctx.can('skills:write') ? link('/console/skills/new', 'New skill', { class: 'button' }) : null), form, results);
  load();
}

export function skillPage(main, params, ctx) {
  const area = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  main.append(area);
  (async () => {
    try {
      const skill = await api.get(`/skills/${encodeURIComponent(params.skill)}`);
      const errors = h('div');
      const actions = [
        ctx.can('skills:execute') && skill.enabled ? link(`/console/skills/${encodeURIComponent(skill.slug)}/run`, 'Run', { class: 'button', id: 'run-skill' }) : null,
        ctx.can('skills:write') ? link(`/console/skills/${encodeURIComponent(skill.slug)}/edit`, 'Edit', { class: 'button secondary' }) : null,
        ctx.can('skills:write') ? confirmButton('Delete', 'Confirm delete', async (button) => {
          const done = await run(button, errors, () => api.del(`/skills/${skill.id}`));
          if (done !== undefined) ctx.navigate('/console/skills');
        }) : null,
      ];
      clear(area, pageHeader(skill.name, actions), errors,
        section('About this skill', h('dl', { class: 'facts' },
          h('dt', {}, 'Slug'), h('dd', {}, h('code', {}, skill.slug)),
          h('dt', {}, 'Description'), h('dd', {}, skill.description || '—'),
          h('dt', {}, 'Category'), h('dd', {}, skill.category),
          h('dt', {}, 'Tags'), h('dd', {}, skill.tags.join(', ') || '—'),
          h('dt', {}, 'Runner'), h('dd', {}, skill.runner.type === 'builtin' ? `built-in: ${skill.runner.name}` : `HTTP: ${skill.runner.url}`),
          h('dt', {}, 'Version'), h('dd', {}, String(skill.version)),
          h('dt', {}, 'State'), h('dd', {}, skill.enabled ? 'enabled' : 'disabled'),
          h('dt', {}, 'Runs'), h('dd', {}, String(skill.executionCount)),
          h('dt', {}, 'Updated'), h('dd', {}, fmtTime(skill.updatedAt)))),
        section('Input schema', jsonBlock(skill.inputSchema)),
        skill.outputSchema ? section('Output schema', jsonBlock(skill.outputSchema)) : null,
        ctx.can('executions:read') ? section('Recent executions', pagedTable({
          columns: [
            { label: 'Execution', render: (execution) => link(`/console/executions/${execution.id}`, shortId(execution.id)) },
            { label: 'Status', render: (execution) => badge(execution.status) },
            { label: 'Queued', render: (execution) => ago(execution.queuedAt) },
          ],
          load: (cursor) => api.get(`/executions${query({ skillId: skill.id, limit: 10, cursor })}`),
          empty: 'This skill has not run yet.',
        })) : null);
    } catch (error) {
      clear(area, pageHeader('Skill'), problemView(error));
    }
  })();
}

export function skillEditPage(main, params, ctx) {
  const editing = Boolean(params.skill);
  const area = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  main.append(area);
  (async () => {
    let skill = null;
    if (editing) {
      try { skill = await api.get(`/skills/${encodeURIComponent(params.skill)}`); } catch (error) { clear(area, pageHeader('Edit skill'), problemView(error)); return; }
    }
    const slug = h('input', { type: 'text', name: 'slug', required: true, pattern: '[a-z0-9][a-z0-9-]{0,62}[a-z0-9]', value: skill ? skill.slug : '' });
    const name = h('input', { type: 'text', name: 'name', required: true, maxlength: 200, value: skill ? skill.name : '' });
    const description = h('textarea', { name: 'description', rows: 3, maxlength: 10000 }, skill ? skill.description : '');
    const category = h('input', { type: 'text', name: 'category', maxlength: 64, value: skill ? skill.category : 'general' });
    const tags = h('input', { type: 'text', name: 'tags', value: skill ? skill.tags.join(', ') : '' });
    const runnerType = select([['builtin', 'Built-in'], ['http', 'HTTP endpoint']], skill ? skill.runner.type : 'builtin', { name: 'runnerType' });
    const builtin = select(BUILTINS, skill && skill.runner.type === 'builtin' ? skill.runner.name : 'echo', { name: 'builtin' });
    const url = h('input', { type: 'url', name: 'url', value: skill && skill.runner.type === 'http' ? skill.runner.url : '' });
    const enabled = h('input', { type: 'checkbox', name: 'enabled', id: 'skill-enabled', checked: skill ? skill.enabled : true });
    const schemaText = h('textarea', { name: 'inputSchema', rows: 12, class: 'code', spellcheck: 'false' },
      JSON.stringify(skill ? skill.inputSchema : { type: 'object', properties: {}, additionalProperties: false }, null, 2));
    const schemaStatus = h('div', { class: 'schema-status', 'aria-live': 'polite' });
    const builtinField = field('Built-in runner', builtin);
    const urlField = field('Endpoint URL', url, 'Steward POSTs the input here; private addresses are refused.');
    const showRunner = () => { builtinField.hidden = runnerType.value !== 'builtin'; urlField.hidden = runnerType.value !== 'http'; };
    runnerType.addEventListener('change', showRunner);
    showRunner();
    const checkSchema = () => {
      let parsed;
      try { parsed = JSON.parse(schemaText.value); } catch (error) {
        clear(schemaStatus, h('p', { class: 'notice error' }, `Not valid JSON: ${error.message}`));
        return null;
      }
      const problems = schemaProblems(parsed);
      if (problems.length) {
        clear(schemaStatus, h('ul', { class: 'notice error' }, problems.map((p) => h('li', {}, h('code', {}, p.field), ' ', p.message))));
        return null;
      }
      clear(schemaStatus, h('p', { class: 'notice ok' }, 'The schema is valid.'));
      return parsed;
    };
    schemaText.addEventListener('input', checkSchema);
    checkSchema();
    const errors = h('div', { class: 'form-errors' });
    const save = h('button', { type: 'submit' }, editing ? 'Save changes' : 'Create skill');
    const form = h('form', { class: 'stack', novalidate: true },
      field('Slug', slug, 'Lower-case letters, digits and dashes; how API clients and MCP name the skill.'),
      field('Name', name), field('Description', description), field('Category', category),
      field('Tags', tags, 'Comma-separated.'),
      field('Runner', runnerType), builtinField, urlField,
      h('div', { class: 'field check' }, enabled, h('label', { for: 'skill-enabled' }, 'Enabled')),
      field('Input schema (JSON Schema)', schemaText), schemaStatus, errors, save);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const inputSchema = checkSchema();
      if (!inputSchema) { errors.replaceChildren(problemView({ title: 'Fix the input schema first', detail: 'The schema editor shows what is wrong.' })); schemaText.focus(); return; }
      const body = {
        slug: slug.value.trim(), name: name.value.trim(), description: description.value, category: category.value.trim() || 'general',
        tags: tags.value.split(',').map((tag) => tag.trim()).filter(Boolean), enabled: enabled.checked, inputSchema,
        runner: runnerType.value === 'builtin' ? { type: 'builtin', name: builtin.value } : { type: 'http', url: url.value.trim() },
      };
      const saved = await run(save, errors, () => (editing ? api.patch(`/skills/${skill.id}`, body) : api.post('/skills', body)));
      if (saved) ctx.navigate(`/console/skills/${encodeURIComponent(saved.slug)}`);
    });
    clear(area, pageHeader(editing ? `Edit ${skill.name}` : 'New skill'), form);
  })();
}

export function skillRunPage(main, params, ctx) {
  const area = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  main.append(area);
  (async () => {
    let skill;
    try { skill = await api.get(`/skills/${encodeURIComponent(params.skill)}`); } catch (error) { clear(area, pageHeader('Run skill'), problemView(error)); return; }
    const form = schemaForm(skill.inputSchema, undefined);
    const errors = h('div', { class: 'form-errors' });
    const submit = h('button', { type: 'submit', id: 'start-run' }, 'Run');
    // novalidate: the form's own checks name the field (input.target.host) in the problem, as the server would.
    const element = h('form', { class: 'stack', novalidate: true }, form.element, errors, submit);
    element.addEventListener('submit', async (event) => {
      event.preventDefault();
      const execution = await run(submit, errors, async () => api.post('/executions', { skillId: skill.id, input: form.value() }));
      if (execution) ctx.navigate(`/console/executions/${execution.id}`);
    });
    clear(area, pageHeader(`Run ${skill.name}`), skill.description ? h('p', {}, skill.description) : null, element);
  })();
}
