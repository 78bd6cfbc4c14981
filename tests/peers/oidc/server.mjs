// A real OIDC provider for the end-to-end tests: panva's oidc-provider over HTTPS on loopback.
//
// Usage:
//   node tests/peers/oidc/server.mjs --cert CERT.pem --key KEY.pem [--port N] [--host 127.0.0.1]
//                                    [--short-ttl SECONDS]
//
// Prints one JSON line on stdout once it accepts connections:
//   {"port": N, "issuer": "https://127.0.0.1:N", "token_endpoint": ..., "jwks_uri": ...}
//
// What it serves (the contract the e2e harness relies on):
// - OIDC discovery at {issuer}/.well-known/openid-configuration, a JWKS at its jwks_uri
//   (one RS256 key generated at start, so every run has fresh keys).
// - The client-credentials grant, client_secret_basic, issuing JWT access tokens through the
//   resource-indicators feature: resource `urn:interceptor` gives aud "interceptor" (the default
//   when no resource is asked for), `urn:other-audience` gives aud "other-audience".
// - sub is the client id (client credentials have no end user); a `groups` claim per client.
// - Clients (secret = "<client id>-secret"):
//     agent-alice  groups ["agents"]            tokens live 10 minutes
//     agent-admin  groups ["admins", "agents"]  tokens live 10 minutes
//     agent-short  groups ["agents"]            tokens live --short-ttl seconds (default 2)

import { generateKeyPair, randomUUID } from 'node:crypto';
import { promisify } from 'node:util';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const LONG_TTL_SECONDS = 10 * 60;

const RESOURCES = {
  'urn:interceptor': 'interceptor',
  'urn:other-audience': 'other-audience',
};
const DEFAULT_RESOURCE = 'urn:interceptor';

/** Groups and token lifetime of each client; `ttl: null` means the --short-ttl value. */
const CLIENTS = {
  'agent-alice': { groups: ['agents'], ttl: LONG_TTL_SECONDS },
  'agent-admin': { groups: ['admins', 'agents'], ttl: LONG_TTL_SECONDS },
  'agent-short': { groups: ['agents'], ttl: null },
};

function options() {
  const { values } = parseArgs({
    options: {
      cert: { type: 'string' },
      key: { type: 'string' },
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string', default: '0' },
      'short-ttl': { type: 'string', default: '2' },
    },
  });
  if (!values.cert || !values.key) {
    throw new Error('oidc server: --cert and --key are required');
  }
  const shortTtl = Number.parseInt(values['short-ttl'], 10);
  if (!(shortTtl > 0)) {
    const given = values['short-ttl'];
    throw new Error(`oidc server: --short-ttl must be a positive integer, got ${given}`);
  }
  return { ...values, port: Number.parseInt(values.port, 10), shortTtl };
}

async function signingJwks() {
  // Asynchronous on purpose: Node 20 can deadlock in GC when a key from
  // generateKeyPairSync is exported to JWK.
  const { privateKey } = await promisify(generateKeyPair)('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { keys: [{ ...jwk, kid: randomUUID(), alg: 'RS256', use: 'sig' }] };
}

function providerConfig(shortTtl, jwks) {
  const ttlOf = (clientId) => CLIENTS[clientId]?.ttl ?? shortTtl;
  return {
    clients: Object.keys(CLIENTS).map((clientId) => ({
      client_id: clientId,
      client_secret: `${clientId}-secret`,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    })),
    jwks,
    cookies: { keys: [randomUUID()] },
    features: {
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      devInteractions: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => DEFAULT_RESOURCE,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, resource, client) => {
          const audience = RESOURCES[resource];
          if (!audience) {
            throw new Provider.errors.InvalidTarget(`unknown resource ${resource}`);
          }
          return {
            scope: 'aws',
            audience,
            accessTokenFormat: 'jwt',
            accessTokenTTL: ttlOf(client.clientId),
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    extraTokenClaims: (_ctx, token) => ({ groups: CLIENTS[token.clientId]?.groups ?? [] }),
    ttl: {
      ClientCredentials: (_ctx, token, client) => token.resourceServer?.accessTokenTTL
        ?? ttlOf(client.clientId),
    },
  };
}

async function main() {
  const opts = options();
  let handler = (_req, res) => {
    res.statusCode = 503;
    res.end('starting');
  };
  const server = createServer(
    { cert: readFileSync(opts.cert), key: readFileSync(opts.key) },
    (req, res) => handler(req, res),
  );
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, resolve);
  });

  // The issuer names the bound port, so the provider is built after listen.
  const { port } = server.address();
  const issuer = `https://${opts.host}:${port}`;
  const provider = new Provider(issuer, providerConfig(opts.shortTtl, await signingJwks()));
  provider.on('server_error', (_ctx, err) => console.error('oidc server error:', err));
  handler = provider.callback();

  const ready = {
    port,
    issuer,
    token_endpoint: `${issuer}/token`,
    jwks_uri: `${issuer}/jwks`,
    clients: Object.fromEntries(
      Object.entries(CLIENTS)
        .map(([id, c]) => [id, { groups: c.groups, ttl: c.ttl ?? opts.shortTtl }]),
    ),
  };
  process.stdout.write(`${JSON.stringify(ready)}\n`);

  // Exit at once: open keep-alive connections must not hold the harness's teardown.
  const stop = () => process.exit(0);
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => {
  console.error(err.message ?? err);
  process.exit(1);
});
