// A real OpenID provider (node-oidc-provider) for portguard's end-to-end tests.
//
// It issues RFC 9068 JWT access tokens through the client_credentials grant with resource
// indicators, signs them with RS256, ES256 or EdDSA depending on the client, and can rotate its
// signing keys without a restart (POST /admin/rotate). Test use only: plain HTTP, no admin auth,
// in-memory state. It binds to loopback unless an address is given explicitly, and never makes
// outbound connections. See README.md.
//
//   node provider.js [--host 127.0.0.1] [--port 9000] [--audience URI]... [--ttl SECONDS]
//                    [--issuer URL]
//
// Environment (arguments win): HOST, PORT, AUDIENCE (comma-separated), AT_TTL, ISSUER.

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

// ---------------------------------------------------------------------------------------------
// Options

function die(msg) {
  process.stderr.write(`provider: ${msg}\n`);
  process.exit(2);
}

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      host: { type: 'string' },
      port: { type: 'string' },
      audience: { type: 'string', multiple: true },
      ttl: { type: 'string' },
      issuer: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  }));
} catch (err) {
  die(err.message);
}
if (args.help) {
  process.stdout.write('usage: node provider.js [--host ADDR] [--port N] [--audience URI]... [--ttl SECONDS] [--issuer URL]\n');
  process.exit(0);
}

const HOST = args.host ?? process.env.HOST ?? '127.0.0.1';
const PORT = Number(args.port ?? process.env.PORT ?? 9000);
if (!Number.isInteger(PORT) || PORT < 0 || PORT > 65535) die(`bad port: ${args.port ?? process.env.PORT}`);

const AUDIENCES = (args.audience ?? (process.env.AUDIENCE ?? 'https://host.test/portguard').split(','))
  .flatMap((a) => a.split(','))
  .map((a) => a.trim())
  .filter(Boolean);
if (AUDIENCES.length === 0) die('no audience');
for (const a of AUDIENCES) {
  try {
    const u = new URL(a);
    if (u.hash) throw new Error('fragment');
  } catch {
    die(`audience must be an absolute URI without fragment: ${a}`);
  }
}

// Seconds, optionally suffixed with "s" (e.g. "10" or "10s").
function parseTtl(v) {
  const m = /^\s*(\d+)\s*s?\s*$/.exec(String(v ?? ''));
  const n = m ? Number(m[1]) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > 86400) return undefined;
  return n;
}
let accessTokenTTL = parseTtl(args.ttl ?? process.env.AT_TTL ?? '300');
if (accessTokenTTL === undefined) die(`bad TTL (integer seconds 1..86400): ${args.ttl ?? process.env.AT_TTL}`);

const SCOPES = ['db:connect', 'ssh:login', 'web:admin', 'openid'];

// client_id -> signing alg of its access tokens. All secrets are "secret" except ci-job's.
const CLIENTS = [
  { client_id: 'ci-job', client_secret: 'ci-secret', alg: 'RS256' },
  { client_id: 'other-job', client_secret: 'other-secret', alg: 'RS256' },
  { client_id: 'ci-job-rs', client_secret: 'secret', alg: 'RS256' },
  { client_id: 'ci-job-es', client_secret: 'secret', alg: 'ES256' },
  { client_id: 'ci-job-ed', client_secret: 'secret', alg: 'EdDSA' },
];
const ALG_OF = new Map(CLIENTS.map((c) => [c.client_id, c.alg]));

// ---------------------------------------------------------------------------------------------
// Keys

const ALGS = ['RS256', 'ES256', 'EdDSA'];
let generation = 0;

function newKey(alg) {
  let pair;
  switch (alg) {
    case 'RS256': pair = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }); break;
    case 'ES256': pair = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }); break;
    case 'EdDSA': pair = crypto.generateKeyPairSync('ed25519'); break;
    default: throw new Error(`unknown alg ${alg}`);
  }
  const jwk = pair.privateKey.export({ format: 'jwk' });
  const short = { RS256: 'rs', ES256: 'es', EdDSA: 'ed' }[alg];
  jwk.kid = `${short}-${generation}-${crypto.randomBytes(4).toString('hex')}`;
  jwk.alg = alg;
  jwk.use = 'sig';
  return jwk;
}

// Private JWKs the provider holds (their public halves are published), and the kid currently
// used for signing per alg.
let keys = [];
const signingKid = {};

function rotate(only, dropOld) {
  generation += 1;
  const fresh = only.map(newKey);
  if (dropOld) {
    keys = keys.filter((k) => !only.includes(k.alg));
  }
  // Current signing keys first, so they are also what discovery-driven defaults pick.
  keys = [...fresh, ...keys];
  for (const k of fresh) signingKid[k.alg] = k.kid;
  return fresh.map((k) => k.kid);
}
rotate(ALGS, true);

// ---------------------------------------------------------------------------------------------
// Provider

let ISSUER;
let provider;
let callback;

