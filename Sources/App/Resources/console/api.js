// The console's only way to the server: the public HTTP API, in cookie mode. The session cookie is HttpOnly and
// travels by itself; unsafe requests add the CSRF token that sign-in returned, kept in localStorage so that
// every tab of the console (and a reload) can use it. Errors become Problem objects carrying the RFC 9457 body.

const CSRF_KEY = 'steward.csrf';
const BASE = '/api/v1';

export class Problem extends Error {
  constructor(status, body) {
    const title = (body && body.title) || (status ? `HTTP ${status}` : 'Network error');
    super((body && body.detail) || title);
    this.status = status;
    this.title = title;
    this.detail = (body && body.detail) || '';
    this.code = body && body.code;
    this.errors = (body && Array.isArray(body.errors)) ? body.errors : [];
    this.retryAfter = body && body.retryAfter;
  }
}

export function setCSRF(token) {
  if (token) localStorage.setItem(CSRF_KEY, token); else localStorage.removeItem(CSRF_KEY);
}

const listeners = new Set();
/** Called with no argument when the server says the session is gone (401 on a signed-in request). */
export function onSignedOut(fn) { listeners.add(fn); }

async function request(method, path, body, { signal, quietAuth = false } = {}) {
  const headers = { Accept: 'application/json, application/problem+json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && method !== 'HEAD') {
    const token = localStorage.getItem(CSRF_KEY);
    if (token) headers['X-CSRF-Token'] = token;
  }
  let response;
  try {
    response = await fetch(BASE + path, {
      method, headers, credentials: 'same-origin', signal, cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new Problem(0, { title: 'The server cannot be reached', detail: 'Check the connection and try again.' });
  }
  if (response.status === 204) return null;
  const type = response.headers.get('Content-Type') || '';
  const data = type.includes('json') ? await response.json().catch(() => null) : null;
  if (!response.ok) {
    const problem = new Problem(response.status, data || { title: response.statusText || `HTTP ${response.status}` });
    const retry = response.headers.get('Retry-After');
    if (retry) problem.retryAfter = Number(retry);
    if (response.status === 401 && !quietAuth) listeners.forEach((fn) => fn());
    throw problem;
  }
  return data;
}

/** Adds only the parameters that have a value. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== '') search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

export const api = {
  get: (path, options) => request('GET', path, undefined, options),
  post: (path, body, options) => request('POST', path, body, options),
  patch: (path, body, options) => request('PATCH', path, body, options),
  put: (path, body, options) => request('PUT', path, body, options),
  del: (path, options) => request('DELETE', path, undefined, options),
};

/**
 * Follows the event stream (Server-Sent Events, with the cookie). `onEvent(event)` gets each event's JSON; the
 * browser reconnects by itself with Last-Event-ID. Returns a function that closes the stream.
 */
export function follow({ types, resourceId } = {}, onEvent, onState) {
  const source = new EventSource(`${BASE}/events/stream${query({ types, resourceId })}`, { withCredentials: true });
  const handle = (message) => {
    try { onEvent(JSON.parse(message.data)); } catch { /* a frame that is not an event */ }
  };
  source.onmessage = handle;
  source.onopen = () => onState && onState('live');
  source.onerror = () => onState && onState(source.readyState === EventSource.CLOSED ? 'closed' : 'reconnecting');
  const known = (types || '').split(',').filter((type) => type && !type.endsWith('*'));
  // Typed frames (`event: execution.progress`) reach only listeners of that type; listen for the prefixes we use.
  const statuses = ['queued', 'running', 'succeeded', 'failed', 'cancelled', 'rolled_back'];
  const names = new Set([...known, 'execution.progress', 'workflow.run.started',
    ...statuses.map((status) => `execution.${status}`), ...statuses.map((status) => `workflow.run.${status}`)]);
  for (const name of names) source.addEventListener(name, handle);
  return () => source.close();
}
