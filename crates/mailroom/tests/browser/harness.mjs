// What every browser script shares: its arguments, Debian's Chromium, axe-core audits, and one JSON
// report on stdout (exit 1 when a step failed).
import { chromium } from 'playwright-core';
import { readFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';

export const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith('--') ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []),
);
const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
mkdirSync(args.out, { recursive: true });

export const report = { steps: [], accessibility: {}, failures: [] };
export const step = (name, ok, detail = '') => {
  report.steps.push({ name, ok, detail });
  if (!ok) report.failures.push(`${name}: ${detail}`);
};

/// Serious and critical accessibility violations of the page as it is now.
export const audit = async (page, name) => {
  await page.addScriptTag({ content: axeSource });
  const result = await page.evaluate(async () => await window.axe.run(document, { resultTypes: ['violations'] }));
  const bad = result.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 5) }));
  report.accessibility[name] = bad;
  if (bad.length) report.failures.push(`${name}: ${bad.length} serious or critical accessibility violations`);
};

/// Screenshots of the page at 1280×800 and at 390 px wide, which it must fit without scrolling
/// sideways.
export const shoot = async (page, name) => {
  await page.screenshot({ path: `${args.out}/${name}-1280.png`, fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: `${args.out}/${name}-390.png`, fullPage: true });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
  step(`${name} fits 390 px`, !overflow, overflow ? 'the page scrolls sideways' : '');
  await page.setViewportSize({ width: 1280, height: 800 });
};

/// Signs in through the sign-in form and waits for the dashboard.
export const signIn = async (page, token) => {
  await page.goto(`${args.base}/console/sign-in`);
  await page.getByLabel('API token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(`${args.base}/console`);
};

/// Runs `steps(page, newPage)` with a fresh 1280×800 page (`newPage(viewport)` opens another
/// page in a context of its own: another user's cookies), then prints the report and exits.
export const run = async (steps) => {
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
  try {
    const newPage = async (viewport = { width: 1280, height: 800 }) => (await browser.newContext({ viewport })).newPage();
    await steps(await newPage(), newPage);
  } catch (error) {
    report.failures.push(`the run stopped: ${error.message}`);
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(report, null, 2));
  process.exit(report.failures.length ? 1 : 0);
};
