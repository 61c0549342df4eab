// Drives the console in Debian's Chromium: signs in with a token, visits every page, saves a
// screenshot of each (at 1280×800 and at 390 px wide), runs axe-core on each, and retries a failed
// message from its page. Prints one JSON report on stdout; exits 1 when a step failed.
//
//   node console.mjs --base http://127.0.0.1:PORT --token mr_… --message ID --out DIR
import { args, audit, run, shoot as shootPage, step } from './harness.mjs';

await run(async (page) => {
  const shoot = (name) => shootPage(page, name);

  await page.goto(`${args.base}/console`);
  step('an anonymous visit lands on sign-in', page.url().endsWith('/console/sign-in'), page.url());
  await audit(page, 'sign-in');
  await shoot('sign-in');

  await page.getByLabel('API token').fill('mr_wrong');
  await page.getByRole('button', { name: 'Sign in' }).click();
  const refusal = await page.getByRole('alert').textContent();
  step('a wrong token is refused in plain words', refusal.includes('not valid'), refusal);

  await page.getByLabel('API token').fill(args.token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(`${args.base}/console`);
  step('signing in shows the dashboard', (await page.locator('h1').textContent()) === 'Dashboard');
  await audit(page, 'dashboard');
  await shoot('dashboard');

  await page.getByRole('link', { name: 'Outbox' }).click();
  await page.getByLabel('Status').selectOption('failed');
  await page.getByRole('button', { name: 'Filter' }).click();
  step('the outbox filtered to failed mail lists the message', (await page.locator(`a[href="/console/messages/${args.message}"]`).count()) === 1);
  await audit(page, 'outbox');
  await shoot('outbox');

  await page.getByRole('link', { name: 'Sent' }).click();
  await audit(page, 'sent');
  await shoot('sent');

  await page.goto(`${args.base}/console/messages/${args.message}`);
  step('the message page shows its first attempt', (await page.getByText('Attempt 1').count()) === 1);
  await audit(page, 'message');
  await shoot('message');
  await page.getByRole('button', { name: 'Retry' }).click();
  const notice = await page.getByRole('status').textContent();
  step('retrying says so', notice.includes('queued again'), notice);

  // A template edit: the preview follows the typing; a syntax error shows at its line.
  await page.getByRole('link', { name: 'Templates' }).click();
  await audit(page, 'templates');
  await shoot('templates');
  await page.locator('main table a').first().click();
  await page.locator('#preview iframe').waitFor({ timeout: 10000 });
  await audit(page, 'template');
  await shoot('template');
  const body = page.getByLabel('HTML body');
  const original = await body.inputValue();
  await body.fill(`${original}\n{% if %}`);
  await page.locator('#template-error').waitFor({ timeout: 10000 });
  const message = await page.locator('#template-error').textContent();
  step('a template syntax error is shown at its line', /line \d+/.test(message), message);
  await shoot('template-error');
  await body.fill(original);
  await page.locator('#preview iframe').waitFor({ timeout: 10000 });
  step('fixing it brings the preview back', true);

  for (const [name, path] of [['users', '/console/users'], ['audit', '/console/audit'], ['mailboxes', '/console/mailboxes'], ['received', '/console/inbound'], ['accounts', '/console/accounts']]) {
    await page.goto(`${args.base}${path}`);
    await audit(page, name);
    await shoot(name);
  }

  // Keyboard only: on a fresh page the skip link is the first stop.
  await page.goto(`${args.base}/console`);
  await page.keyboard.press('Tab');
  const first = await page.evaluate(() => document.activeElement.textContent.trim());
  step('the first Tab reaches the skip link', first === 'Skip to content', first);

  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.waitForURL(`${args.base}/console/sign-in`);
  step('signing out returns to sign-in', true);
});
