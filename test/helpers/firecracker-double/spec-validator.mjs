// Validates Firecracker API requests against the official Swagger 2.0 spec
// (../shared/reference/firecracker-api-v1.16.1.yaml), parsed with `yaml`.
//
// JSON-schema subset implemented (everything the spec's request bodies use):
//   $ref (to #/definitions/...), type (object, string, integer, number,
//   boolean, array), required, properties, enum, minimum, maximum, items,
//   additionalProperties (true / false / a schema), format int32 / int64
//   (integer range) and any other `format` on a string as an anchored regular
//   expression (MmdsConfig.ipv4_address is written that way in the spec).
// Unknown properties are REJECTED unless the schema says
// `additionalProperties: true` (or gives a schema): Firecracker deserialises
// every request body with serde's `deny_unknown_fields`, so a misspelt field
// is a 400 there too, although Swagger 2.0's default would allow it.
// `readOnly` properties (Error.fault_message) are rejected in requests.
// Not implemented (unused by request bodies): allOf/anyOf/oneOf, pattern,
// minLength/maxLength, minItems/maxItems, uniqueItems.

import { readFileSync } from 'node:fs';
import { parse } from 'yaml';

const INT_RANGE = { int32: [-(2 ** 31), 2 ** 31 - 1], int64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER] };

export class Spec {
  constructor(file) {
    this.doc = parse(readFileSync(file, 'utf8'));
    if (this.doc.swagger !== '2.0') throw new Error(`${file}: not a Swagger 2.0 document`);
    // [regex, template, pathItem], e.g. /drives/{drive_id} -> ^/drives/([^/]+)$
    this.routes = Object.entries(this.doc.paths).map(([template, item]) => {
      const names = [];
      const re = new RegExp(`^${template.replace(/\{([^}]+)\}/g, (_, n) => { names.push(n); return '([^/]+)'; })}$`);
      return { re, template, item, names };
    });
  }

  /** The operation for a method and path, with path parameters, or an error text. */
  route(method, path) {
    for (const r of this.routes) {
      const m = r.re.exec(path);
      if (!m) continue;
      const op = r.item[method.toLowerCase()];
      if (!op) return { error: `Invalid request method and/or path: ${method} ${path}.` };
      const params = {};
      r.names.forEach((n, i) => { params[n] = decodeURIComponent(m[i + 1]); });
      return { template: r.template, op, params };
    }
    return { error: `Invalid request method and/or path: ${method} ${path}.` };
  }

  /** Errors (strings) of a request body against its operation; [] when valid. */
  validateBody(op, body, hasBody) {
    const param = (op.parameters ?? []).find((p) => p.in === 'body');
    if (!param) return hasBody ? ['this request takes no body'] : [];
    if (!hasBody) return param.required ? ['Empty request body (required by the spec)'] : [];
    return this.validate(param.schema, body, 'body');
  }

  /** Path parameters: the spec declares them as strings; Firecracker also wants ids it can use. */
  validateParams(op, params) {
    const errs = [];
    for (const p of (op.parameters ?? []).filter((x) => x.in === 'path')) {
      const v = params[p.name];
      if (p.required && (v === undefined || v === '')) errs.push(`path parameter ${p.name} is required`);
      else if (v !== undefined && !/^[A-Za-z0-9_-]{1,64}$/.test(v)) errs.push(`path parameter ${p.name}=${JSON.stringify(v)}: only alphanumerics, '_' and '-' (at most 64)`);
    }
    return errs;
  }

  resolve(schema) {
    let s = schema;
    while (s && s.$ref) {
      const m = /^#\/definitions\/(.+)$/.exec(s.$ref);
      if (!m || !this.doc.definitions[m[1]]) throw new Error(`unresolvable $ref ${s.$ref}`);
      s = this.doc.definitions[m[1]];
    }
    return s;
  }

  validate(schema, value, where) {
    const s = this.resolve(schema);
    if (!s) return [];
    const errs = [];
    const type = s.type ?? (s.properties ? 'object' : undefined);
    const actual = Array.isArray(value) ? 'array' : value === null ? 'null' : typeof value;
    switch (type) {
      case 'object':
        if (actual !== 'object') return [`${where}: expected an object, got ${actual}`];
        break;
      case 'array':
        if (actual !== 'array') return [`${where}: expected an array, got ${actual}`];
        break;
      case 'integer':
        if (actual !== 'number' || !Number.isInteger(value)) return [`${where}: expected an integer, got ${JSON.stringify(value)}`];
        break;
      case 'number':
        if (actual !== 'number') return [`${where}: expected a number, got ${actual}`];
        break;
      case 'string':
      case 'boolean':
        if (actual !== type) return [`${where}: expected a ${type}, got ${actual}`];
        break;
      case undefined:
        break;
      default:
        throw new Error(`spec uses unsupported type ${type} at ${where}`);
    }
    if (s.enum && !s.enum.includes(value)) errs.push(`${where}: ${JSON.stringify(value)} is not one of ${s.enum.map((e) => JSON.stringify(e)).join(', ')}`);
    if (typeof value === 'number') {
      if (s.minimum !== undefined && value < s.minimum) errs.push(`${where}: ${value} is below the minimum ${s.minimum}`);
      if (s.maximum !== undefined && value > s.maximum) errs.push(`${where}: ${value} is above the maximum ${s.maximum}`);
      const range = INT_RANGE[s.format];
      if (range && (value < range[0] || value > range[1])) errs.push(`${where}: ${value} does not fit ${s.format}`);
    }
    if (typeof value === 'string' && s.format && !INT_RANGE[s.format]) {
      if (!new RegExp(`^(?:${s.format})$`).test(value)) errs.push(`${where}: ${JSON.stringify(value)} does not match the format ${s.format}`);
    }
    if (type === 'array' && s.items) value.forEach((v, i) => errs.push(...this.validate(s.items, v, `${where}[${i}]`)));
    if (type === 'object') {
      const props = s.properties ?? {};
      for (const r of s.required ?? []) if (!(r in value)) errs.push(`${where}: missing required field ${r}`);
      for (const [k, v] of Object.entries(value)) {
        const p = props[k];
        if (p) {
          if (this.resolve(p)?.readOnly) errs.push(`${where}.${k}: read-only field`);
          else errs.push(...this.validate(p, v, `${where}.${k}`));
        } else if (s.additionalProperties === true) {
          // free-form (MMDS contents)
        } else if (s.additionalProperties && typeof s.additionalProperties === 'object') {
          errs.push(...this.validate(s.additionalProperties, v, `${where}.${k}`));
        } else {
          errs.push(`${where}: unknown field ${k}`);
        }
      }
    }
    return errs;
  }
}
