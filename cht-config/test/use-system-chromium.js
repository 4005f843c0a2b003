/*
 * Mocha --require hook: make cht-conf-test-harness use the system Chromium (Debian `chromium`).
 *
 * The harness launches the browser through puppeteer-chromium-resolver, which ignores the
 * PUPPETEER_* variables, always replaces `executablePath` and downloads a Chromium snapshot when
 * it finds none. We pre-load a stand-in for that module which hands back the same puppeteer-core
 * the resolver bundles, with `launch` pointed at the system browser. Nothing is downloaded.
 *
 * Browser: $CHROMIUM_PATH, else $PUPPETEER_EXECUTABLE_PATH, else the first existing of
 * /usr/lib/chromium/chromium (skips the Debian wrapper script) and /usr/bin/chromium.
 */
const fs = require('fs');
const path = require('path');

const candidates = [
  process.env.CHROMIUM_PATH,
  process.env.PUPPETEER_EXECUTABLE_PATH,
  '/usr/lib/chromium/chromium',
  '/usr/bin/chromium',
  '/usr/bin/chromium-browser',
].filter(Boolean);
const executablePath = candidates.find(candidate => fs.existsSync(candidate));
if (!executablePath) {
  throw new Error(`No Chromium found (tried ${candidates.join(', ')}). Run scripts/setup-cht-tooling.sh.`);
}

const projectRequire = (request, fromDir) => require.resolve(request, { paths: [fromDir] });
const harnessMain = projectRequire('cht-conf-test-harness', process.cwd());
const resolverMain = projectRequire('puppeteer-chromium-resolver', path.dirname(harnessMain));
const puppeteer = require(projectRequire('puppeteer-core', path.dirname(resolverMain)));

const extraArgs = ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'];
const originalLaunch = puppeteer.launch.bind(puppeteer);
puppeteer.launch = (options = {}) => originalLaunch({
  ...options,
  executablePath,
  args: [...(options.args || []), ...extraArgs.filter(arg => !(options.args || []).includes(arg))],
});

const stats = { executablePath, puppeteer, launchable: true, revision: 'system' };
const resolver = async () => stats;
resolver.getStats = () => stats;

const stub = new module.constructor(resolverMain, module);
stub.filename = resolverMain;
stub.loaded = true;
stub.exports = resolver;
require.cache[resolverMain] = stub;
