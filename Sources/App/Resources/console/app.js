// The console's shell: who is signed in, the navigation (only what the user's permissions allow), and a router
// over /console/... addresses. Each page is a function render(main, params, ctx) that may return a cleanup.
import { api, onSignedOut, setCSRF } from './api.js';
import { h, clear, problemView } from './ui.js';
import { signInPage, accountPage } from './auth.js';
import { dashboardPage } from './dashboard.js';
import { skillsPage, skillPage, skillEditPage, skillRunPage } from './skills.js';
import { executionsPage, executionPage } from './executions.js';
import { workflowsPage, workflowPage, runPage } from './workflows.js';
import { schedulesPage, scheduleEditPage, schedulePage } from './schedules.js';
import { webhooksPage, webhookPage } from './webhooks.js';
import { usersPage, userPage, apiKeysPage, auditPage, aboutPage } from './admin.js';

// Order matters: the first pattern that matches wins. `nav` puts a route in the menu.
const routes = [
  { path: '', title: 'Dashboard', render: dashboardPage, nav: true },
  { path: 'skills', title: 'Skills', perm: 'skills:read', render: skillsPage, nav: true },
  { path: 'skills/new', title: 'New skill', perm: 'skills:write', render: skillEditPage },
  { path: 'skills/:skill/edit', title: 'Edit skill', perm: 'skills:write', render: skillEditPage },
  { path: 'skills/:skill/run', title: 'Run skill', perm: 'skills:execute', render: skillRunPage },
  { path: 'skills/:skill', title: 'Skill', perm: 'skills:read', render: skillPage },
  { path: 'executions', title: 'Executions', perm: 'executions:read', render: executionsPage, nav: true },
  { path: 'executions/:id', title: 'Execution', perm: 'executions:read', render: executionPage },
  { path: 'workflows', title: 'Workflows', perm: 'workflows:read', feature: 'workflows', render: workflowsPage, nav: true },
  { path: 'workflows/:id/runs/:runId', title: 'Workflow run', perm: 'workflows:read', render: runPage },
  { path: 'workflows/:id', title: 'Workflow', perm: 'workflows:read', render: workflowPage },
  { path: 'schedules', title: 'Schedules', perm: 'executions:read', feature: 'schedules', render: schedulesPage, nav: true },
  { path: 'schedules/new', title: 'New schedule', perm: 'skills:execute', render: scheduleEditPage },
  { path: 'schedules/:id', title: 'Schedule', perm: 'executions:read', render: schedulePage },
  { path: 'webhooks', title: 'Webhooks', perm: 'webhooks:manage', feature: 'webhooks', render: webhooksPage, nav: true },
  { path: 'webhooks/:id', title: 'Webhook', perm: 'webhooks:manage', render: webhookPage },
  { path: 'users', title: 'Users', perm: 'users:read', render: usersPage, nav: true },
  { path: 'users/:id', title: 'User', perm: 'users:read', render: userPage },
  { path: 'api-keys', title: 'API keys', perm: 'api-keys:manage', render: apiKeysPage, nav: true },
  { path: 'audit', title: 'Audit log', perm: 'audit:read', render: auditPage, nav: true },
  { path: 'about', title: 'About', perm: 'analytics:read', render: aboutPage, nav: true },
  { path: 'account', title: 'My account', render: accountPage },
  // Where an identity-provider link returns (a sign-in's return is handled before there is a session).
  { path: 'oauth', title: 'My account', render: accountPage },
];

const root = document.getElementById('app');
let me = null;
let cleanup = null;
// GET /status: the maintenance message, read-only mode and the feature switches, re-read on every page.
let status = { readOnly: false, maintenanceMessage: null, features: {} };

let shownRoute = null;

async function refreshStatus() {
  const before = JSON.stringify(status.features);
  try { status = await api.get('/status', { quietAuth: true }); } catch { /* keep the last one known */ }
  showStatus();
  // A feature switched on or off since the menu was drawn: draw it again.
  const header = root.querySelector('header.top');
  if (me && header && JSON.stringify(status.features) !== before) header.replaceWith(navigation(shownRoute));
}

// A banner above every page, the sign-in page included, while there is a message or the server is read-only.
function showStatus() {
  const parts = [];
  if (status.maintenanceMessage) parts.push(status.maintenanceMessage);
  if (status.readOnly) parts.push('The server is in read-only mode: you can look around, but changes are refused until maintenance ends.');
  let banner = document.getElementById('maintenance');
  if (!parts.length) { if (banner) banner.remove(); return; }
  if (!banner) {
    banner = h('p', { id: 'maintenance', class: 'notice maintenance', role: 'status' });
    root.prepend(banner);
  }
  banner.textContent = parts.join(' ');
}

const ctx = {
  get me() { return me; },
  can(permission) {
    if (!permission) return true;
    const granted = (me && me.permissions) || [];
    return granted.includes(permission) || granted.includes('admin:full');
  },
  navigate(path, { replace = false } = {}) {
    if (replace) history.replaceState(null, '', path); else history.pushState(null, '', path);
    render();
  },
  async signedIn() {
    me = await api.get('/auth/me');
    render();
  },
  signedOut() {
    me = null;
    setCSRF(null);
    render();
  },
};

