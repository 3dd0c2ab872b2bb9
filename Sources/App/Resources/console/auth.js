// Sign in (password, then the MFA step when the account has it), and the signed-in user's own account: sessions
// with revoke.
import { api, setCSRF } from './api.js';
import { h, clear, field, problemView, pageHeader, section, fmtTime, ago, confirmButton, run, notice } from './ui.js';

export function signInPage(main, ctx) {
  const area = h('div', { class: 'signin-box card' });
  main.append(area);
  passwordStep(area, ctx);
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
  const form = h('form', { class: 'stack', 'aria-labelledby': 'signin-title' },
    h('h1', { id: 'signin-title' }, 'Sign in to Steward'), insecure,
    field('Email', email), field('Password', password), errors, submit);
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
  main.append(pageHeader('My account'),
    section('Profile', h('dl', { class: 'facts' },
      h('dt', {}, 'Email'), h('dd', {}, user.email),
      h('dt', {}, 'Username'), h('dd', {}, user.username),
      h('dt', {}, 'Roles'), h('dd', {}, ctx.me.roles.join(', ') || '—'),
      h('dt', {}, 'Two-step verification'), h('dd', {}, user.mfaEnabled ? 'On' : 'Off'),
      h('dt', {}, 'Last sign-in'), h('dd', {}, fmtTime(user.lastLoginAt)))),
    section('My sessions', sessions));
  loadSessions(sessions, ctx);
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
