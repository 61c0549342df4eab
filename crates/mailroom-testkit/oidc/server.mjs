// A real OpenID Connect provider for mailroom's tests: `node server.mjs <port> <config.json>`.
// The config names the clients and the access-token lifetime; users log in with any account name
// and the password "secret" through oidc-provider's development login and consent forms.
import Provider from 'oidc-provider';
import { readFileSync } from 'node:fs';

const port = Number(process.argv[2]);
const config = JSON.parse(readFileSync(process.argv[3], 'utf8'));
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: config.clients,
  features: {
    devInteractions: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    clientCredentials: { enabled: true },
  },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'mail'],
  claims: { email: ['email', 'email_verified'], openid: ['sub'] },
  ttl: {
    AccessToken: config.access_token_ttl ?? 3600,
    ClientCredentials: config.access_token_ttl ?? 3600,
    RefreshToken: 14 * 24 * 3600,
    Grant: 14 * 24 * 3600,
    Session: 3600,
    Interaction: 600,
    AuthorizationCode: 60,
  },
  // Tokens of every grant name their user (client-credentials ones the client), so that an IMAP or
  // SMTP server introspecting them knows whose mailbox it is.
  extraTokenClaims(ctx, token) {
    return { username: token.accountId ?? token.clientId };
  },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: id.includes('@') ? id : `${id}@example.test`, email_verified: true };
      },
    };
  },
  // Refresh tokens for every client that may use them and asked for offline_access.
  issueRefreshToken(ctx, client, code) {
    return client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access');
  },
  pkce: { required: () => true },
  // Consent is given in the form; nothing to remember beyond the grant.
  loadExistingGrant: undefined,
});
provider.proxy = false;

provider.listen(port, '127.0.0.1', () => {
  console.log(`listening ${issuer}`);
});
