// Plays one OTT manifest (DASH .mpd or HLS .m3u8) in Debian's Chromium with Shaka Player and prints ONE JSON line:
//   {"ok", "currentTime", "errors", "variant": {width, height, bandwidth}, "screenshot", "elapsed"}
// Exits 0 only when playback passed `seconds` with no Shaka or page error; every wait is bounded by `timeout`.
//
//   node play.mjs --url URL [--clearkey KIDHEX:KEYHEX]... [--seconds 5] [--screenshot out.png] [--timeout 60]
//   node play.mjs --config '{"url": URL, "clearkeys": {"kidhex": "keyhex"}, "seconds": 5, "screenshot": "out.png"}'
//
// The player page is answered by page.route() at a path on the manifest's own origin, so segment and licence
// requests are same-origin and the page is a secure context (127.0.0.1), which EME requires.
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
const SHAKA = require.resolve('shaka-player/dist/shaka-player.compiled.js');
const CHROMIUM = process.env.KUBEMAM_CHROMIUM || '/usr/bin/chromium';
// Without the background-networking flags Chromium keeps dialling Google hosts that this network refuses.
const FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'];
const PAGE = '<!doctype html><html><body style="margin:0;background:#000">'
  + '<video id="v" muted playsinline style="display:block;width:640px;height:360px"></video></body></html>';

function config() {
  const { values } = parseArgs({ options: {
    config: { type: 'string' }, url: { type: 'string' }, clearkey: { type: 'string', multiple: true },
    seconds: { type: 'string' }, screenshot: { type: 'string' }, timeout: { type: 'string' } } });
  const cfg = values.config ? JSON.parse(values.config) : {};
  if (values.url) cfg.url = values.url;
  if (values.clearkey) cfg.clearkeys = Object.fromEntries(values.clearkey.map((pair) => pair.split(':')));
  if (values.seconds) cfg.seconds = Number(values.seconds);
  if (values.screenshot) cfg.screenshot = values.screenshot;
  if (values.timeout) cfg.timeout = Number(values.timeout);
  if (!cfg.url) throw new Error('no manifest: pass --url URL or --config JSON with "url"');
  return { url: cfg.url, clearkeys: cfg.clearkeys || null, seconds: cfg.seconds ?? 5, screenshot: cfg.screenshot || null,
    timeout: cfg.timeout ?? 60 };
}

// Runs in the page: starts Shaka and returns at once (play() never settles while a key is missing); errors and a
// missing key are recorded in window.__errors and window.__waitingForKey for the poll loop.
function startPlayer({ url, clearkeys }) {
  const errors = (window.__errors = []);
  window.addEventListener('unhandledrejection', (e) => errors.push(`unhandled: ${e.reason}`));
  shaka.polyfill.installAll();
  if (!shaka.Player.isBrowserSupported()) { errors.push('shaka: browser not supported'); return; }
  const video = document.getElementById('v');
  video.addEventListener('waitingforkey', () => { window.__waitingForKey = true; });
  video.addEventListener('error', () => errors.push(`video: MediaError ${video.error?.code} ${video.error?.message}`));
  const player = (window.__player = new shaka.Player());
  const describe = (e) => `shaka ${e.code} (category ${e.category}, severity ${e.severity}): ${JSON.stringify(e.data)}`;
  player.addEventListener('error', (event) => errors.push(describe(event.detail)));
  (async () => {
    await player.attach(video);
    if (clearkeys) player.configure({ drm: { clearKeys: clearkeys } });
    await player.load(url);
    // An AbortError here only echoes a pause after another failure, which is reported on its own.
    await video.play().catch((e) => { if (e.name !== 'AbortError') throw e; });
  })().catch((e) => errors.push(e instanceof shaka.util.Error ? describe(e) : `load: ${e}`));
}

async function main() {
  const started = Date.now();
  const cfg = config();
  const result = { ok: false, currentTime: 0, errors: [], variant: null, screenshot: null };
  const userDataDir = mkdtempSync(join(tmpdir(), 'kubemam-chromium-'));
  let context = null;
  // A hard stop in case Chromium itself wedges: whatever happens, one JSON line and an exit.
  const watchdog = setTimeout(() => {
    result.errors.push(`harness: hard timeout after ${cfg.timeout + 15}s`);
    finish(result, started, userDataDir, 3);
  }, (cfg.timeout + 15) * 1000);
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM, headless: true, args: FLAGS, viewport: { width: 640, height: 360 },
      timeout: cfg.timeout * 1000 });
    const page = context.pages()[0] || await context.newPage();
    page.on('pageerror', (e) => result.errors.push(`page: ${e.message}`));
    page.on('crash', () => result.errors.push('page: crashed'));
    const pageUrl = new URL('/__kubemam_player__.html', cfg.url).href;
    await page.route(pageUrl, (route) => route.fulfill({ contentType: 'text/html', body: PAGE }));
    await page.goto(pageUrl, { timeout: cfg.timeout * 1000 });
    await page.addScriptTag({ path: SHAKA });
    await page.evaluate(startPlayer, { url: cfg.url, clearkeys: cfg.clearkeys });
    const deadline = started + cfg.timeout * 1000;
    let state = { currentTime: 0, errors: [], waitingForKey: false };
    while (Date.now() < deadline) {
      state = await page.evaluate(() => ({ currentTime: document.getElementById('v').currentTime,
        errors: window.__errors, waitingForKey: !!window.__waitingForKey }));
      if (state.errors.length || state.currentTime > cfg.seconds || result.errors.length) break;
      await page.waitForTimeout(200);
    }
    result.currentTime = state.currentTime;
    result.errors.push(...state.errors);
    if (state.currentTime <= cfg.seconds && !result.errors.length) {
      const why = state.waitingForKey ? ' (the video is waiting for a key)' : '';
      result.errors.push(`harness: currentTime ${state.currentTime} did not pass ${cfg.seconds}s in ${cfg.timeout}s${why}`);
    }
    result.variant = await page.evaluate(() => {
      const stats = window.__player?.getStats();
      return stats ? { width: stats.width, height: stats.height, bandwidth: stats.streamBandwidth } : null;
    });
    if (cfg.screenshot) {
      await page.locator('#v').screenshot({ path: cfg.screenshot, timeout: 10000 });
      result.screenshot = cfg.screenshot;
    }
  } catch (e) {
    result.errors.push(`harness: ${e.message.split('\n')[0]}`);
  }
  result.ok = result.currentTime > cfg.seconds && result.errors.length === 0;
  clearTimeout(watchdog);
  await context?.close().catch(() => {});
  finish(result, started, userDataDir, result.ok ? 0 : 1);
}

function finish(result, started, userDataDir, code) {
  result.elapsed = (Date.now() - started) / 1000;
  process.stdout.write(`${JSON.stringify(result)}\n`);
  rmSync(userDataDir, { recursive: true, force: true });
  process.exit(code);
}

main().catch((e) => {
  process.stdout.write(`${JSON.stringify({ ok: false, currentTime: 0, errors: [`harness: ${e.message}`],
    variant: null, screenshot: null })}\n`);
  process.exit(2);
});
