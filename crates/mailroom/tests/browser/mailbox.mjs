// Approves a mailbox and tests & enables it from the console, watching the progress bar reach
// 100 %. Prints one JSON report; exits 1 when a step failed.
//
//   node mailbox.mjs --base http://127.0.0.1:PORT --token mr_… --address user0@corp.test --out DIR
import { chromium } from 'playwright-core';
import { readFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith('--') ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []),
);
const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
mkdirSync(args.out, { recursive: true });
const report = { steps: [], accessibility: {}, failures: [] };
const step = (name, ok, detail = '') => {
  report.steps.push({ name, ok, detail });
  if (!ok) report.failures.push(`${name}: ${detail}`);
};

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
try {
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
  const audit = async (name) => {
    await page.addScriptTag({ content: axeSource });
    const result = await page.evaluate(async () => await window.axe.run(document, { resultTypes: ['violations'] }));
    const bad = result.violations
      .filter((v) => v.impact === 'serious' || v.impact === 'critical')
      .map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 5) }));
    report.accessibility[name] = bad;
    if (bad.length) report.failures.push(`${name}: ${bad.length} serious or critical accessibility violations`);
  };

  await page.goto(`${args.base}/console/sign-in`);
  await page.getByLabel('API token').fill(args.token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(`${args.base}/console`);

  await page.getByRole('link', { name: 'Mailboxes' }).click();
  await audit('mailboxes');
  await page.screenshot({ path: `${args.out}/mailboxes-1280.png`, fullPage: true });
  await page.getByRole('button', { name: `Approve ${args.address}` }).click();
  const approved = await page.getByRole('status').textContent();
  step('approving says so', approved.includes('Approved'), approved);

  await page.getByRole('button', { name: `Test & enable ${args.address}` }).click();
  await page.waitForURL(/\/console\/jobs\//);
  const seen = [];
  const deadline = Date.now() + 30000;
  for (;;) {
    const percent = await page.locator('#job-percent').textContent();
    if (!seen.includes(percent)) seen.push(percent);
    if (percent.trim() === '100 %') break;
    if (Date.now() > deadline) break;
    await page.waitForTimeout(100);
  }
  const value = await page.locator('#job-bar').getAttribute('value');
  step('the progress bar reaches 100 %', value === '100', `seen: ${seen.join(', ')}`);
  const summary = await page.getByRole('status').textContent();
  step('the job says what it enabled', summary.includes('1 enabled'), summary);
  await audit('job');
  await page.screenshot({ path: `${args.out}/job-1280.png`, fullPage: true });
} catch (error) {
  report.failures.push(`the run stopped: ${error.message}`);
} finally {
  await browser.close();
}
console.log(JSON.stringify(report, null, 2));
process.exit(report.failures.length ? 1 : 0);
