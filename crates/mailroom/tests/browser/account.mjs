// The account setup wizard end to end: an account whose server refuses the test shows the server's
// words; an account on a working server is tested, made the default, and sends a test message.
//
//   node account.mjs --base URL --token mr_… --bad-port N --good-port M --out DIR
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
  const setUp = async (name, port, makeDefault) => {
    await page.getByRole('navigation', { name: 'Console' }).getByRole('link', { name: 'Accounts' }).click();
    await page.getByRole('link', { name: 'Set up an account' }).click();
    await page.getByLabel('SMTP server').check();
    await page.getByLabel('Name', { exact: true }).fill(name);
    await page.getByLabel('Sender address').fill(`${name}@corp.example`);
    await page.getByLabel('SMTP host').fill('127.0.0.1');
    await page.getByLabel('Port', { exact: true }).fill(String(port));
    await page.getByLabel('Security').selectOption('none');
    await page.getByLabel('Messages per minute at most').fill('30');
    if (makeDefault) await page.getByLabel('Make it the default account').check();
    await page.getByRole('button', { name: 'Create and test' }).click();
    await page.locator('#test-outcome').waitFor({ timeout: 20000 });
    return page.locator('#test-outcome').textContent();
  };

  await page.goto(`${args.base}/console/sign-in`);
  await page.getByLabel('API token').fill(args.token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(`${args.base}/console`);
  await page.getByRole('navigation', { name: 'Console' }).getByRole('link', { name: 'Accounts' }).click();
  await audit('accounts');
  await page.getByRole('link', { name: 'Set up an account' }).click();
  await audit('account-new');
  await page.screenshot({ path: `${args.out}/account-new-1280.png`, fullPage: true });

  const refused = await setUp('refusing', args['bad-port'], false);
  step('a failing test shows the server\'s words', refused.includes('The server said') && /5\d\d/.test(refused), refused);
  await audit('account-test-failed');
  await page.screenshot({ path: `${args.out}/account-test-failed-1280.png`, fullPage: true });

  const works = await setUp('billing', args['good-port'], true);
  step('a working server passes the test', works.includes('The connection works'), works);
  await audit('account-test');
  await page.getByLabel('Send it to').fill('someone@example.com');
  await page.getByRole('button', { name: 'Send a test message' }).click();
  await page.waitForURL(/\/console\/messages\//);
  const heading = await page.locator('h1').textContent();
  step('the test message is on its page', heading === 'mailroom test message', heading);
} catch (error) {
  report.failures.push(`the run stopped: ${error.message}`);
} finally {
  await browser.close();
}
console.log(JSON.stringify(report, null, 2));
process.exit(report.failures.length ? 1 : 0);
