#!/usr/bin/env bash
# Smoke test of the test OpenID provider: discovery, JWKS, a JWT access token per client
# (RS256, ES256, EdDSA; header, claims and signature checked), TTL, errors, and key rotation.
# Needs node, curl and `npm ci` done in this directory. Exits non-zero on the first failure.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
[ -d node_modules/oidc-provider ] || { echo "smoke: run 'npm ci' in $here first" >&2; exit 2; }

AUD=https://host.test/portguard
AUD2=https://other.test/portguard
TTL=17
work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

fail() { echo "smoke: FAIL: $*" >&2; echo "--- provider stderr ---" >&2; cat "$work/err" >&2 || true; exit 1; }
ok() { echo "smoke: ok: $*"; }

# Port 0: the kernel picks a free port; the provider prints it in its READY line.
AT_TTL=$TTL node provider.js --host 127.0.0.1 --port 0 --audience "$AUD" --audience "$AUD2" \
  >"$work/out" 2>"$work/err" &
pid=$!
for _ in $(seq 100); do
  grep -q '^READY ' "$work/out" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || fail "provider exited early"
  sleep 0.1
done
ISS=$(awk '/^READY /{print $2; exit}' "$work/out")
[ -n "$ISS" ] || fail "no READY line"
case "$ISS" in http://127.0.0.1:[0-9]*) ;; *) fail "unexpected issuer $ISS" ;; esac
ok "provider pid $pid ready at $ISS"

# http GET|POST URL [curl args...] -> body in $work/body, status echoed
http() {
  local method=$1 url=$2; shift 2
  curl -sS -o "$work/body" -w '%{http_code}' -X "$method" "$@" "$url"
}

# Node helper: js EXPR-SCRIPT [args...]; reads files from $work.
js() { node --input-type=module -e "$1" -- "${@:2}"; }

# --- discovery
[ "$(http GET "$ISS/.well-known/openid-configuration")" = 200 ] || fail "discovery status"
cp "$work/body" "$work/disc.json"
js '
import fs from "node:fs";
const [file, iss] = process.argv.slice(1);
const d = JSON.parse(fs.readFileSync(file));
if (d.issuer !== iss) throw new Error(`issuer ${d.issuer} != ${iss}`);
if (d.jwks_uri !== iss + "/jwks") throw new Error(`jwks_uri ${d.jwks_uri}`);
if (d.token_endpoint !== iss + "/token") throw new Error(`token_endpoint ${d.token_endpoint}`);
if (!d.grant_types_supported.includes("client_credentials")) throw new Error("no client_credentials");
' "$work/disc.json" "$ISS" || fail "discovery content"
ok "discovery (issuer, jwks_uri, token_endpoint, client_credentials)"

# fetch_jwks NAME -> $work/NAME.json
fetch_jwks() {
  [ "$(http GET "$ISS/jwks")" = 200 ] || fail "jwks status"
  cp "$work/body" "$work/$1.json"
}
# jwks_kids FILE -> "alg:kid" lines
jwks_kids() {
  js '
import fs from "node:fs";
for (const k of JSON.parse(fs.readFileSync(process.argv[1])).keys) console.log(`${k.alg}:${k.kid}`);
' "$1"
}

fetch_jwks jwks0
js '
import fs from "node:fs";
const { keys } = JSON.parse(fs.readFileSync(process.argv[1]));
if (keys.length !== 3) throw new Error(`${keys.length} keys`);
const kids = new Set(keys.map((k) => k.kid));
if (kids.size !== 3 || kids.has(undefined)) throw new Error("kids not 3 distinct");
const want = { RS256: ["RSA", undefined], ES256: ["EC", "P-256"], EdDSA: ["OKP", "Ed25519"] };
for (const [alg, [kty, crv]] of Object.entries(want)) {
  const k = keys.find((x) => x.alg === alg);
  if (!k || k.kty !== kty || k.crv !== crv || k.use !== "sig") throw new Error(`no ${alg} key`);
  if (k.d || k.p || k.q) throw new Error(`private part published for ${alg}`);
}
const rsa = keys.find((x) => x.kty === "RSA");
if (Buffer.from(rsa.n, "base64url").length !== 256) throw new Error("RSA key is not 2048 bits");
' "$work/jwks0.json" || fail "jwks content"
ok "jwks: 3 keys, 3 kids ($(jwks_kids "$work/jwks0.json" | tr '\n' ' '))"

