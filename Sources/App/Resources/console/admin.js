// Administration: users (search, status, roles, unlock, sessions), API keys (the secret shown once), the audit
// log (filters and a check of the chain) and About.
import { api, query } from './api.js';
import { h, clear, field, select, problemView, pageHeader, section, pagedTable, link, badge, fmtTime, run, confirmButton,
  secretOnce, ago, localToISO, jsonBlock, notice, shortId } from './ui.js';

const USER_STATUSES = ['active', 'inactive', 'suspended', 'deleted'];

export function usersPage(main) {
  const params = new URLSearchParams(location.search);
  const q = h('input', { type: 'search', name: 'q', value: params.get('q') || '', placeholder: 'Email, username or name' });
  const role = select([['', 'Any'], 'admin', 'developer', 'executor', 'viewer', 'service'], params.get('role') || '', { name: 'role' });
  const status = select([['', 'Any'], ...USER_STATUSES], params.get('status') || '', { name: 'status' });
  const results = h('div');
  const form = h('form', { class: 'filters', role: 'search' }, field('Search', q), field('Role', role), field('Status', status), h('button', { type: 'submit' }, 'Search'));
  const load = () => {
    const filters = { q: q.value.trim(), role: role.value, status: status.value };
    history.replaceState(null, '', `/console/users${query(filters)}`);
    clear(results, pagedTable({
      caption: 'Users',
      columns: [
        { label: 'Email', render: (user) => link(`/console/users/${user.id}`, user.email) },
        { label: 'Name', render: (user) => user.fullName || user.username },
        { label: 'Roles', render: (user) => user.roles.join(', ') },
        { label: 'Status', render: (user) => badge(user.status) },
        { label: 'Locked', render: (user) => (user.lockedUntil && new Date(user.lockedUntil) > new Date() ? `until ${fmtTime(user.lockedUntil)}` : '—') },
        { label: 'Last sign-in', render: (user) => ago(user.lastLoginAt) },
      ],
      load: (cursor) => api.get(`/users${query({ ...filters, limit: 25, cursor })}`),
      empty: 'No user matches.',
    }));
  };
  form.addEventListener('submit', (event) => { event.preventDefault(); load(); });
  main.append(pageHeader('Users'), form, results);
  load();
}

export function userPage(main, params, ctx) {
  const area = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  main.append(area);
  const load = async () => {
    let user; let roles;
    try {
      [user, roles] = await Promise.all([api.get(`/users/${encodeURIComponent(params.id)}`), api.get('/roles')]);
    } catch (error) { clear(area, pageHeader('User'), problemView(error)); return; }
    const errors = h('div');
    const manage = ctx.can('users:manage');
    const parts = [];
    if (manage) {
      const status = select(USER_STATUSES.filter((s) => s !== 'deleted'), user.status, { name: 'status' });
      const saveStatus = h('button', { type: 'submit' }, 'Change status');
      const statusForm = h('form', { class: 'row' }, field('Status', status), saveStatus);
      statusForm.addEventListener('submit', async (event) => {
        event.preventDefault();
        if (await run(saveStatus, errors, () => api.patch(`/users/${user.id}`, { status: status.value }))) load();
      });
      const boxes = roles.items.map((role) => {
        const box = h('input', { type: 'checkbox', name: 'roles', value: role.name, id: `role-${role.name}`, checked: user.roles.includes(role.name) });
        return h('div', { class: 'field check' }, box, h('label', { for: box.id }, role.name), h('small', { class: 'hint' }, role.description));
      });
      const saveRoles = h('button', { type: 'submit' }, 'Save roles');
      const rolesForm = h('form', { class: 'stack' }, h('fieldset', {}, h('legend', {}, 'Roles'), boxes), saveRoles);
      rolesForm.addEventListener('submit', async (event) => {
        event.preventDefault();
        const chosen = [...rolesForm.querySelectorAll('input[name=roles]:checked')].map((box) => box.value);
        if (await run(saveRoles, errors, () => api.put(`/users/${user.id}/roles`, { roles: chosen }))) load();
      });
      const unlock = h('button', { type: 'button', class: 'secondary' }, 'Unlock sign-in');
      unlock.addEventListener('click', async () => { if (await run(unlock, errors, () => api.post(`/users/${user.id}/unlock`))) load(); });
      parts.push(section('Manage', statusForm, rolesForm, h('div', { class: 'row' }, unlock)));
    }
    const sessions = h('div');
    clear(area, pageHeader(user.email), errors,
      section('Account', h('dl', { class: 'facts' },
        h('dt', {}, 'Username'), h('dd', {}, user.username),
        h('dt', {}, 'Name'), h('dd', {}, user.fullName || '—'),
        h('dt', {}, 'Status'), h('dd', {}, badge(user.status)),
        h('dt', {}, 'Roles'), h('dd', {}, user.roles.join(', ') || '—'),
        h('dt', {}, 'Email verified'), h('dd', {}, user.emailVerified ? 'yes' : 'no'),
        h('dt', {}, 'Two-step verification'), h('dd', {}, user.mfaEnabled ? 'on' : 'off'),
        h('dt', {}, 'Failed sign-ins'), h('dd', {}, String(user.failedLoginCount)),
        h('dt', {}, 'Locked until'), h('dd', {}, fmtTime(user.lockedUntil)),
        h('dt', {}, 'Last sign-in'), h('dd', {}, fmtTime(user.lastLoginAt)),
        h('dt', {}, 'Created'), h('dd', {}, fmtTime(user.createdAt)))),
      parts, section('Sessions', sessions));
    try {
      const list = await api.get(`/users/${user.id}/sessions`);
      clear(sessions, list.items.length ? h('table', {}, h('thead', {}, h('tr', {}, ['Device', 'Address', 'Signed in', 'Last seen', 'Expires'].map((label) => h('th', { scope: 'col' }, label)))),
        h('tbody', {}, list.items.map((session) => h('tr', {},
          h('td', { 'data-label': 'Device' }, session.userAgent || 'unknown'),
          h('td', { 'data-label': 'Address' }, session.ipAddress || '—'),
          h('td', { 'data-label': 'Signed in' }, fmtTime(session.createdAt)),
          h('td', { 'data-label': 'Last seen' }, ago(session.lastSeenAt)),
          h('td', { 'data-label': 'Expires' }, fmtTime(session.expiresAt)))))) : h('p', { class: 'muted' }, 'No live session.'));
    } catch (error) { clear(sessions, problemView(error)); }
  };
  load();
}

