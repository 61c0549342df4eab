// An administrator sets email up in the console: a custom scenario with a default attachment
// uploaded from the browser, a sending profile, a server profile (a wrong port refused in words),
// the organisation's settings, a user with a token (shown once, then revoked) and a view policy, a
// team, a contact, an app registration and its verification, alerts, and a failed message sent
// again. Every page is audited and shot at both
// widths. Prints one JSON report; exits 1 when a step failed.
//
//   node setup.mjs --base URL --token TOKEN --message ID --out DIR
import { args, audit, run, shoot, signIn, step } from './harness.mjs';

const said = async (page, expected, name) => {
  const text = (await page.getByRole('status').textContent()).trim();
  step(name, text.includes(expected), text);
};

await run(async (page) => {
  await signIn(page, args.token);
  const visit = async (link, name) => {
    await page.getByRole('navigation', { name: 'Console' }).getByRole('link', { name: link, exact: true }).click();
    await audit(page, name);
    await shoot(page, name);
  };

  // A custom scenario, its default attachment uploaded from the browser, made optional.
  await visit('Scenarios', 'scenarios');
  await page.getByLabel('Name').fill('delivery-note');
  await page.getByLabel('What it is for').fill('Delivery notes');
  await page.getByRole('button', { name: 'Add the scenario' }).click();
  await said(page, 'delivery-note saved', 'a custom scenario is added');
  await page.getByRole('link', { name: 'Attachments of delivery-note' }).click();
  await page.getByLabel('File').setInputFiles({ name: 'terms.pdf', mimeType: 'application/pdf', buffer: Buffer.from('%PDF-1.4 terms') });
  await page.getByRole('button', { name: 'Upload and add to every message' }).click();
  await said(page, 'terms.pdf is a default attachment of delivery-note', 'the upload becomes a default attachment');
  await audit(page, 'scenario');
  await shoot(page, 'scenario');
  await page.getByRole('button', { name: 'Make optional: terms.pdf' }).click();
  await said(page, 'Saved', 'the attachment is made optional');
  step('the attachment shows as optional', (await page.getByText('when the sender picks it').count()) === 1);
  await visit('Scenarios', 'scenarios');
  await page.getByRole('button', { name: 'Add an unsubscribe link to delivery-note' }).click();
  await said(page, 'one-click unsubscribe link now', 'a scenario gets a one-click unsubscribe link');

  // A sending profile.
  await visit('Sending profiles', 'sending-profiles');
  await page.getByLabel('Name').fill('paper-free');
  await page.getByLabel('Email').selectOption('without-asking');
  await page.getByRole('button', { name: 'Save the profile' }).click();
  await said(page, 'paper-free saved', 'a sending profile is saved');

  // A server profile: a port that is not a number is refused in words, then one is added.
  await visit('Server profiles', 'server-profiles');
  await page.getByLabel('Name').fill('corp');
  await page.locator('#incoming-host').fill('127.0.0.1');
  await page.locator('#incoming-port').fill('imap');
  await page.locator('#outgoing-host').fill('127.0.0.1');
  await page.getByRole('button', { name: 'Add the profile' }).click();
  await said(page, 'the incoming port must be a number', 'a wrong port is refused in words');
  await page.getByLabel('Name').fill('corp');
  await page.locator('#incoming-host').fill('127.0.0.1');
  await page.locator('#incoming-port').fill('1143');
  await page.locator('#incoming-security').selectOption('none');
  await page.locator('#outgoing-host').fill('127.0.0.1');
  await page.locator('#outgoing-port').fill('1587');
  await page.locator('#outgoing-security').selectOption('starttls');
  await page.getByRole('button', { name: 'Add the profile' }).click();
  await said(page, 'Server profile added', 'a server profile is added');

  // The organisation's settings.
  await visit('Settings', 'settings');
  await page.getByLabel('Smart matching window in days (0: off)').fill('a week');
  await page.getByRole('button', { name: 'Save the linking settings' }).click();
  await said(page, 'whole number of days', 'a window that is not a number is refused');
  await page.getByLabel('A tracking token in subjects').check();
  await page.getByLabel('Token prefix').fill('INV');
  await page.getByLabel('Smart matching window in days (0: off)').fill('7');
  await page.getByRole('button', { name: 'Save the linking settings' }).click();
  await said(page, 'Correlation settings saved', 'the linking settings are saved');
  await page.getByLabel('Process email only for approved queues').uncheck();
  await page.getByRole('button', { name: 'Save the email settings' }).click();
  await said(page, 'Email settings saved', 'the email settings are saved');

  // A user, a token shown once then revoked, a view policy.
  await visit('Users', 'users');
  await page.getByLabel('Name').fill('clerk');
  await page.getByLabel('email-send', { exact: true }).check();
  await page.getByLabel('May read records of these types (comma-separated)').fill('customer');
  await page.getByRole('button', { name: 'Add the user' }).click();
  await said(page, 'User clerk added', 'a user is added');
  await page.getByRole('link', { name: 'clerk', exact: true }).click();
  await audit(page, 'user');
  await shoot(page, 'user');
  await page.getByLabel("New token's name").fill('erp');
  await page.getByRole('button', { name: 'Make a token' }).click();
  const secret = await page.getByLabel('The token').inputValue();
  step('the new token is shown once', secret.startsWith('mr_'), secret.slice(0, 3));
  await audit(page, 'token');
  await page.getByRole('link', { name: 'Back to the user' }).click();
  step('the token is not shown again', !(await page.content()).includes(secret));
  await page.getByLabel('Which mail clerk sees').selectOption('any-related-record');
  await page.getByRole('button', { name: 'Save the view policy' }).click();
  await said(page, 'View policy saved', 'the view policy is saved');
  await page.getByRole('button', { name: 'Revoke token erp' }).click();
  await said(page, 'Token revoked', 'the token is revoked');

  // A team with the clerk in it.
  await visit('Teams', 'teams');
  await page.getByLabel('Name').fill('approvers');
  await page.getByLabel('mailbox-approve', { exact: true }).check();
  await page.getByRole('button', { name: 'Add the team' }).click();
  await said(page, 'Team approvers added', 'a team is added');
  await page.getByRole('region', { name: 'approvers' }).getByLabel('clerk', { exact: true }).check();
  await page.getByRole('button', { name: 'Save team approvers' }).click();
  await said(page, 'Team saved', 'the team gains a member');

  // A contact: records written wrong are refused, then saved and found again.
  await visit('Contacts', 'contacts');
  await page.getByLabel('Id (the application\'s own)').fill('ann');
  await page.getByLabel('Addresses (one per line)').fill('ann@customer.example');
  await page.getByLabel('Records, type:id (one per line)').fill('C-1');
  await page.getByRole('button', { name: 'Save the contact' }).click();
  await said(page, 'type:id', 'a record without its type is refused');
  await page.getByLabel('Id (the application\'s own)').fill('ann');
  await page.getByLabel('Addresses (one per line)').fill('ann@customer.example');
  await page.getByLabel('Records, type:id (one per line)').fill('customer:C-1');
  await page.getByRole('button', { name: 'Save the contact' }).click();
  await said(page, 'Contact ann saved', 'a contact is saved');
  await page.getByLabel('Contact id').fill('ann');
  await page.getByRole('button', { name: 'Look up' }).click();
  step('the contact is found again', (await page.getByLabel('Addresses (one per line)').inputValue()).includes('ann@customer.example'));

  // A webhook: a loopback receiver is refused in words; a public one shows its secret once.
  await visit('Webhooks', 'webhooks');
  await page.getByLabel('URL').fill('http://127.0.0.1:9/hook');
  await page.getByLabel('message.sent').check();
  await page.getByRole('button', { name: 'Add the receiver' }).click();
  await said(page, 'private or local address', 'a loopback receiver is refused');
  await page.getByLabel('URL').fill('https://hooks.example.com/mailroom');
  await page.getByLabel('message.sent').check();
  await page.getByLabel('message.failed').check();
  await page.getByRole('button', { name: 'Add the receiver' }).click();
  const hookSecret = await page.getByLabel('Signing secret').inputValue();
  step('the webhook secret is shown once', hookSecret.startsWith('whsec_'), hookSecret.slice(0, 6));
  await audit(page, 'webhook-secret');
  await page.getByRole('link', { name: 'To the webhook' }).click();
  step('the secret is not on the webhook page', !(await page.content()).includes(hookSecret));
  await audit(page, 'webhook');
  await shoot(page, 'webhook');
  await page.getByRole('button', { name: 'Disable' }).click();
  await said(page, 'Saved', 'the webhook is disabled');
  step('the webhook shows as disabled', (await page.getByText('disabled').count()) >= 1);

  // The suppression list: an address suppressed by hand, then mailed again.
  await visit('Suppressions', 'suppressions');
  await page.getByLabel('Address').fill('Gone@Customer.example');
  await page.getByLabel('Why (for people)').fill('left the company');
  await page.getByRole('button', { name: 'Suppress' }).click();
  await said(page, 'is suppressed', 'an address is suppressed by hand');
  step('the suppression is listed with its reason', (await page.getByText('manual: left the company').count()) === 1);
  await audit(page, 'suppressions-listed');
  await page.getByRole('button', { name: 'Remove gone@customer.example' }).click();
  await said(page, 'may be mailed again', 'the suppression is removed');
  await page.getByLabel('Address').fill('kept@customer.example');
  await page.getByRole('button', { name: 'Suppress' }).click();
  await said(page, 'is suppressed', 'a second address is suppressed');

  // A DKIM key: generated in the browser, its TXT record shown to publish.
  await visit('DKIM', 'dkim');
  await page.getByLabel('Domain', { exact: true }).fill('cronus.example');
  await page.getByLabel("Selector (empty: mr and today's date)").fill('s1');
  await page.getByLabel('Algorithm').selectOption('ed25519-sha256');
  await page.getByRole('button', { name: 'Generate the key' }).click();
  await said(page, 'publish its TXT record', 'a DKIM key is generated');
  step('its TXT record is shown', (await page.getByText('v=DKIM1; k=ed25519; p=').count()) === 1);
  step('the record is published under its selector', (await page.getByText('s1._domainkey.cronus.example').count()) === 1);
  await audit(page, 'dkim-listed');
  await shoot(page, 'dkim-listed');

  // An app registration for a provider that cannot be reached: stored, and its verification says
  // what failed.
  await visit('App registrations', 'app-registrations');
  await page.getByLabel('Name', { exact: true }).fill('Company SSO');
  await page.getByLabel('Provider', { exact: true }).selectOption('oidc');
  await page.getByLabel('Application (client) ID').fill('mailroom');
  await page.getByLabel('Client secret (its Value, not its Secret ID)').fill('s3cret-value');
  await page.getByLabel('Discovery URL — other providers').fill('http://127.0.0.1:9/.well-known/openid-configuration');
  await page.getByRole('button', { name: 'Add the registration' }).click();
  await said(page, 'verify it', 'an app registration is added');
  step('the secret is stored, not shown', (await page.getByText('s3cret-value').count()) === 0 && (await page.getByRole('cell', { name: 'stored' }).count()) === 1);
  await audit(page, 'app-registrations-listed');
  await shoot(page, 'app-registrations-listed');
  await page.getByRole('link', { name: 'Verify' }).click();
  step('the verification says the provider cannot be reached', (await page.getByText('does not work yet').count()) === 1);
  await audit(page, 'app-registration-verify');
  await shoot(page, 'app-registration-verify');

  await visit('Alerts', 'alerts');
  await visit('Nodes', 'nodes');
  step('the nodes page lists this node', (await page.getByText('alive').count()) >= 1);

  // A failed message sent again.
  await page.goto(`${args.base}/console/messages/${args.message}`);
  await page.getByRole('button', { name: 'Send again' }).click();
  await said(page, 'Sent again as this new message', 'a failed message is sent again');
  step('the new message has its own page', !page.url().includes(args.message), page.url());
});