# token CLIENT SECRET SCOPE [AUD] [post] -> token in $work/token (basic auth unless "post")
token() {
  local client=$1 secret=$2 scope=$3 aud=${4:-$AUD} how=${5:-basic} st
  if [ "$how" = post ]; then
    st=$(http POST "$ISS/token" -d grant_type=client_credentials -d "client_id=$client" \
      -d "client_secret=$secret" --data-urlencode "scope=$scope" --data-urlencode "resource=$aud")
  else
    st=$(http POST "$ISS/token" -u "$client:$secret" -d grant_type=client_credentials \
      --data-urlencode "scope=$scope" --data-urlencode "resource=$aud")
  fi
  [ "$st" = 200 ] || fail "token for $client: HTTP $st $(cat "$work/body")"
  js '
import fs from "node:fs";
const r = JSON.parse(fs.readFileSync(process.argv[1]));
if (r.token_type !== "Bearer" || typeof r.access_token !== "string") throw new Error("bad token response");
fs.writeFileSync(process.argv[2], r.access_token);
' "$work/body" "$work/token" || fail "token response for $client"
}

# check_token CLIENT ALG SCOPE TTL JWKSFILE [AUD] -> prints kid; checks header, claims, signature
check_token() {
  js '
import fs from "node:fs";
import crypto from "node:crypto";
const [tokFile, iss, client, alg, scope, ttl, jwksFile, aud] = process.argv.slice(1);
const tok = fs.readFileSync(tokFile, "utf8");
const parts = tok.split(".");
if (parts.length !== 3) throw new Error("not a JWS compact token");
const h = JSON.parse(Buffer.from(parts[0], "base64url"));
const p = JSON.parse(Buffer.from(parts[1], "base64url"));
const fail = (m) => { throw new Error(`${client}: ${m}; header ${JSON.stringify(h)} payload ${JSON.stringify(p)}`); };
if (h.typ !== "at+jwt") fail("typ");
if (h.alg !== alg) fail(`alg ${h.alg} != ${alg}`);
if (!h.kid) fail("no kid");
if (p.iss !== iss) fail("iss");
if (p.aud !== aud) fail(`aud ${p.aud} != ${aud}`);
if (!(p.scope ?? "").split(" ").includes(scope)) fail(`scope lacks ${scope}`);
if (p.client_id !== client || p.sub !== client) fail("client_id/sub");
if (!p.jti) fail("jti");
if (p.exp - p.iat !== Number(ttl)) fail(`exp-iat ${p.exp - p.iat} != ${ttl}`);
if (Math.abs(p.iat - Date.now() / 1000) > 5) fail("iat not now");
const jwk = JSON.parse(fs.readFileSync(jwksFile)).keys.find((k) => k.kid === h.kid);
if (!jwk) fail(`kid ${h.kid} not in JWKS`);
if (jwk.alg !== alg) fail(`JWKS key alg ${jwk.alg}`);
const key = crypto.createPublicKey({ key: jwk, format: "jwk" });
const data = Buffer.from(`${parts[0]}.${parts[1]}`);
const sig = Buffer.from(parts[2], "base64url");
const good = alg === "EdDSA" ? crypto.verify(null, data, key, sig)
  : alg === "ES256" ? crypto.verify("sha256", data, { key, dsaEncoding: "ieee-p1363" }, sig)
  : crypto.verify("sha256", data, key, sig);
if (!good) fail("signature does not verify against the JWKS key");
console.log(h.kid);
' "$work/token" "$ISS" "$1" "$2" "$3" "$4" "$5" "${6:-$AUD}"
}

declare -A ALG=([ci-job-rs]=RS256 [ci-job-es]=ES256 [ci-job-ed]=EdDSA)
declare -A SCOPE=([ci-job-rs]=db:connect [ci-job-es]=ssh:login [ci-job-ed]="web:admin")
declare -A KID0 KID1

# --- one token per client, each alg
for c in ci-job-rs ci-job-es ci-job-ed; do
  token "$c" secret "${SCOPE[$c]} db:connect"
  KID0[$c]=$(check_token "$c" "${ALG[$c]}" "${SCOPE[$c]}" "$TTL" "$work/jwks0.json") || fail "token check $c"
  ok "$c: typ at+jwt, alg ${ALG[$c]}, kid ${KID0[$c]}, aud $AUD, scope ${SCOPE[$c]}, exp-iat $TTL, signature"
