'use strict';
// Drives the official openhim-mediator-utils against an OpenHIM core (here: ltfu's fake).
// Environment: OPENHIM_API_URL, OPENHIM_USERNAME, OPENHIM_PASSWORD, UTILS ("0.4" = Basic, "0.2" = token),
// MEDIATOR_CONFIG (path of the registration JSON). Prints one JSON line per step; exit 0 when all pass.

const fs = require('fs');
const assert = require('assert');
const axios = require('axios');

const flavour = process.env.UTILS || '0.4';
const utils = flavour === '0.2' ? require('openhim-mediator-utils-token') : require('openhim-mediator-utils');
const mediatorConfig = JSON.parse(fs.readFileSync(process.env.MEDIATOR_CONFIG, 'utf8'));
const options = {
  apiURL: process.env.OPENHIM_API_URL,
  username: process.env.OPENHIM_USERNAME,
  password: process.env.OPENHIM_PASSWORD,
  urn: mediatorConfig.urn,
  trustSelfSigned: false,
};

const step = (name, detail) => console.log(JSON.stringify({ step: name, ok: true, ...detail }));
const call = (fn, ...args) => new Promise((resolve, reject) => fn(...args, (err, res) => (err ? reject(err) : resolve(res))));

// Fail rather than hang.
const guard = setTimeout(() => {
  console.error(JSON.stringify({ ok: false, error: 'timed out' }));
  process.exit(1);
}, 20000);

async function api(method, path, data) {
  // 0.2.x: token headers (needs a prior authenticate, done by registerMediator); 0.4.x: Basic.
  const headers = { ...utils.genAuthHeaders(options), 'Content-Type': 'application/json' };
  return axios({ method, url: options.apiURL + path, data, headers, validateStatus: () => true });
}

async function main() {
  const auth = await call(utils.authenticate, options);
  assert.ok(auth.salt && auth.ts, 'authenticate returns salt and ts');
  step('authenticate', { ts: auth.ts });

  await call(utils.registerMediator, options, mediatorConfig);
  step('registerMediator');

  const config = await call(utils.fetchConfig, options);
  assert.deepStrictEqual(config, mediatorConfig.config, 'fetchConfig returns the registered defaults');
  step('fetchConfig', { keys: Object.keys(config).length });

  // Heartbeats: a console change must arrive through the next heartbeat as a 'config' event.
  const emitter = utils.activateHeartbeat(options, 100);
  const changed = { ...mediatorConfig.config, chtForm: 'changed_by_console' };
  const received = new Promise((resolve, reject) => {
    emitter.once('config', resolve);
    emitter.once('error', reject);
  });
  const put = await api('PUT', `/mediators/${encodeURIComponent(options.urn)}/config`, changed);
  assert.strictEqual(put.status, 200, `PUT config answered ${put.status}`);
  const got = await received;
  utils.deactivateHeartbeat();
  assert.deepStrictEqual(got, changed, 'heartbeat delivers the changed config');
  step('heartbeat', { chtForm: got.chtForm });

  // Default channel install: all of them, then a second time (core answers 500: not idempotent).
  const path = `/mediators/${encodeURIComponent(options.urn)}/channels`;
  const first = await api('POST', path, []);
  assert.strictEqual(first.status, 201, `install answered ${first.status}`);
  const channels = await api('GET', '/channels');
  const names = channels.data.map((c) => c.name).sort();
  assert.deepStrictEqual(names, mediatorConfig.defaultChannelConfig.map((c) => c.name).sort());
  const again = await api('POST', path, []);
  assert.strictEqual(again.status, 500, `second install answered ${again.status}`);
  step('installChannels', { names });

  const hb = await axios.get(options.apiURL + '/heartbeat');
  assert.ok(hb.data.mediators[options.urn] !== null, 'core lists the mediator as up');
  step('coreHeartbeat');
}

main().then(
  () => {
    clearTimeout(guard);
    console.log(JSON.stringify({ ok: true, utils: flavour }));
  },
  (err) => {
    clearTimeout(guard);
    const status = err.response ? err.response.status : undefined;
    console.error(JSON.stringify({ ok: false, error: String(err && err.message), status }));
    process.exit(1);
  },
);
