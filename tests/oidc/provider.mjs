// A real OpenID Provider (oidc-provider) on loopback, for tests/tests/oidc.rs.
//
// Usage: node provider.mjs <port> <resource> <node_modules>
//   (<node_modules> holds the pinned oidc-provider that `make e2e-deps` installs)
//
// - Issuer `http://127.0.0.1:<port>` (no trailing slash), OIDC discovery and JWKS at the usual
//   places.
// - Fresh signing keys on every start (one RSA key for RS256, one P-256 key for ES256), with
//   random `kid`s: restarting the process on the same port is a key rotation.
// - Two confidential clients for the client-credentials grant (`client_secret_basic`):
//   `palisade-rs` gets RS256 access tokens, `palisade-es` ES256 ones. Both must name the resource
//   (RFC 8707 `resource`), which the provider only knows as <resource>: tokens are JWTs
//   (RFC 9068, `typ: at+jwt`) with `aud` = <resource> and the granted scopes.
//
// Writes one JSON object per line to stdout: first
//   {"event":"ready","issuer":...,"kids":{"RS256":...,"ES256":...}}
// then {"event":"request","method":...,"path":...,"status":...} for every request served, so a
// test can count what the IdP saw (discovery, JWKS fetches, token requests).

import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [port, resource, nodeModules] = process.argv.slice(2);
if (!port || !resource || !nodeModules) {
  console.error('usage: node provider.mjs <port> <resource> <node_modules>');
  process.exit(2);
}
const { default: Provider, errors } = await import(
  pathToFileURL(join(nodeModules, 'oidc-provider', 'lib', 'index.js')).href
);
const issuer = `http://127.0.0.1:${port}`;
const CLIENT_SECRET = 'palisade-e2e-client-secret';
const SCOPES = ['public:read', 'confidential:read'];

function signingKey(type, options, alg) {
  const { privateKey } = generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), kid: `${alg.toLowerCase()}-${randomUUID()}`, alg, use: 'sig' };
}

const rsa = signingKey('rsa', { modulusLength: 2048 }, 'RS256');
const ec = signingKey('ec', { namedCurve: 'P-256' }, 'ES256');

const client = (clientId) => ({
  client_id: clientId,
  client_secret: CLIENT_SECRET,
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: 'client_secret_basic',
  scope: SCOPES.join(' '),
});

const provider = new Provider(issuer, {
  clients: [client('palisade-rs'), client('palisade-es')],
  jwks: { keys: [rsa, ec] },
  scopes: SCOPES,
  ttl: { ClientCredentials: 600 },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // A client-credentials request must name the resource: no default audience.
      defaultResource: () => undefined,
      useGrantedResource: () => false,
      getResourceServerInfo: (ctx, indicator, oidcClient) => {
        if (indicator !== resource) {
          throw new errors.InvalidTarget(`unknown resource ${indicator}`);
        }
        return {
          audience: resource,
          scope: SCOPES.join(' '),
          accessTokenTTL: 600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: oidcClient.clientId === 'palisade-es' ? 'ES256' : 'RS256' } },
        };
      },
    },
  },
});
provider.proxy = false;

// Every request, after it is served (quietly: no errors on stderr for expected 4xx).
provider.use(async (ctx, next) => {
  await next();
  process.stdout.write(
    `${JSON.stringify({ event: 'request', method: ctx.method, path: ctx.path, status: ctx.status })}\n`,
  );
});
provider.on('server_error', (_ctx, error) => console.error('server_error', error));

const server = provider.listen(Number(port), '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ event: 'ready', issuer, kids: { RS256: rsa.kid, ES256: ec.kid } })}\n`);
});

// The test kills this process; also end on a closed stdin (the test process went away).
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
