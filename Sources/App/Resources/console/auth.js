// Sign in (password or an identity provider, then the MFA step when the account has it), and the signed-in user's
// own account: sign-in methods (linked identities) and sessions, with revoke.
import { api, setCSRF, query } from './api.js';
import { h, clear, field, problemView, pageHeader, section, fmtTime, ago, confirmButton, run, notice } from './ui.js';

// Where a provider sign-in (or link) comes back to: it must be one of STEWARD_OAUTH_REDIRECT_URLS, whose default
// is <public URL>/console/oauth.
const oauthReturn = () => `${location.origin}/console/oauth`;

export function signInPage(main, ctx) {
  const area = h('div', { class: 'signin-box card' });
  main.append(area);
  const back = new URLSearchParams(location.search);
  if (location.pathname.replace(/\/+$/, '') === '/console/oauth' && back.get('code')) {
    providerReturn(area, ctx, back.get('code'));
    return;
  }
  passwordStep(area, ctx);
}

// Back from a provider: trade the one-time code for the session (cookie mode), or show why not.
async function providerReturn(area, ctx, code) {
  history.replaceState(null, '', '/console/oauth');
  const errors = h('div', { class: 'form-errors' });
  const again = h('button', { type: 'button', class: 'secondary' }, 'Back to sign-in');
  again.addEventListener('click', () => { history.replaceState(null, '', '/console'); passwordStep(area, ctx); });
  clear(area, h('div', { class: 'stack' }, h('h1', { id: 'signin-title' }, 'Signing you in…'), errors));
  const answer = await run(null, errors, () => api.post('/auth/oauth/exchange', { code, cookie: true }, { quietAuth: true }));
  if (!answer) {
    area.querySelector('h1').textContent = 'Sign-in did not finish';
    errors.append(again);
    return;
  }
  history.replaceState(null, '', '/console');
  if (answer.mfaRequired) { mfaStep(area, ctx, answer.mfaToken); return; }
  await finish(answer, ctx, errors);
}

// One button per configured identity provider, under the password form.
async function providerButtons(where) {
  let providers;
  try {
    providers = (await api.get('/auth/providers', { quietAuth: true })).items;
  } catch {
    return;
  }
  if (!providers.length) return;
  where.replaceChildren(h('p', { class: 'muted' }, 'or'),
    ...providers.map((provider) => {
      const button = h('button', { type: 'button', class: 'secondary provider', 'data-provider': provider.id }, `Sign in with ${provider.name}`);
      button.addEventListener('click', () => {
        button.disabled = true;
        location.assign(`/api/v1/auth/oauth/${encodeURIComponent(provider.id)}/start${query({ redirect: oauthReturn() })}`);
      });
      return button;
    }));
}

function passwordStep(area, ctx) {
  const email = h('input', { type: 'email', name: 'email', autocomplete: 'username', required: true });
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const errors = h('div', { class: 'form-errors' });
  const submit = h('button', { type: 'submit' }, 'Sign in');
  // The session cookie is `__Host-` and Secure: a browser keeps it only over HTTPS or on localhost. Say so before
  // the user signs in for nothing.
  const insecure = window.isSecureContext ? null : h('p', { class: 'notice error', role: 'alert', id: 'insecure-origin' },
    `This page came over plain HTTP from ${location.host}. Browsers keep Steward's session cookie only over HTTPS or on localhost, `
    + 'so a sign-in here would not last. Serve Steward behind HTTPS, or open the console as http://localhost:'
    + `${location.port || '80'}/console on the server itself.`);
  const providers = h('div', { class: 'stack', id: 'providers' });
  const form = h('form', { class: 'stack', 'aria-labelledby': 'signin-title' },
    h('h1', { id: 'signin-title' }, 'Sign in to Steward'), insecure,
    field('Email', email), field('Password', password), errors, submit, providers);
  providerButtons(providers);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const answer = await run(submit, errors, () => api.post('/auth/login', { email: email.value, password: password.value, cookie: true }, { quietAuth: true }));
    if (!answer) { lockoutHint(errors); password.select(); return; }
    if (answer.mfaRequired) { mfaStep(area, ctx, answer.mfaToken); return; }
    await finish(answer, ctx, errors);
  });
  clear(area, form);
  email.focus();
}

function mfaStep(area, ctx, mfaToken) {
  const code = h('input', { type: 'text', name: 'code', autocomplete: 'one-time-code', inputmode: 'text', required: true, maxlength: 64 });
  const errors = h('div', { class: 'form-errors' });
  const submit = h('button', { type: 'submit' }, 'Verify');
  const back = h('button', { type: 'button', class: 'secondary' }, 'Start again');
  back.addEventListener('click', () => passwordStep(area, ctx));
  const form = h('form', { class: 'stack', 'aria-labelledby': 'mfa-title' },
    h('h1', { id: 'mfa-title' }, 'Two-step verification'),
    h('p', {}, 'Enter the 6-digit code from your authenticator app, or one of your recovery codes.'),
    field('Code', code), errors, h('div', { class: 'row' }, submit, back));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const answer = await run(submit, errors, () => api.post('/auth/mfa/verify', { mfaToken, code: code.value.trim() }, { quietAuth: true }));
    if (!answer) { lockoutHint(errors); code.select(); return; }
    await finish(answer, ctx, errors);
  });
  clear(area, form);
  code.focus();
}

