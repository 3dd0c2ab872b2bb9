// Webhooks: subscriptions (create, with the signing secret shown once), and one subscription with its deliveries
// and every attempt, redeliver, a test ping, secret rotation, pause and delete.
import { api, query } from './api.js';
import { h, clear, field, problemView, pageHeader, section, pagedTable, link, badge, fmtTime, run, confirmButton, secretOnce, shortId } from './ui.js';

export function webhooksPage(main, params, ctx) {
  const url = h('input', { type: 'url', name: 'url', required: true, placeholder: 'https://example.com/hooks/steward' });
  const events = h('input', { type: 'text', name: 'events', required: true, value: 'execution.*' });
  const description = h('input', { type: 'text', name: 'description', maxlength: 500 });
  const errors = h('div', { class: 'form-errors' });
  const created = h('div');
  const submit = h('button', { type: 'submit' }, 'Add subscription');
  const list = h('div');
  const form = h('form', { class: 'stack' }, field('Endpoint URL', url), field('Events', events, 'Comma-separated types or prefixes, such as execution.* or workflow.run.failed.'),
    field('Description', description), errors, submit);
  const load = () => clear(list, pagedTable({
    caption: 'Subscriptions',
    columns: [
      { label: 'Endpoint', render: (hook) => link(`/console/webhooks/${hook.id}`, hook.url) },
      { label: 'Events', render: (hook) => hook.events.join(', ') },
      { label: 'State', render: (hook) => (hook.enabled ? 'enabled' : `disabled${hook.disabledReason ? ` (${hook.disabledReason})` : ''}`) },
      { label: 'Created', render: (hook) => fmtTime(hook.createdAt) },
    ],
    load: (cursor) => api.get(`/webhooks${query({ limit: 25, cursor })}`),
    empty: 'No subscriptions yet.',
  }));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const hook = await run(submit, errors, () => api.post('/webhooks', {
      url: url.value.trim(), events: events.value.split(',').map((e) => e.trim()).filter(Boolean), description: description.value.trim() || null,
    }));
    if (hook) {
      clear(created, secretOnce(`Signing secret of ${hook.url}`, hook.secret));
      form.reset();
      load();
    }
  });
  main.append(pageHeader('Webhooks'), section('New subscription', form, created), section('Subscriptions', list));
  load();
}

export function webhookPage(main, params) {
  const area = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  main.append(area);
  const load = async () => {
    let hook;
    try { hook = await api.get(`/webhooks/${encodeURIComponent(params.id)}`); } catch (error) { clear(area, pageHeader('Webhook'), problemView(error)); return; }
    const errors = h('div');
    const shown = h('div');
    const deliveries = h('div');
    const loadDeliveries = () => clear(deliveries, pagedTable({
      caption: 'Deliveries, newest first',
      columns: [
        { label: 'Event', render: (delivery) => delivery.eventType },
        { label: 'Status', render: (delivery) => badge(delivery.status) },
        { label: 'Answer', render: (delivery) => (delivery.responseStatus === null ? (delivery.error || '—') : `HTTP ${delivery.responseStatus}`) },
        { label: 'Attempts', render: (delivery) => attempts(delivery) },
        { label: 'Next attempt', render: (delivery) => fmtTime(delivery.nextAttemptAt) },
        { label: '', render: (delivery) => {
          const again = h('button', { type: 'button', class: 'secondary small' }, 'Redeliver');
          again.addEventListener('click', async () => { if (await run(again, errors, () => api.post(`/webhooks/${hook.id}/deliveries/${delivery.id}/redeliver`))) loadDeliveries(); });
          return again;
        } },
      ],
      load: (cursor) => api.get(`/webhooks/${hook.id}/deliveries${query({ limit: 20, cursor })}`),
      empty: 'Nothing delivered yet. Send a test ping.',
    }));
    const ping = h('button', { type: 'button', id: 'ping-webhook' }, 'Send test ping');
    ping.addEventListener('click', async () => { if (await run(ping, errors, () => api.post(`/webhooks/${hook.id}/test`))) loadDeliveries(); });
    const toggle = h('button', { type: 'button', class: 'secondary' }, hook.enabled ? 'Disable' : 'Enable');
    toggle.addEventListener('click', async () => { if (await run(toggle, errors, () => api.patch(`/webhooks/${hook.id}`, { enabled: !hook.enabled }))) load(); });
    const rotate = confirmButton('Rotate secret', 'Confirm rotation', async (button) => {
      const rotated = await run(button, errors, () => api.post(`/webhooks/${hook.id}/rotate-secret`));
      if (rotated) clear(shown, secretOnce('New signing secret', rotated.secret), h('p', { class: 'muted' }, 'The old secret keeps working for a while, so receivers can switch.'));
    }, { class: 'secondary' });
    const remove = confirmButton('Delete', 'Confirm delete', async (button) => {
      const done = await run(button, errors, () => api.del(`/webhooks/${hook.id}`));
      if (done !== undefined) history.back();
    });
    clear(area, pageHeader(`Webhook ${shortId(hook.id)}`, ping, toggle, rotate, remove), errors, shown,
      section('Subscription', h('dl', { class: 'facts' },
        h('dt', {}, 'Endpoint'), h('dd', {}, hook.url),
        h('dt', {}, 'Events'), h('dd', {}, hook.events.join(', ')),
        h('dt', {}, 'Description'), h('dd', {}, hook.description || '—'),
        h('dt', {}, 'State'), h('dd', {}, hook.enabled ? 'enabled' : `disabled${hook.disabledReason ? `: ${hook.disabledReason}` : ''}`),
        h('dt', {}, 'Headers'), h('dd', {}, Object.keys(hook.headers).join(', ') || '—'))),
      section('Deliveries', deliveries));
    loadDeliveries();
  };
  load();
}

function attempts(delivery) {
  if (!delivery.attempts.length) return String(delivery.attempt);
  return h('details', {}, h('summary', {}, `${delivery.attempts.length}`),
    h('ol', { class: 'plain' }, delivery.attempts.map((attempt) => h('li', {},
      `#${attempt.attempt} ${fmtTime(attempt.at)}: ${attempt.responseStatus === null ? (attempt.error || 'no answer') : `HTTP ${attempt.responseStatus}`} in ${attempt.durationMs} ms`))));
}