function buildProvider() {
  const configuration = {
    clients: CLIENTS.map(({ client_id, client_secret }) => ({
      client_id,
      client_secret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic', // client_secret_post is accepted too
      scope: SCOPES.join(' '),
    })),
    clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
    jwks: { keys: keys.map((k) => ({ ...k })) },
    scopes: SCOPES,
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // No resource parameter: the first audience.
        defaultResource: () => AUDIENCES[0],
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resourceIndicator, client) => {
          if (!AUDIENCES.includes(resourceIndicator)) {
            throw new errors.InvalidTarget(`unknown resource ${resourceIndicator}`);
          }
          const alg = ALG_OF.get(client.clientId) ?? 'RS256';
          return {
            scope: SCOPES.join(' '),
            audience: resourceIndicator,
            accessTokenFormat: 'jwt',
            accessTokenTTL,
            jwt: { sign: { alg, kid: signingKid[alg] } },
          };
        },
      },
    },
    enabledJWA: {
      idTokenSigningAlgValues: ALGS,
    },
    ttl: {
      ClientCredentials: () => accessTokenTTL,
    },
    renderError: (ctx, out) => {
      ctx.type = 'json';
      ctx.body = out;
    },
  };
  const p = new Provider(ISSUER, configuration);
  p.on('server_error', (ctx, err) => process.stderr.write(`provider: server_error: ${err.stack}\n`));
  p.on('grant.error', (ctx, err) => process.stderr.write(`provider: grant.error: ${err.message}${err.error_description ? ` (${err.error_description})` : ''}\n`));
  return p;
}

function install() {
  provider = buildProvider();
  callback = provider.callback();
}

// ---------------------------------------------------------------------------------------------
// Admin endpoints (test-only, same listener, no auth)

function json(res, status, body) {
  const data = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) });
  res.end(data);
}

function state() {
  return {
    issuer: ISSUER,
    audiences: AUDIENCES,
    access_token_ttl: accessTokenTTL,
    signing_kids: { ...signingKid },
    kids: keys.map((k) => k.kid),
    clients: Object.fromEntries(ALG_OF),
  };
}

function admin(req, res, url) {
  const flag = (name) => ['1', 'true', 'yes'].includes(url.searchParams.get(name) ?? '');
  if (url.pathname === '/admin/state' && req.method === 'GET') {
    return json(res, 200, state());
  }
  if (url.pathname === '/admin/rotate' && req.method === 'POST') {
    let only = ALGS;
    const a = url.searchParams.get('alg');
    if (a) {
      only = a.split(',');
      const bad = only.find((x) => !ALGS.includes(x));
      if (bad) return json(res, 400, { error: `unknown alg ${bad}` });
    }
    const previous = { ...signingKid };
    const added = rotate(only, flag('drop_old'));
    install();
    process.stderr.write(`provider: rotated ${only.join(',')}: new kids ${added.join(',')}${flag('drop_old') ? ' (old dropped)' : ''}\n`);
    return json(res, 200, { ...state(), previous_signing_kids: previous, new_kids: added });
  }
  if (url.pathname === '/admin/ttl' && req.method === 'POST') {
    const ttl = parseTtl(url.searchParams.get('seconds'));
    if (ttl === undefined) return json(res, 400, { error: 'seconds must be an integer 1..86400' });
    accessTokenTTL = ttl;
    process.stderr.write(`provider: access token TTL now ${ttl}s\n`);
    return json(res, 200, state());
  }
  return json(res, 404, { error: 'not found' });
}

// ---------------------------------------------------------------------------------------------
// HTTP server: delegates to the current provider instance

const server = http.createServer((req, res) => {
  const start = process.hrtime.bigint();
  res.on('finish', () => {
    const ms = Number(process.hrtime.bigint() - start) / 1e6;
    const path = (req.url ?? '').split('?')[0];
    process.stderr.write(`provider: ${req.method} ${path} ${res.statusCode} ${ms.toFixed(1)}ms\n`);
  });
  let url;
  try {
    url = new URL(req.url ?? '/', 'http://localhost');
  } catch {
    return json(res, 400, { error: 'bad request target' });
  }
  if (url.pathname.startsWith('/admin/')) return admin(req, res, url);
  return callback(req, res);
});
server.headersTimeout = 10_000;
server.requestTimeout = 30_000;

server.on('error', (err) => die(`listen ${HOST}:${PORT}: ${err.message}`));
server.listen(PORT, HOST, () => {
  const { port } = server.address();
  const hostPart = HOST.includes(':') ? `[${HOST}]` : HOST;
  ISSUER = (args.issuer ?? process.env.ISSUER ?? `http://${hostPart}:${port}`).replace(/\/+$/, '');
  try {
    install();
  } catch (err) {
    process.stderr.write(`provider: ${err.stack}\n`);
    process.exit(1);
  }
  process.stderr.write(`provider: issuer ${ISSUER}, audiences ${AUDIENCES.join(' ')}, AT TTL ${accessTokenTTL}s, kids ${keys.map((k) => k.kid).join(' ')}\n`);
  process.stdout.write(`READY ${ISSUER}\n`);
});

function shutdown(sig) {
  process.stderr.write(`provider: ${sig}, exiting\n`);
  server.close();
  server.closeAllConnections?.();
  process.exit(0);
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