// A locked account is a 423 whose detail says until when; the problem view shows it, and we add what to do.
function lockoutHint(errors) {
  if (/locked|too many failed/i.test(errors.textContent)) {
    errors.append(notice('Too many failed attempts. Wait until the lock ends, or ask an administrator to unlock the account.', 'error'));
  }
}

async function finish(answer, ctx, errors) {
  setCSRF(answer.csrfToken);
  try {
    await ctx.signedIn();
  } catch (error) {
    errors.replaceChildren(problemView(error));
  }
}

export function accountPage(main, params, ctx) {
  const user = ctx.me.user;
  const sessions = h('div');
  const methods = h('div');
  // Back from linking an identity (the provider returned to /console/oauth): say how it went.
  const back = new URLSearchParams(location.search);
  let outcome = null;
  if (back.get('linked')) outcome = notice(`Linked your ${back.get('linked')} identity. You can now sign in with it.`, 'ok');
  else if (back.get('error')) outcome = notice(back.get('error_description') || back.get('error'), 'error');
  if (location.pathname.replace(/\/+$/, '') === '/console/oauth') history.replaceState(null, '', '/console/account');
  main.append(pageHeader('My account'), outcome,
    section('Profile', h('dl', { class: 'facts' },
      h('dt', {}, 'Email'), h('dd', {}, user.email),
      h('dt', {}, 'Username'), h('dd', {}, user.username),
      h('dt', {}, 'Roles'), h('dd', {}, ctx.me.roles.join(', ') || '—'),
      h('dt', {}, 'Two-step verification'), h('dd', {}, user.mfaEnabled ? 'On' : 'Off'),
      h('dt', {}, 'Last sign-in'), h('dd', {}, fmtTime(user.lastLoginAt)))),
    section('Sign-in methods', methods),
    section('My sessions', sessions));
  loadMethods(methods);
  loadSessions(sessions, ctx);
}

// Linked identities, each with unlink (the server refuses the last way to sign in), and a link button per provider.
async function loadMethods(area) {
  try {
    const [identities, providers] = await Promise.all([api.get('/auth/identities'), api.get('/auth/providers')]);
    const errors = h('div');
    const names = Object.fromEntries(providers.items.map((provider) => [provider.id, provider.name]));
    const rows = identities.items.map((identity) => h('tr', { 'data-identity': identity.id },
      h('td', { 'data-label': 'Provider' }, names[identity.provider] || identity.provider),
      h('td', { 'data-label': 'Email' }, identity.email || '—'),
      h('td', { 'data-label': 'Linked' }, fmtTime(identity.linkedAt)),
      h('td', { 'data-label': 'Last used' }, identity.lastLoginAt ? ago(identity.lastLoginAt) : 'never'),
      h('td', { 'data-label': 'Actions' }, confirmButton('Unlink', 'Confirm unlink', async (button) => {
        const done = await run(button, errors, () => api.del(`/auth/identities/${identity.id}`));
        if (done === undefined && errors.childElementCount) return;
        loadMethods(area);
      }))));
    const linkButtons = providers.items.map((provider) => {
      const button = h('button', { type: 'button', class: 'secondary', 'data-link': provider.id }, `Link ${provider.name}`);
      button.addEventListener('click', async () => {
        const answer = await run(button, errors, () => api.post(`/auth/oauth/${encodeURIComponent(provider.id)}/link`, { redirect: oauthReturn() }));
        if (answer) location.assign(answer.authorizationUrl);
      });
      return button;
    });
    clear(area,
      rows.length
        ? h('table', {}, h('thead', {}, h('tr', {}, ['Provider', 'Email', 'Linked', 'Last used', ''].map((label) => h('th', { scope: 'col' }, label)))), h('tbody', {}, rows))
        : h('p', { class: 'muted' }, providers.items.length ? 'No identity provider is linked to this account.' : 'Only passwords: no identity provider is configured.'),
      linkButtons.length ? h('div', { class: 'row' }, linkButtons) : null, errors);
  } catch (error) {
    clear(area, problemView(error));
  }
}

async function loadSessions(area, ctx) {
  try {
    const list = await api.get('/auth/sessions');
    const errors = h('div');
    const rows = list.items.map((session) => h('tr', {},
      h('td', { 'data-label': 'Device' }, session.userAgent || 'unknown', session.current ? h('span', { class: 'badge s-succeeded' }, 'this one') : null),
      h('td', { 'data-label': 'Address' }, session.ipAddress || '—'),
      h('td', { 'data-label': 'Signed in' }, fmtTime(session.createdAt)),
      h('td', { 'data-label': 'Last seen' }, ago(session.lastSeenAt)),
      h('td', { 'data-label': 'Actions' }, confirmButton(session.current ? 'Sign out here' : 'Revoke', 'Confirm revoke', async (button) => {
        const done = await run(button, errors, () => api.del(`/auth/sessions/${session.id}`));
        if (done === undefined && errors.childElementCount) return;
        if (session.current) { ctx.signedOut(); return; }
        loadSessions(area, ctx);
      }))));
    clear(area, h('table', {}, h('thead', {}, h('tr', {}, ['Device', 'Address', 'Signed in', 'Last seen', ''].map((label) => h('th', { scope: 'col' }, label)))),
      h('tbody', {}, rows)), errors);
  } catch (error) {
    clear(area, problemView(error));
  }
}
