// A form generated from a skill's inputSchema (the JSON Schema subset Steward accepts): strings, numbers,
// integers, booleans, enums, nested objects and arrays, with a raw JSON editor as the fallback for anything else.
// And a check of a schema against that subset, so the editor can refuse before saving, as the server would.
import { h, uid, field, parseJSON } from './ui.js';

const KEYWORDS = new Set(['type', 'properties', 'required', 'items', 'enum', 'const', 'minimum', 'maximum', 'minLength',
  'maxLength', 'pattern', 'additionalProperties', '$schema', 'title', 'description', 'default', 'examples']);
const TYPES = new Set(['object', 'array', 'string', 'number', 'integer', 'boolean', 'null']);

/** The problems of a schema against Steward's subset, each { field, message }; empty when it is fine. */
export function schemaProblems(schema, path = 'inputSchema') {
  const problems = [];
  if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) {
    return [{ field: path, message: 'must be a JSON object' }];
  }
  for (const [key, value] of Object.entries(schema)) {
    const at = `${path}.${key}`;
    if (!KEYWORDS.has(key)) { problems.push({ field: at, message: `the keyword ${key} is not supported` }); continue; }
    if (key === 'type') {
      const types = Array.isArray(value) ? value : [value];
      if (!types.length || types.some((type) => !TYPES.has(type))) problems.push({ field: at, message: 'must name JSON types' });
    } else if (key === 'properties') {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) problems.push({ field: at, message: 'must be an object of schemas' });
      else for (const [name, sub] of Object.entries(value)) problems.push(...schemaProblems(sub, `${at}.${name}`));
    } else if (key === 'items') {
      problems.push(...schemaProblems(value, at));
    } else if (key === 'additionalProperties') {
      if (typeof value !== 'boolean') problems.push(...schemaProblems(value, at));
    } else if (key === 'required') {
      if (!Array.isArray(value) || value.some((name) => typeof name !== 'string')) problems.push({ field: at, message: 'must be a list of property names' });
    } else if (key === 'enum') {
      if (!Array.isArray(value) || !value.length) problems.push({ field: at, message: 'must be a non-empty list' });
    } else if (['minimum', 'maximum'].includes(key)) {
      if (typeof value !== 'number') problems.push({ field: at, message: 'must be a number' });
    } else if (['minLength', 'maxLength'].includes(key)) {
      if (!Number.isInteger(value) || value < 0) problems.push({ field: at, message: 'must be a non-negative integer' });
    } else if (key === 'pattern') {
      if (typeof value !== 'string') problems.push({ field: at, message: 'must be a string' });
      else {
        try { new RegExp(value, 'u'); } catch { problems.push({ field: at, message: 'is not a valid regular expression' }); }
        if (/\((?:[^()\\]|\\.)*[+*}]\)[+*{]/.test(value)) problems.push({ field: at, message: 'repeats a group that itself repeats without bound' });
      }
    }
  }
  return problems;
}

function typeOf(schema) {
  if (!schema || typeof schema !== 'object') return 'any';
  if (schema.enum) return 'enum';
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== 'null') : schema.type;
  if (type) return type;
  if (schema.properties) return 'object';
  if (schema.items) return 'array';
  return 'any';
}

/**
 * Builds the form. Returns { element, value } where value() gives the input, or throws an Error (with title and
 * detail) naming the first field that is not right.
 */
export function schemaForm(schema, initial) {
  const raw = h('textarea', { rows: 10, class: 'code', spellcheck: 'false' }, JSON.stringify(initial ?? {}, null, 2));
  const rawBox = h('div', { class: 'raw', hidden: true }, field('Input as JSON', raw, 'Used instead of the form while shown.'));
  const simple = typeOf(schema) === 'object' && schema.properties;
  const built = simple ? control(schema, 'input', initial ?? {}, true) : null;
  const toggle = h('button', { type: 'button', class: 'secondary', 'aria-pressed': String(!simple) }, 'Edit as JSON');
  let useRaw = !simple;
  rawBox.hidden = !useRaw;
  if (built) built.element.hidden = useRaw;
  toggle.addEventListener('click', () => {
    if (!useRaw && built) {
      try { raw.value = JSON.stringify(built.read(), null, 2); } catch { /* keep what the text holds */ }
    }
    useRaw = !useRaw || !built;
    rawBox.hidden = !useRaw;
    if (built) built.element.hidden = useRaw;
    toggle.setAttribute('aria-pressed', String(useRaw));
    toggle.textContent = useRaw ? 'Use the form' : 'Edit as JSON';
  });
  if (!built) toggle.hidden = true;
  const element = h('div', { class: 'schema-form' }, built ? built.element : null, rawBox, toggle);
  return {
    element,
    value() {
      if (useRaw || !built) {
        return parseJSON(raw.value, 'The input') ?? {};
      }
      return built.read();
    },
  };
}

function invalid(path, message) {
  return Object.assign(new Error(message), { title: 'Check the form', detail: `${path}: ${message}`, errors: [{ field: path, message }] });
}

