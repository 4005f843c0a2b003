// Reference side of test_cht_emu_outbound_mapping.py: the documented cht-core outbound semantics run
// on node's own `vm` (fresh context, only `doc`), object-path 0.11-style get/set, orderedStringify hash.
// Reads [{doc, mapping, key, relevant_to}] on stdin, writes [{payload, hash, relevant} | {error}].
'use strict';
const vm = require('vm');
const crypto = require('crypto');

let objectPath;
try {
  objectPath = require('object-path'); // the real library when it is resolvable
} catch (e) {
  const own = (o, k) => Object.prototype.hasOwnProperty.call(o, k);
  const key = k => (String(parseInt(k)) === k ? parseInt(k) : k);
  objectPath = {
    get(obj, path) {
      const parts = path.split('.').map(key);
      let cur = obj;
      for (const p of parts) {
        if (cur === null || cur === undefined) return undefined;
        const next = (typeof p === 'number' && Array.isArray(cur)) || own(Object(cur), p) ? cur[p] : undefined;
        if (next === undefined) return undefined;
        cur = next;
      }
      return cur;
    },
    set(obj, path, value) {
      const parts = path.split('.').map(key);
      let cur = obj;
      parts.forEach((p, i) => {
        if (i === parts.length - 1) { cur[p] = value; return; }
        const has = (typeof p === 'number' && Array.isArray(cur)) || own(Object(cur), p);
        if (!has || cur[p] === undefined) cur[p] = typeof parts[i + 1] === 'number' ? [] : {};
        cur = cur[p];
      });
    },
  };
}

const mapDoc = (doc, mapping, name) => {
  const out = {};
  for (const dest of Object.keys(mapping)) {
    const conf = typeof mapping[dest] === 'string'
      ? { path: mapping[dest], required: true }
      : { path: mapping[dest].path, expr: mapping[dest].expr, required: !mapping[dest].optional };
    let value;
    if (conf.expr) {
      try {
        value = vm.runInNewContext(conf.expr, { doc });
      } catch (err) {
        throw new Error(`Mapping error for '${name}/${dest}' JS error on source document: '${doc._id}': ${err}`);
      }
    } else if (conf.path) {
      value = objectPath.get({ doc }, conf.path);
    } else {
      throw new Error(`Mapping error for '${name}/${dest}' either 'expr' or 'path' is required: '${doc._id}'`);
    }
    if (conf.required && value === undefined) {
      const problem = conf.expr ? 'expr evaluated to undefined' : `cannot find '${conf.path}' on source document`;
      throw new Error(`Mapping error for '${name}/${dest}' on source document '${doc._id}': ${problem}`);
    }
    if (value !== undefined) objectPath.set(out, dest, value);
  }
  return out;
};

const ordered = thing => {
  if (Object.prototype.toString.call(thing) === '[object Object]') {
    return `{${Object.keys(thing).sort().map(k => `"${k}":${ordered(thing[k])}`).join(',')}}`;
  }
  return JSON.stringify(thing);
};
const hash = p => crypto.createHash('sha256').update(ordered(JSON.parse(JSON.stringify(p)))).digest('hex');

const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const results = cases.map(c => {
  const res = {};
  try {
    if (c.relevant_to !== undefined) res.relevant = !!vm.runInNewContext(c.relevant_to, { doc: c.doc });
    if (c.mapping) {
      const payload = mapDoc(c.doc, c.mapping, c.key);
      res.body = JSON.stringify(payload);
      res.hash = hash(payload);
    }
  } catch (err) {
    res.error = String(err.message || err);
  }
  return res;
});
process.stdout.write(JSON.stringify(results));
