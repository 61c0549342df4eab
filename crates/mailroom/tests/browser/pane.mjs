// The mail-client app: an admin deploys it to a user; a user without the role is told they are
// not authorised; the user opens the pane for a message, tracks it to a record, changes regarding,
// untracks — each reflected on the record's timeline — at a pane's width. Prints one JSON report.
//
//   node pane.mjs --base URL --admin TOKEN --user TOKEN --outsider TOKEN --message-id ID
//                 --from ADDR --to ADDR --cc ADDR --subject TEXT --out DIR
import { args, audit, run, signIn, step } from './harness.mjs';

const panePath = `/pane?${new URLSearchParams({ message_id: args['message-id'], from: args.from, to: args.to, cc: args.cc, subject: args.subject })}`;

/// Opens the pane signed out: the sign-in page brings the user back to it.
const openPane = async (page, token) => {
  await page.goto(`${args.base}${panePath}`);
  await page.getByLabel('API token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(/\/pane\?/);
};

const fits = async (page, name) => {
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
  step(`${name} fits its width`, !overflow, overflow ? 'the page scrolls sideways' : '');
};

const timeline = async (page, record) => {
  await page.goto(`${args.base}/console/records/${record}`);
  return page.locator('ol.timeline').textContent();
};

await run(async (admin, newPage) => {
  // The admin deploys the app to user0.
  await signIn(admin, args.admin);
  await admin.getByRole('link', { name: 'Mail-client app' }).click();
  await audit(admin, 'mail-client-app');
  await admin.screenshot({ path: `${args.out}/mail-client-app-1280.png`, fullPage: true });
  const row = admin.getByRole('row', { name: /user0/ });
  step('user0 is eligible before deployment', (await row.textContent()).includes('eligible'), await row.textContent());
  await admin.getByRole('checkbox', { name: 'Select user0' }).check();
  await admin.getByRole('button', { name: 'Deploy to the selected users' }).click();
  const deployed = await admin.getByRole('status').textContent();
  step('deploying says so', deployed.includes('Deployed to the selected users'), deployed);
  step('user0 is pending', (await admin.getByRole('row', { name: /user0/ }).textContent()).includes('pending'));

  // A user without the role sees the app's refusal, not the records.
  const outsider = await newPage({ width: 390, height: 700 });
  await openPane(outsider, args.outsider);
  const refusal = await outsider.getByRole('alert').textContent();
  step('a user without the role is not authorised', refusal.includes('You are not authorised to use this app. Ask your administrator to update your settings.'), refusal);
  step('a user without the role sees no records', (await outsider.getByText('customer C-1').count()) === 0);
  // Nor do they see what their permissions leave out of the console: users, or other people's mail.
  await outsider.goto(`${args.base}/console/users`);
  step('a user without user-admin is told so', (await outsider.getByText('Your permissions do not include users.').count()) === 1);
  step('and sees no user', (await outsider.getByText('user0@corp.test').count()) === 0);
  await outsider.goto(`${args.base}/console/inbound/mailboxes/${args.mailbox}`);
  step('another user\'s mailbox is not shown', !(await outsider.content()).includes(args.subject), outsider.url());

  // The user opens the pane at a pane's width.
  const pane = await newPage({ width: 390, height: 700 });
  await openPane(pane, args.user);
  step('the pane shows the contact record', (await pane.getByText('customer C-1').count()) > 0);
  step('the pane shows the record of earlier mail', (await pane.getByText('deal D-1').count()) > 0);
  await audit(pane, 'pane');
  await fits(pane, 'pane');
  await pane.screenshot({ path: `${args.out}/pane-390.png`, fullPage: true });

  // Mail from a known contact arrives linked to the contact's records: start from untracked.
  const linked = await pane.getByRole('region', { name: 'Tracking' }).textContent();
  step('mail from a contact arrives linked to the contact', linked.includes('customer C-1'), linked);
  await pane.getByRole('button', { name: 'Untrack' }).click();
  step('the pane says not tracked', (await pane.getByText('Not tracked.').count()) === 1);

  // Track → on the deal's timeline.
  await pane.getByRole('button', { name: 'Track to deal D-1' }).click();
  const tracked = await pane.getByRole('status').textContent();
  step('tracking says so', tracked.includes('Tracked to deal D-1'), tracked);
  await pane.getByRole('region', { name: 'Tracking' }).getByRole('link', { name: 'deal D-1' }).click();
  await pane.waitForURL(/\/console\/records\/deal\/D-1/);
  const onDeal = await pane.locator('ol.timeline').textContent();
  step('the tracked message is on the record timeline', onDeal.includes(args.subject), onDeal);
  await audit(pane, 'record');
  await pane.screenshot({ path: `${args.out}/record-390.png`, fullPage: true });
  // The received message from the timeline, and its conversation.
  await pane.locator('ol.timeline').getByRole('link', { name: args.subject }).click();
  await pane.waitForURL(/\/console\/inbound\//);
  await audit(pane, 'inbound-message');
  await fits(pane, 'inbound-message');
  await pane.getByRole('link', { name: 'the whole conversation' }).click();
  await audit(pane, 'conversation');
  await fits(pane, 'conversation');

  // Change regarding → it moves from the deal to the customer.
  await pane.goto(`${args.base}${panePath}`);
  await pane.getByRole('button', { name: 'Change regarding to customer C-1' }).click();
  const changed = await pane.getByRole('status').textContent();
  step('changing regarding says so', changed.includes('Tracked to customer C-1'), changed);
  step('the message left the deal', !(await timeline(pane, 'deal/D-1')).includes(args.subject));
  step('the message is on the customer', (await timeline(pane, 'customer/C-1')).includes(args.subject));

  // Untrack → on no timeline.
  await pane.goto(`${args.base}${panePath}`);
  await pane.getByRole('button', { name: 'Untrack' }).click();
  step('untracking says so', (await pane.getByRole('status').textContent()).includes('Untracked'));
  step('the pane says not tracked again', (await pane.getByText('Not tracked.').count()) === 1);
  step('the message left the customer', !(await timeline(pane, 'customer/C-1')).includes(args.subject));

  // Opening the pane added the app for the user.
  await admin.reload();
  const after = await admin.getByRole('row', { name: /user0/ }).textContent();
  step('user0 shows as added', after.includes('added'), after);
});