export function apiKeysPage(main, params, ctx) {
  const name = h('input', { type: 'text', name: 'name', required: true, maxlength: 100 });
  const expires = h('input', { type: 'datetime-local', name: 'expiresAt' });
  const granted = ctx.me.permissions.filter((permission) => permission !== 'admin:full');
  const scopes = granted.map((permission) => {
    const box = h('input', { type: 'checkbox', name: 'scopes', value: permission, id: `scope-${permission.replace(/[^a-z-]/g, '-')}`, checked: permission.endsWith(':read') });
    return h('div', { class: 'field check' }, box, h('label', { for: box.id }, permission));
  });
  const errors = h('div', { class: 'form-errors' });
  const created = h('div', { id: 'created-key' });
  const submit = h('button', { type: 'submit', id: 'create-key' }, 'Create key');
  const list = h('div');
  const form = h('form', { class: 'stack' }, field('Name', name), h('fieldset', { class: 'scopes' }, h('legend', {}, 'Scopes (never more than your own permissions)'), scopes),
    field('Expires (optional)', expires), errors, submit);
  const load = () => clear(list, pagedTable({
    caption: 'Keys',
    columns: [
      { label: 'Name', render: (key) => key.name },
      { label: 'Prefix', render: (key) => h('code', {}, `stw_${key.prefix}_…`) },
      { label: 'Scopes', render: (key) => key.scopes.join(', ') },
      { label: 'Last used', render: (key) => (key.lastUsedAt ? `${ago(key.lastUsedAt)} from ${key.lastUsedIp || '?'}` : 'never') },
      { label: 'Expires', render: (key) => fmtTime(key.expiresAt) },
      { label: 'State', render: (key) => (key.revokedAt ? `revoked ${ago(key.revokedAt)}` : 'live') },
      { label: '', render: (key) => (key.revokedAt ? '' : confirmButton('Revoke', 'Confirm revoke', async (button) => {
        const done = await run(button, errors, () => api.del(`/api-keys/${key.id}`));
        if (done !== undefined) load();
      })) },
    ],
    load: (cursor) => api.get(`/api-keys${query({ limit: 50, cursor })}`),
    empty: 'No keys yet.',
  }));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const chosen = [...form.querySelectorAll('input[name=scopes]:checked')].map((box) => box.value);
    const key = await run(submit, errors, () => api.post('/api-keys', { name: name.value.trim(), scopes: chosen, expiresAt: localToISO(expires.value) ?? null }));
    if (key) {
      clear(created, secretOnce(`API key ${key.name}`, key.key));
      form.reset();
      load();
    }
  });
  main.append(pageHeader('API keys'), section('New key', form, created), section('Keys', list));
  load();
}