done

# ci-job with client_secret_post, and the second audience
token ci-job ci-secret db:connect "$AUD" post
check_token ci-job RS256 db:connect "$TTL" "$work/jwks0.json" >/dev/null || fail "ci-job (post)"
ok "ci-job via client_secret_post"
token other-job other-secret ssh:login "$AUD2"
check_token other-job RS256 ssh:login "$TTL" "$work/jwks0.json" "$AUD2" >/dev/null || fail "other-job aud2"
ok "other-job with resource $AUD2"

# --- errors
st=$(http POST "$ISS/token" -u ci-job-rs:wrong -d grant_type=client_credentials -d scope=db:connect --data-urlencode "resource=$AUD")
[ "$st" = 401 ] && grep -q invalid_client "$work/body" || fail "wrong secret: $st $(cat "$work/body")"
st=$(http POST "$ISS/token" -u ci-job-rs:secret -d grant_type=client_credentials -d scope=db:connect --data-urlencode "resource=https://unknown.test/")
[ "$st" = 400 ] && grep -q invalid_target "$work/body" || fail "unknown resource: $st $(cat "$work/body")"
ok "wrong secret -> 401 invalid_client; unknown resource -> 400 invalid_target"

# --- TTL change at runtime
[ "$(http POST "$ISS/admin/ttl?seconds=5")" = 200 ] || fail "admin/ttl"
token ci-job-es secret ssh:login
check_token ci-job-es ES256 ssh:login 5 "$work/jwks0.json" >/dev/null || fail "short TTL token"
[ "$(http POST "$ISS/admin/ttl?seconds=$TTL")" = 200 ] || fail "admin/ttl back"
ok "POST /admin/ttl?seconds=5 -> exp-iat 5"

# --- rotation, keeping the old public keys
[ "$(http POST "$ISS/admin/rotate")" = 200 ] || fail "rotate: $(cat "$work/body")"
fetch_jwks jwks1
n=$(jwks_kids "$work/jwks1.json" | wc -l)
[ "$n" = 6 ] || fail "after rotate: $n keys, want 6"
for c in ci-job-rs ci-job-es ci-job-ed; do
  jwks_kids "$work/jwks1.json" | grep -qx "${ALG[$c]}:${KID0[$c]}" || fail "old kid ${KID0[$c]} gone after rotate"
  token "$c" secret "${SCOPE[$c]}"
  kid=$(check_token "$c" "${ALG[$c]}" "${SCOPE[$c]}" "$TTL" "$work/jwks1.json") || fail "token after rotate $c"
  [ "$kid" != "${KID0[$c]}" ] || fail "$c still signs with old kid $kid"
  ok "rotated: $c signs with new kid $kid (old ${KID0[$c]} still published)"
  KID1[$c]=$kid
done

# --- rotation dropping the old keys
[ "$(http POST "$ISS/admin/rotate?drop_old=1")" = 200 ] || fail "rotate drop_old: $(cat "$work/body")"
fetch_jwks jwks2
n=$(jwks_kids "$work/jwks2.json" | wc -l)
[ "$n" = 3 ] || fail "after rotate drop_old: $n keys, want 3"
for c in ci-job-rs ci-job-es ci-job-ed; do
  for old in "${KID0[$c]}" "${KID1[$c]}"; do
    ! jwks_kids "$work/jwks2.json" | grep -q ":$old\$" || fail "old kid $old still published after drop_old"
  done
  token "$c" secret "${SCOPE[$c]}"
  kid=$(check_token "$c" "${ALG[$c]}" "${SCOPE[$c]}" "$TTL" "$work/jwks2.json") || fail "token after drop_old $c"
  ok "rotated with drop_old: $c signs with $kid, old kids gone"
done

# --- SIGTERM
kill -TERM "$pid"
for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
! kill -0 "$pid" 2>/dev/null || fail "provider did not exit on SIGTERM"
wait "$pid" && rc=0 || rc=$?
[ "$rc" = 0 ] || fail "provider exit status $rc after SIGTERM"
pid=
ok "SIGTERM -> exit 0"
echo "smoke: PASS"
