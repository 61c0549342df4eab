// Approves a mailbox and tests & enables it from the console, watching the progress bar reach
// 100 %. Prints one JSON report; exits 1 when a step failed.
//
//   node mailbox.mjs --base http://127.0.0.1:PORT --token mr_… --address user0@corp.test --out DIR
import { args, audit, run, signIn, step } from './harness.mjs';

await run(async (page) => {
  await signIn(page, args.token);

  await page.getByRole('link', { name: 'Mailboxes' }).click();
  await audit(page, 'mailboxes');
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
  await audit(page, 'job');
  await page.screenshot({ path: `${args.out}/job-1280.png`, fullPage: true });
});