export function auditPage(main) {
  const params = new URLSearchParams(location.search);
  const actorId = h('input', { type: 'text', name: 'actorId', value: params.get('actorId') || '', placeholder: 'user id' });
  const action = h('input', { type: 'text', name: 'action', value: params.get('action') || '', placeholder: 'execution.succeeded' });
  const resourceType = h('input', { type: 'text', name: 'resourceType', value: params.get('resourceType') || '', placeholder: 'execution' });
  const resourceId = h('input', { type: 'text', name: 'resourceId', value: params.get('resourceId') || '' });
  const from = h('input', { type: 'datetime-local', name: 'from' });
  const to = h('input', { type: 'datetime-local', name: 'to' });
  const results = h('div');
  const verdict = h('div', { id: 'audit-verdict', 'aria-live': 'polite' });
  const verify = h('button', { type: 'button', class: 'secondary', id: 'verify-audit' }, 'Verify the chain');
  verify.addEventListener('click', async () => {
    const result = await run(verify, verdict, () => api.get('/audit/verify'));
    if (!result) return;
    clear(verdict, result.intact
      ? notice(`The chain is intact: ${result.checked} entries verified at ${fmtTime(result.verifiedAt)}.`, 'ok')
      : notice(`The chain is broken at entry ${result.firstBroken.seq}: ${result.firstBroken.reason}. ${result.checked} entries before it are intact.`, 'error'));
  });
  const form = h('form', { class: 'filters' }, field('Actor', actorId), field('Action', action), field('Resource type', resourceType),
    field('Resource id', resourceId), field('From', from), field('To', to), h('button', { type: 'submit' }, 'Filter'));
  const load = () => {
    const filters = { actorId: actorId.value.trim(), action: action.value.trim(), resourceType: resourceType.value.trim(),
      resourceId: resourceId.value.trim(), from: localToISO(from.value), to: localToISO(to.value) };
    history.replaceState(null, '', `/console/audit${query(filters)}`);
    clear(results, pagedTable({
      caption: 'Audit entries, newest first',
      columns: [
        { label: 'Seq', render: (entry) => String(entry.seq) },
        { label: 'When', render: (entry) => fmtTime(entry.at) },
        { label: 'Action', render: (entry) => h('code', {}, entry.action) },
        { label: 'Outcome', render: (entry) => badge(entry.outcome === 'success' ? 'succeeded' : 'failed') },
        { label: 'Actor', render: (entry) => (entry.actorId ? `${entry.actorType} ${shortId(entry.actorId)}` : entry.actorType) },
        { label: 'Resource', render: (entry) => (entry.resourceType ? `${entry.resourceType} ${entry.resourceId || ''}` : '—') },
        { label: 'Details', render: (entry) => h('details', {}, h('summary', {}, 'show'), jsonBlock(entry.details), h('p', { class: 'muted' }, `IP ${entry.ipAddress || '—'} · request ${entry.requestId || '—'}`)) },
      ],
      load: (cursor) => api.get(`/audit-logs${query({ ...filters, limit: 50, cursor })}`),
      empty: 'No entry matches these filters.',
    }));
  };
  form.addEventListener('submit', (event) => { event.preventDefault(); load(); });
  main.append(pageHeader('Audit log', verify), verdict, form, results);
  load();
}

export function aboutPage(main) {
  const area = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  main.append(pageHeader('About'), area);
  api.get('/admin/about').then((about) => {
    clear(area, section('This instance', h('dl', { class: 'facts', id: 'about-facts' },
      h('dt', {}, 'Version'), h('dd', {}, about.version),
      h('dt', {}, 'Database'), h('dd', {}, about.database),
      h('dt', {}, 'Schema version'), h('dd', {}, about.schemaVersion || '—'),
      h('dt', {}, 'Pending migrations'), h('dd', {}, String(about.pendingMigrations)),
      h('dt', {}, 'API contract'), h('dd', {}, h('a', { href: about.openapi }, 'openapi.yaml')),
      h('dt', {}, 'Metrics'), h('dd', {}, h('a', { href: about.metrics }, 'Prometheus metrics'), about.metricsProtected ? ' (needs the metrics token)' : ''))));
  }).catch((error) => clear(area, problemView(error)));
}