// One control per schema node: { element, read() }.
function control(schema, path, value, required, label) {
  const type = typeOf(schema);
  const title = label ?? schema.title ?? path;
  const hint = schema.description;
  if (type === 'object') {
    const properties = schema.properties || {};
    const needed = new Set(schema.required || []);
    // Stored schemas are canonical JSON (keys sorted), so the author's order is gone: required fields come first.
    const ordered = Object.entries(properties).sort(([a], [b]) => Number(needed.has(b)) - Number(needed.has(a)));
    const children = ordered.map(([name, sub]) =>
      [name, control(sub, `${path}.${name}`, value ? value[name] : undefined, needed.has(name), sub.title || name)]);
    const legend = path === 'input' ? null : h('legend', {}, title);
    const element = h(path === 'input' ? 'div' : 'fieldset', { class: 'object' }, legend, children.map(([, child]) => child.element));
    return {
      element,
      read() {
        const result = {};
        for (const [name, child] of children) {
          const childValue = child.read();
          if (childValue !== undefined) result[name] = childValue;
          else if (needed.has(name)) throw invalid(`${path}.${name}`, 'is required');
        }
        return result;
      },
    };
  }
  if (type === 'array') {
    const list = h('ol', { class: 'array-items' });
    const rows = [];
    const add = (itemValue) => {
      const item = control(schema.items || {}, `${path}[${rows.length}]`, itemValue, true, `Item ${rows.length + 1}`);
      const remove = h('button', { type: 'button', class: 'secondary small' }, 'Remove');
      const row = { item, li: h('li', {}, item.element, remove) };
      remove.addEventListener('click', () => { rows.splice(rows.indexOf(row), 1); row.li.remove(); });
      rows.push(row);
      list.append(row.li);
    };
    (Array.isArray(value) ? value : []).forEach(add);
    const addButton = h('button', { type: 'button', class: 'secondary small' }, `Add to ${title}`);
    addButton.addEventListener('click', () => add(undefined));
    return {
      element: h('fieldset', { class: 'array' }, h('legend', {}, title), hint ? h('small', { class: 'hint' }, hint) : null, list, addButton),
      read() {
        const items = rows.map((row) => row.item.read());
        if (!items.length && !required) return undefined;
        return items;
      },
    };
  }
  if (type === 'boolean') {
    const input = h('input', { type: 'checkbox', id: uid(), checked: value ?? schema.default ?? false });
    return {
      element: h('div', { class: 'field check' }, input, h('label', { for: input.id }, title), hint ? h('small', { class: 'hint' }, hint) : null),
      read: () => input.checked,
    };
  }
  if (type === 'enum') {
    const options = schema.enum.map((option) => [JSON.stringify(option), String(option)]);
    const input = h('select', { required }, required ? null : h('option', { value: '' }, '—'),
      options.map(([optionValue, text]) => h('option', { value: optionValue, selected: value !== undefined && JSON.stringify(value) === optionValue }, text)));
    return {
      element: field(required ? `${title} *` : title, input, hint),
      read: () => (input.value === '' ? undefined : JSON.parse(input.value)),
    };
  }
  if (type === 'number' || type === 'integer') {
    const input = h('input', { type: 'number', step: type === 'integer' ? '1' : 'any', min: schema.minimum, max: schema.maximum, required, value: value ?? schema.default ?? '' });
    return {
      element: field(required ? `${title} *` : title, input, hint),
      read() {
        if (input.value === '') return undefined;
        const number = Number(input.value);
        if (!Number.isFinite(number) || (type === 'integer' && !Number.isInteger(number))) throw invalid(path, `must be ${type === 'integer' ? 'an integer' : 'a number'}`);
        if (schema.minimum !== undefined && number < schema.minimum) throw invalid(path, `must be at least ${schema.minimum}`);
        if (schema.maximum !== undefined && number > schema.maximum) throw invalid(path, `must be at most ${schema.maximum}`);
        return number;
      },
    };
  }
  if (type === 'string') {
    const long = (schema.maxLength || 0) > 200;
    const input = h(long ? 'textarea' : 'input', { type: long ? null : 'text', required, minlength: schema.minLength, maxlength: schema.maxLength, value: value ?? schema.default ?? '' });
    if (long) input.value = value ?? schema.default ?? '';
    return {
      element: field(required ? `${title} *` : title, input, hint),
      read() {
        // An empty box is a missing value: refused here when the field is required, left out when it is not.
        if (input.value === '') {
          if (required && !(schema.minLength === 0)) throw invalid(path, 'is required');
          return undefined;
        }
        if (schema.minLength !== undefined && input.value.length < schema.minLength) throw invalid(path, `must be at least ${schema.minLength} characters`);
        return input.value;
      },
    };
  }
  // Anything else (no type, several types, null): a small JSON field.
  const input = h('textarea', { rows: 2, class: 'code', spellcheck: 'false' }, value === undefined ? '' : JSON.stringify(value));
  return {
    element: field(`${title} (JSON)`, input, hint),
    read() {
      if (input.value.trim() === '') return undefined;
      try { return JSON.parse(input.value); } catch { throw invalid(path, 'is not valid JSON'); }
    },
  };
}
