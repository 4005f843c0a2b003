#!/usr/bin/env node
/*
 * Apply the `outbound` section of a compiled app_settings.json to CHT docs, the way CHT's
 * mark_for_outbound transition does, and print what would be pushed:
 *
 *   node scripts/outbound-map.js app_settings.json doc1.json [doc2.json ...]
 *   -> {"doc1.json": {"<outbound key>": {"relevant": true, "url": "...", "payload": {...}}}, ...}
 *
 * Semantics (cht-core shared-libs/outbound): `relevant_to` and every mapping `expr` run in a fresh
 * V8 context holding only `doc` (node's vm.runInNewContext); a string mapping is a path; a `path`
 * is read from {doc} through own properties; `optional: true` allows undefined; an undefined
 * value is left out; dotted destination keys nest. A mapping error is reported per key.
 */
const fs = require('fs');
const vm = require('vm');

const run = (source, doc) => vm.runInNewContext(String(source), { doc });

const getPath = (root, path) => path.split('.').reduce((value, segment) => {
  if (value === undefined || value === null) {
    return undefined;
  }
  return Object.prototype.hasOwnProperty.call(Object(value), segment) ? value[segment] : undefined;
}, root);

const setPath = (target, dest, value) => {
  const segments = dest.split('.');
  let node = target;
  segments.forEach((segment, i) => {
    const key = /^\d+$/.test(segment) ? Number(segment) : segment;
    if (i === segments.length - 1) {
      node[key] = value;
      return;
    }
    if (node[key] === undefined) {
      node[key] = /^\d+$/.test(segments[i + 1]) ? [] : {};
    }
    node = node[key];
  });
};

const mapDoc = (config, key, doc) => {
  const payload = {};
  for (const dest of Object.keys(config.mapping)) {
    const rule = typeof config.mapping[dest] === 'string' ? { path: config.mapping[dest] } : config.mapping[dest];
    const required = !rule.optional;
    let value;
    if (rule.expr) {
      try {
        value = run(rule.expr, doc);
      } catch (err) {
        throw new Error(`Mapping error for '${key}/${dest}' JS error on source document: '${doc._id}': ${err}`);
      }
      if (required && value === undefined) {
        throw new Error(`Mapping error for '${key}/${dest}': expr evaluated to undefined`);
      }
    } else if (rule.path) {
      value = getPath({ doc }, rule.path);
      if (required && value === undefined) {
        throw new Error(`Mapping error for '${key}/${dest}': cannot find '${rule.path}' on source document`);
      }
    } else {
      throw new Error(`Mapping error for '${key}/${dest}': either 'expr' or 'path' is required`);
    }
    if (value !== undefined) {
      setPath(payload, dest, value);
    }
  }
  return payload;
};

const main = () => {
  const [settingsPath, ...docPaths] = process.argv.slice(2);
  const settings = JSON.parse(fs.readFileSync(settingsPath, 'utf8'));
  const outbound = settings.outbound || {};
  const result = {};
  for (const docPath of docPaths) {
    const doc = JSON.parse(fs.readFileSync(docPath, 'utf8'));
    result[docPath] = {};
    for (const key of Object.keys(outbound)) {
      const config = outbound[key];
      const entry = { relevant: !!run(config.relevant_to, doc) };
      if (entry.relevant) {
        entry.url = config.destination.base_url.replace(/\/+$/, '') + '/' + config.destination.path.replace(/^\/+/, '');
        try {
          entry.payload = JSON.parse(JSON.stringify(mapDoc(config, key, doc)));
        } catch (err) {
          entry.error = err.message;
        }
      }
      result[docPath][key] = entry;
    }
  }
  process.stdout.write(JSON.stringify(result, null, 2) + '\n');
};

main();
