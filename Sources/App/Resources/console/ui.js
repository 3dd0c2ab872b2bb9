// Small DOM helpers: every page builds its elements with h(), so no HTML string is ever parsed (nothing the
// server returns can become markup) and the strict CSP holds (no inline styles or handlers).

let nextId = 0;
export const uid = (prefix = 'f') => `${prefix}-${++nextId}`;

export function h(tag, attrs, ...children) {
  const element = tag.startsWith('svg:')
    ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4))
    : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') element.setAttribute('class', value);
    else if (key === 'text') element.textContent = value;
    else if (key === 'on') for (const [type, fn] of Object.entries(value)) element.addEventListener(type, fn);
    else if (key === 'value' && 'value' in element) element.value = value;
    else if (key === 'checked' || key === 'selected' || key === 'disabled') element[key] = Boolean(value);
    else element.setAttribute(key, value === true ? '' : String(value));
  }
  append(element, children);
  return element;
}

function append(parent, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(parent, child);
    else parent.append(child instanceof Node ? child : String(child));
  }
}

export function clear(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

export function link(href, text, attrs = {}) {
  return h('a', { href, ...attrs }, text);
}

export function fmtTime(iso) {
  if (!iso) return '—';
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

export function ago(iso) {
  if (!iso) return '—';
  const seconds = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  if (seconds < 60) return `${Math.max(seconds, 0)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

export function badge(status) {
  return h('span', { class: `badge s-${String(status || 'none').replace(/[^a-z_]/g, '')}` }, status || '—');
}

// Ids are time-ordered (UUID version 7): ids made close together share their first half, so show the end.
export function shortId(id) {
  return id ? `…${String(id).slice(-8)}` : '—';
}

/** The problem's title and detail (and field errors), never a blank area. */
export function problemView(error) {
  if (error && error.name === 'AbortError') return null;
  const title = (error && error.title) || 'Something went wrong';
  const detail = (error && (error.detail || (!error.title && error.message))) || '';
  return h('div', { class: 'problem', role: 'alert' },
    h('strong', { class: 'problem-title' }, title),
    detail ? h('p', { class: 'problem-detail' }, detail) : null,
    error && error.errors && error.errors.length
      ? h('ul', {}, error.errors.map((e) => h('li', {}, h('code', {}, e.field || ''), ' ', e.message || e.detail || '')))
      : null);
}

export function notice(text, kind = 'info') {
  return h('p', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);
}

export function pageHeader(title, ...actions) {
  return h('header', { class: 'page-header' }, h('h1', { tabindex: '-1' }, title), h('div', { class: 'actions' }, actions));
}

export function section(title, ...children) {
  return h('section', { class: 'card' }, title ? h('h2', {}, title) : null, children);
}

/** A section that takes a whole row of a grid. */
export function wideSection(title, ...children) {
  const element = section(title, ...children);
  element.classList.add('wide');
  return element;
}

export function jsonBlock(value) {
  return h('pre', { class: 'json', tabindex: '0' }, value === undefined ? '—' : JSON.stringify(value, null, 2));
}

/** A labelled control: `control` gets an id, and the label points at it. */
export function field(label, control, hint) {
  if (!control.id) control.id = uid();
  const hintId = hint ? uid('hint') : null;
  if (hintId) control.setAttribute('aria-describedby', hintId);
  return h('div', { class: 'field' }, h('label', { for: control.id }, label), control,
    hint ? h('small', { id: hintId, class: 'hint' }, hint) : null);
}

export function select(options, value, attrs = {}) {
  return h('select', attrs, options.map((option) => {
    const [optionValue, text] = Array.isArray(option) ? option : [option, option];
    return h('option', { value: optionValue, selected: optionValue === value }, text);
  }));
}

/**
 * Runs `action` from a button: the button is disabled meanwhile, and a failure shows in `where` as a problem.
 * Returns the action's result, or undefined after a failure.
 */
export async function run(button, where, action) {
  if (button) button.disabled = true;
  if (where) where.replaceChildren();
  try {
    return await action();
  } catch (error) {
    if (where) where.replaceChildren(problemView(error) || '');
    else throw error;
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

/** A button that asks for a second click before it acts (no modal dialog). */
export function confirmButton(label, confirmLabel, action, attrs = {}) {
  let armed = false;
  let timer;
  const button = h('button', { type: 'button', class: 'danger', ...attrs }, label);
  button.addEventListener('click', async () => {
    if (!armed) {
      armed = true;
      button.textContent = confirmLabel;
      timer = setTimeout(() => { armed = false; button.textContent = label; }, 4000);
      return;
    }
    clearTimeout(timer);
    armed = false;
    button.textContent = label;
    await action(button);
  });
  return button;
}

export function copyButton(text, label = 'Copy') {
  const button = h('button', { type: 'button', class: 'secondary' }, label);
  button.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = 'Copied';
    } catch {
      // No clipboard permission (plain HTTP on another host): select the text instead.
      const target = button.previousElementSibling;
      if (target) { const range = document.createRange(); range.selectNodeContents(target); getSelection().removeAllRanges(); getSelection().addRange(range); }
      button.textContent = 'Selected: press Ctrl+C';
    }
    setTimeout(() => { button.textContent = label; }, 2500);
  });
  return button;
}

/** A secret shown once, with a copy button and a warning. */
export function secretOnce(title, secret) {
  return h('div', { class: 'secret', role: 'status' },
    h('strong', {}, title),
    h('p', {}, 'It is shown this once: copy it now. Steward keeps only a hash.'),
    h('div', { class: 'secret-row' }, h('code', { class: 'secret-value', 'data-secret': '' }, secret), copyButton(secret)));
}

/**
 * A table that pages with the API's cursors: `load(cursor)` returns `{ items, nextCursor }`; "Load more" fetches
 * the next page until nextCursor is null.
 */
export function pagedTable({ columns, load, empty = 'Nothing here yet.', caption }) {
  const body = h('tbody');
  const status = h('div', { class: 'table-status' });
  const more = h('button', { type: 'button', class: 'secondary', hidden: true }, 'Load more');
  let cursor = null;
  let count = 0;
  const table = h('table', {}, caption ? h('caption', {}, caption) : null,
    h('thead', {}, h('tr', {}, columns.map((column) => h('th', { scope: 'col' }, column.label)))), body);
  async function page() {
    more.disabled = true;
    status.replaceChildren(h('span', { class: 'muted' }, 'Loading…'));
    try {
      const result = await load(cursor);
      for (const item of result.items) {
        body.append(h('tr', {}, columns.map((column) => h('td', { 'data-label': column.label }, column.render(item)))));
      }
      count += result.items.length;
      cursor = result.nextCursor;
      more.hidden = !cursor;
      status.replaceChildren(count === 0 ? h('p', { class: 'muted empty' }, empty) : '');
    } catch (error) {
      status.replaceChildren(problemView(error) || '');
    } finally {
      more.disabled = false;
    }
  }
  more.addEventListener('click', page);
  page();
  return h('div', { class: 'table-wrap' }, table, status, more);
}

/** Parses a JSON text field; a mistake becomes a problem (title and detail) naming the field. Empty is undefined. */
export function parseJSON(text, fieldName) {
  try {
    return text.trim() === '' ? undefined : JSON.parse(text);
  } catch (error) {
    throw Object.assign(new Error(error.message), { title: 'Invalid JSON', detail: `${fieldName} is not valid JSON: ${error.message}` });
  }
}

/** Converts a datetime-local value to RFC 3339 (UTC), or undefined when empty. */
export function localToISO(value) {
  if (!value) return undefined;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? undefined : date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}