function match(pathname) {
  const rest = pathname.replace(/^\/console\/?/, '').replace(/\/+$/, '');
  const parts = rest === '' ? [] : rest.split('/');
  for (const route of routes) {
    const pattern = route.path === '' ? [] : route.path.split('/');
    if (pattern.length !== parts.length) continue;
    const params = {};
    let ok = true;
    pattern.forEach((segment, index) => {
      if (segment.startsWith(':')) params[segment.slice(1)] = decodeURIComponent(parts[index]);
      else if (segment !== parts[index]) ok = false;
    });
    if (ok) return { route, params };
  }
  return null;
}

function navigation(current) {
  const menu = h('ul', { id: 'nav-list' },
    routes.filter((route) => route.nav && ctx.can(route.perm) && status.features[route.feature] !== false).map((route) => {
      const href = route.path ? `/console/${route.path}` : '/console';
      const active = current && (current === route || (route.path && current.path.startsWith(`${route.path}/`)));
      return h('li', {}, h('a', { href, 'aria-current': active ? 'page' : null }, route.title));
    }));
  const toggle = h('button', { type: 'button', class: 'nav-toggle secondary', 'aria-controls': 'nav-list', 'aria-expanded': 'false' }, 'Menu');
  toggle.addEventListener('click', () => {
    const open = toggle.getAttribute('aria-expanded') !== 'true';
    toggle.setAttribute('aria-expanded', String(open));
    menu.classList.toggle('open', open);
  });
  const signOut = h('button', { type: 'button', class: 'secondary', id: 'sign-out' }, 'Sign out');
  signOut.addEventListener('click', async () => {
    signOut.disabled = true;
    try { await api.post('/auth/logout'); } catch { /* the session may already be gone */ }
    ctx.signedOut();
    ctx.navigate('/console', { replace: true });
  });
  const name = me.user.fullName || me.user.username || me.user.email;
  return h('header', { class: 'top' },
    h('a', { class: 'brand', href: '/console' }, h('img', { src: document.querySelector('link[rel=icon]').href, alt: '', width: 24, height: 24 }), 'Steward'),
    toggle,
    h('nav', { 'aria-label': 'Main' }, menu),
    h('div', { class: 'who' }, h('a', { href: '/console/account', id: 'account-link' }, name), signOut));
}

function render() {
  refreshStatus();
  if (cleanup) { try { cleanup(); } catch { /* a page's cleanup must not stop the next page */ } cleanup = null; }
  if (!me) {
    clear(root, h('main', { id: 'main', class: 'signin' }));
    cleanup = signInPage(root.querySelector('main'), ctx) || null;
    document.title = 'Sign in · Steward';
    return;
  }
  const found = match(location.pathname);
  shownRoute = found && found.route;
  const main = h('main', { id: 'main', tabindex: '-1' });
  clear(root, navigation(found && found.route), main);
  if (!found) {
    document.title = 'Not found · Steward';
    main.append(h('h1', {}, 'Not found'), h('p', {}, 'There is no console page at this address. '), h('a', { href: '/console' }, 'Go to the dashboard'));
    return;
  }
  document.title = `${found.route.title} · Steward`;
  if (!ctx.can(found.route.perm)) {
    main.append(h('h1', {}, 'Not allowed'),
      h('p', { class: 'notice error', role: 'alert' }, `Your roles (${me.roles.join(', ') || 'none'}) do not include the permission ${found.route.perm}, which this page needs. Ask an administrator if you need it.`),
      h('a', { href: '/console' }, 'Go to the dashboard'));
    return;
  }
  try {
    cleanup = found.route.render(main, found.params, ctx) || null;
  } catch (error) {
    main.append(problemView(error));
  }
  const heading = main.querySelector('h1');
  if (heading && document.activeElement === document.body) heading.focus({ preventScroll: true });
}

// Links inside the console change the page without a reload.
document.addEventListener('click', (event) => {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const anchor = event.target.closest('a[href]');
  // getAttribute, not .href and .target: on an SVG link (the workflow graph) those are not strings.
  if (!anchor || anchor.getAttribute('target') || anchor.hasAttribute('download')) return;
  const url = new URL(anchor.getAttribute('href'), location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith('/console')) return;
  event.preventDefault();
  ctx.navigate(url.pathname + url.search);
  const heading = root.querySelector('main h1');
  if (heading) heading.focus({ preventScroll: true });
});
window.addEventListener('popstate', render);
onSignedOut(() => { if (me) ctx.signedOut(); });

(async function boot() {
  try {
    me = await api.get('/auth/me', { quietAuth: true });
  } catch (error) {
    me = null;
    if (error.status !== 401) {
      clear(root, h('main', { id: 'main' }, h('h1', {}, 'Steward console'), problemView(error)));
      return;
    }
  }
  render();
})();
