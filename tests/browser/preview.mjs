// Drives a `kubemam preview` page in Debian's Chromium and prints ONE JSON line of what it found:
//   {"ok", "errors", "seek": {check, target, currentTime, readyState}, "plot": {momentary, shortTerm, target, targetY},
//    "thumbnails": {sheets, loaded, thumbs}, "timeline": [...rows], "screenshot", "packages": [...], "elapsed"}
// `ok` only says the harness ran to the end; the test judges the numbers.
//
//   node preview.mjs --config '{"url": URL, "check": "freeze", "screenshot": "out.png", "packages": ["package-dash"]}'
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const CHROMIUM = process.env.KUBEMAM_CHROMIUM || '/usr/bin/chromium';
const FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'];

const { values } = parseArgs({ options: { config: { type: 'string' } } });
const cfg = { check: 'freeze', timeout: 90, packages: [], screenshot: null, ...JSON.parse(values.config || '{}') };

async function until(page, fn, arg, what, seconds = 30) {
  try {
    await page.waitForFunction(fn, arg, { timeout: seconds * 1000, polling: 100 });
  } catch (e) {
    throw new Error(`timed out waiting for ${what}`);
  }
}

async function main() {
  const started = Date.now();
  const result = { ok: false, errors: [], seek: null, plot: null, thumbnails: null, timeline: [], screenshot: null,
    packages: [], sources: [], notes: [], player: null };
  const userDataDir = mkdtempSync(join(tmpdir(), 'kubemam-preview-'));
  const watchdog = setTimeout(() => finish(result, started, userDataDir, 3, 'hard timeout'), (cfg.timeout + 30) * 1000);
  let context = null;
  try {
    context = await chromium.launchPersistentContext(userDataDir, { executablePath: CHROMIUM, headless: true,
      args: FLAGS, viewport: { width: 1280, height: 1100 }, timeout: cfg.timeout * 1000 });
    const page = context.pages()[0] || await context.newPage();
    page.on('pageerror', (e) => result.errors.push(`page: ${e.message}`));
    await page.goto(cfg.url, { timeout: cfg.timeout * 1000 });
    await until(page, () => window.__preview?.playerSettled, null, 'the page to set up its player');
    await until(page, () => document.getElementById('player').readyState >= 2, null, 'the first source to load');
    result.sources = await page.$$eval('#sources button', (bs) => bs.map((b) => ({ id: b.dataset.source,
      disabled: b.disabled, active: b.classList.contains('active') })));
    result.player = await page.evaluate(() => document.getElementById('player-note').textContent);
    result.notes = await page.$$eval('#notes li', (lis) => lis.map((li) => li.textContent));
    result.timeline = await page.$$eval('#timeline tbody tr', (rows) => rows.map((r) => ({ source: r.dataset.source,
      check: r.dataset.check, start: r.dataset.start === undefined ? null : Number(r.dataset.start),
      text: r.textContent })));

    // A click on the timeline seeks the player; the frame there is decoded before the screenshot.
    const row = page.locator(`#timeline tbody tr[data-source="qc"][data-check="${cfg.check}"]`).first();
    const target = Number(await row.getAttribute('data-start'));
    await row.click();
    await until(page, (t) => { const v = document.getElementById('player');
      return Math.abs(v.currentTime - t) < 0.05 && !v.seeking && v.readyState >= 2; }, target, 'the seek');
    await page.waitForTimeout(300); // the compositor shows the decoded frame
    result.seek = { check: cfg.check, target, ...await page.evaluate(() => {
      const v = document.getElementById('player');
      return { currentTime: v.currentTime, readyState: v.readyState, source: window.__preview.source,
        playhead: Number(document.getElementById('playhead').getAttribute('x1')) };
    }) };
    if (cfg.screenshot) {
      await page.locator('#player').screenshot({ path: cfg.screenshot });
      result.screenshot = cfg.screenshot;
      await page.screenshot({ path: cfg.screenshot.replace(/\.png$/, '-page.png'), fullPage: true });
    }

    result.plot = await page.evaluate(() => {
      const count = (id) => (document.getElementById(id)?.getAttribute('points') || '').trim().split(/\s+/)
        .filter(Boolean).length;
      const line = document.getElementById('target');
      return { momentary: count('momentary'), shortTerm: count('short-term'),
        target: line ? Number(line.dataset.lufs) : null, targetY: line ? Number(line.getAttribute('y1')) : null };
    });
    await until(page, () => [...document.querySelectorAll('img.sheet')].every((i) => i.complete), null,
      'the sprite sheets');
    result.thumbnails = await page.evaluate(() => ({
      sheets: document.querySelectorAll('img.sheet').length,
      loaded: [...document.querySelectorAll('img.sheet')].filter((i) => i.naturalWidth > 0).length,
      thumbs: document.querySelectorAll('#thumbs .thumb').length }));

    for (const id of cfg.packages) {
      // Each package through Shaka Player (ClearKey when the page has keys), from where the player is.
      const before = await page.evaluate(() => window.__preview.errors.length);
      await page.locator(`#sources button[data-source="${id}"]`).click();
      await until(page, ([want, n]) => window.__preview.source === want || window.__preview.errors.length > n,
        [id, before], `${id} to load`, 60);
      const from = await page.evaluate(async () => { const v = document.getElementById('player');
        if (v.currentTime > 6) v.currentTime = 1;  // room to play on in a short clip
        await v.play().catch(() => {}); return v.currentTime; });
      await until(page, ([t, n]) => document.getElementById('player').currentTime > t + 1.0
        || window.__preview.errors.length > n, [from, before], `${id} playback`, 60)
        .catch((e) => result.errors.push(e.message));
      result.packages.push({ id, from, ...await page.evaluate(() => {
        const stats = window.__preview.shaka?.getStats();
        return { source: window.__preview.source, currentTime: document.getElementById('player').currentTime,
          width: stats?.width ?? null, height: stats?.height ?? null };
      }) });
      await page.evaluate(() => document.getElementById('player').pause());
    }
    result.errors.push(...await page.evaluate(() => window.__preview.errors));
    result.ok = true;
  } catch (e) {
    result.errors.push(`harness: ${e.message.split('\n')[0]}`);
  }
  clearTimeout(watchdog);
  await context?.close().catch(() => {});
  finish(result, started, userDataDir, result.ok ? 0 : 1);
}

function finish(result, started, userDataDir, code, why) {
  if (why) result.errors.push(`harness: ${why}`);
  result.elapsed = (Date.now() - started) / 1000;
  process.stdout.write(`${JSON.stringify(result)}\n`);
  rmSync(userDataDir, { recursive: true, force: true });
  process.exit(code);
}

main();
