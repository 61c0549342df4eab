// The account setup wizard end to end: an account whose server refuses the test shows the server's
// words; an account on a working server is tested, made the default, and sends a test message.
//
//   node account.mjs --base URL --token mr_… --bad-port N --good-port M --out DIR
import { args, audit, run, signIn, step } from './harness.mjs';

await run(async (page) => {
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

  await signIn(page, args.token);
  await page.getByRole('navigation', { name: 'Console' }).getByRole('link', { name: 'Accounts' }).click();
  await audit(page, 'accounts');
  await page.getByRole('link', { name: 'Set up an account' }).click();
  await audit(page, 'account-new');
  await page.screenshot({ path: `${args.out}/account-new-1280.png`, fullPage: true });

  const refused = await setUp('refusing', args['bad-port'], false);
  step('a failing test shows the server\'s words', refused.includes('The server said') && /5\d\d/.test(refused), refused);
  await audit(page, 'account-test-failed');
  await page.screenshot({ path: `${args.out}/account-test-failed-1280.png`, fullPage: true });

  const works = await setUp('billing', args['good-port'], true);
  step('a working server passes the test', works.includes('The connection works'), works);
  await audit(page, 'account-test');
  await page.getByLabel('Send it to').fill('someone@example.com');
  await page.getByRole('button', { name: 'Send a test message' }).click();
  await page.waitForURL(/\/console\/messages\//);
  const heading = await page.locator('h1').textContent();
  step('the test message is on its page', heading === 'mailroom test message', heading);

  // Find it again in the sent archive by its recipient, once it has gone out.
  const deadline = Date.now() + 20000;
  let found = 0;
  while (Date.now() < deadline) {
    await page.getByRole('navigation', { name: 'Console' }).getByRole('link', { name: 'Sent' }).click();
    await page.getByLabel('Recipient').fill('someone@example.com');
    await page.getByRole('button', { name: 'Filter' }).click();
    found = await page.locator('main table').getByText('mailroom test message').count();
    if (found > 0) break;
    await page.waitForTimeout(300);
  }
  step('the sent message is found by its recipient', found === 1, `found ${found}`);
});
