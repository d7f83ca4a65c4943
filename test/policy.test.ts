import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  computeFreshness,
  conditionalMatches,
  currentAge,
  decideReuse,
  decideStorage,
  mergeNotModified,
  notModifiedMatches,
  parseCacheControl,
  parseDeltaSeconds,
  varyMatches,
  type Freshness
} from '../src/cache/policy.js'
import type { RequestHeaders, ResponseHeaders } from '../src/headers.js'

// Every time is explicit; the real clock is never read.
const T0 = Date.UTC(2024, 0, 15, 12, 0, 0)
const SEC = 1000
const DAY = 86_400 * SEC

function httpDate (ms: number): string {
  return new Date(ms).toUTCString()
}

interface FreshOptions {
  status?: number
  req?: RequestHeaders
  requestTime?: number
  responseTime?: number
}

/** A response received at T0 (request sent at T0 too unless told), dated T0 unless it says otherwise. */
function freshness (headers: ResponseHeaders, opts: FreshOptions = {}): Freshness {
  const responseTime = opts.responseTime ?? T0
  return computeFreshness(opts.status ?? 200, opts.req ?? {}, { date: httpDate(T0), ...headers }, opts.requestTime ?? responseTime, responseTime)
}

/** decideReuse's action for a request with these headers at `now`. */
function reuse (f: Freshness, req: RequestHeaders, now: number): string {
  return decideReuse(f, parseCacheControl(req['cache-control']), req, now).action
}

function storable (status: number, res: ResponseHeaders, req: RequestHeaders = {}, method = 'GET'): boolean {
  return decideStorage(method, req, status, res).store
}

// ---------------------------------------------------------------------------------------------
// parseCacheControl, parseDeltaSeconds

test('parseCacheControl: lower-case names, unquoted values, bare directives as true', () => {
  const d = parseCacheControl('Max-Age=60, PUBLIC, no-cache="Set-Cookie, X-A", s-maxage = 120')
  assert.equal(d.get('max-age'), '60')
  assert.equal(d.get('public'), true)
  assert.equal(d.get('no-cache'), 'Set-Cookie, X-A')
  assert.equal(d.get('s-maxage'), '120')
  assert.equal(d.size, 4)
})

test('parseCacheControl: the first occurrence of a repeated directive wins', () => {
  assert.equal(parseCacheControl('max-age=10, max-age=20').get('max-age'), '10')
})

test('parseCacheControl: empty or absent gives no directives', () => {
  assert.equal(parseCacheControl(undefined).size, 0)
  assert.equal(parseCacheControl('').size, 0)
})

test('parseCacheControl: empty list elements are accepted', () => {
  const d = parseCacheControl('max-age=600,, no-cache')
  assert.equal(d.get('max-age'), '600')
  assert.equal(d.get('no-cache'), true)
  assert.equal(parseCacheControl(', public').get('public'), true)
  // What it costs: the response's no-cache is lost and the response is served without validation.
  assert.equal(reuse(freshness({ 'cache-control': 'max-age=600,, no-cache' }), {}, T0 + SEC), 'validate')
})

test('parseCacheControl: a malformed element does not hide the directives after it', () => {
  const d = parseCacheControl('max-age=600, foo bar, no-cache')
  assert.equal(d.get('max-age'), '600')
  assert.equal(d.get('no-cache'), true)
})

test('parseDeltaSeconds: non-negative integers only, capped at 2^31', () => {
  assert.equal(parseDeltaSeconds('0'), 0)
  assert.equal(parseDeltaSeconds('60'), 60)
  assert.equal(parseDeltaSeconds('99999999999'), 2147483648)
  for (const bad of ['-1', '1.5', 'abc', '', ' 5', '1e3']) assert.equal(parseDeltaSeconds(bad), undefined, bad)
  assert.equal(parseDeltaSeconds(true), undefined)
  assert.equal(parseDeltaSeconds(undefined), undefined)
})

// ---------------------------------------------------------------------------------------------
// computeFreshness: lifetime

test('freshness: a shared cache uses s-maxage over max-age', () => {
  assert.equal(freshness({ 'cache-control': 'max-age=60, s-maxage=120' }).lifetime, 120)
  assert.equal(freshness({ 'cache-control': 's-maxage=10, max-age=600' }).lifetime, 10)
})

test('freshness: max-age takes precedence over Expires', () => {
  const f = freshness({ 'cache-control': 'max-age=60', expires: httpDate(T0 + DAY) })
  assert.equal(f.lifetime, 60)
  // Even an invalid Expires does not override max-age.
  assert.equal(freshness({ 'cache-control': 'max-age=60', expires: '0' }).lifetime, 60)
})

test('freshness: Expires minus Date, not minus the time of receipt', () => {
  // Dated T0, received 5 s later, expires an hour after its Date.
  const f = freshness({ expires: httpDate(T0 + 3600 * SEC) }, { responseTime: T0 + 5 * SEC })
  assert.equal(f.lifetime, 3600)
})

test('freshness: Expires without Date is measured from the time of receipt', () => {
  const f = computeFreshness(200, {}, { expires: httpDate(T0 + 600 * SEC) }, T0, T0)
  assert.equal(f.lifetime, 600)
})

test('freshness: an invalid Expires ("0") means already stale', () => {
  for (const bad of ['0', '-1', 'never', '']) {
    const f = freshness({ expires: bad, 'last-modified': httpDate(T0 - 100 * DAY) })
    assert.equal(f.lifetime, 0, `${JSON.stringify(bad)}: no heuristic either, Expires was present`)
    assert.equal(reuse(f, {}, T0), 'validate', JSON.stringify(bad))
  }
})

test('freshness: several Expires values make the response stale', () => {
  assert.equal(freshness({ expires: [httpDate(T0 + DAY), httpDate(T0 + 2 * DAY)] }).lifetime, 0)
})

test('freshness: an Expires that is not an HTTP-date means already stale, even if Date.parse reads it as the future', () => {
  // A misconfigured origin meaning "an hour", and an ISO 8601 timestamp: neither is an HTTP-date.
  assert.equal(freshness({ expires: '3600' }).lifetime, 0, '"3600"')
  assert.equal(freshness({ expires: '2099-01-01T00:00:00Z' }).lifetime, 0, 'ISO 8601')
})

test('freshness: an asctime-date is GMT whatever the local time zone', () => {
  const saved = process.env.TZ
  process.env.TZ = 'America/New_York'
  try {
    // Date T0 in asctime form (12:00:00 GMT), Expires an hour later in IMF-fixdate form.
    const asctime = 'Mon Jan 15 12:00:00 2024'
    assert.equal(new Date(T0).toUTCString(), 'Mon, 15 Jan 2024 12:00:00 GMT')
    const f = computeFreshness(200, {}, { date: asctime, expires: httpDate(T0 + 3600 * SEC) }, T0, T0)
    assert.equal(f.lifetime, 3600)
  } finally {
    if (saved === undefined) delete process.env.TZ
    else process.env.TZ = saved
  }
})

test('freshness: an Expires in the past gives 0, not a negative lifetime', () => {
  assert.equal(freshness({ expires: httpDate(T0 - 3600 * SEC) }).lifetime, 0)
})

test('freshness: heuristic is 10% of Date minus Last-Modified for a 200', () => {
  const f = freshness({ 'last-modified': httpDate(T0 - 10 * DAY) })
  assert.equal(f.lifetime, 86_400)
})

test('freshness: no heuristic for a 302 unless it is public', () => {
  const lm = { 'last-modified': httpDate(T0 - 10 * DAY) }
  assert.equal(freshness(lm, { status: 302 }).lifetime, 0)
  assert.equal(freshness({ ...lm, 'cache-control': 'public' }, { status: 302 }).lifetime, 86_400)
})

test('freshness: no heuristic without Last-Modified, or with a Last-Modified after Date', () => {
  assert.equal(freshness({}).lifetime, 0)
  assert.equal(freshness({ 'last-modified': httpDate(T0 + DAY) }).lifetime, 0)
})

test('freshness: an invalid max-age makes the response stale instead of falling back to Expires', () => {
  assert.equal(freshness({ 'cache-control': 'max-age=abc', expires: httpDate(T0 + DAY) }).lifetime, 0)
})

test('freshness: proxy-revalidate and a public Set-Cookie response keep their lifetime', () => {
  // http-cache-semantics zeroes these; the policy must not.
  assert.equal(freshness({ 'cache-control': 'max-age=60, proxy-revalidate' }).lifetime, 60)
  assert.equal(freshness({ 'cache-control': 'public, max-age=60', 'set-cookie': 'a=1' }).lifetime, 60)
})

// ---------------------------------------------------------------------------------------------
// computeFreshness: age

test('age: the Age header counts towards the initial age', () => {
  const f = freshness({ age: '100', 'cache-control': 'max-age=300' })
  assert.equal(f.initialAge, 100)
  assert.equal(currentAge(f, T0), 100)
  assert.equal(currentAge(f, T0 + 50 * SEC), 150)
})

test('age: only the first of several Age values counts', () => {
  assert.equal(freshness({ age: ['30', '500'] }).initialAge, 30)
  assert.equal(freshness({ age: '30, 500' }).initialAge, 30)
})

test('age: an invalid Age is ignored, not taken as maximally old', () => {
  for (const bad of ['abc', '-5', '1.5', '']) {
    const f = freshness({ age: bad, 'cache-control': 'max-age=60' })
    assert.equal(f.initialAge, 0, JSON.stringify(bad))
    assert.equal(reuse(f, {}, T0 + 30 * SEC), 'fresh', JSON.stringify(bad))
  }
})

test('age: corrected initial age adds the response delay to the Age value', () => {
  // Request sent at T0, response received 3 s later, dated on receipt (apparent age 0), Age 10.
  const f = computeFreshness(200, {}, { date: httpDate(T0 + 3 * SEC), age: '10', 'cache-control': 'max-age=60' }, T0, T0 + 3 * SEC)
  assert.equal(f.initialAge, 13)
  assert.equal(f.responseTime, T0 + 3 * SEC)
  assert.equal(currentAge(f, T0 + 3 * SEC), 13)
  assert.equal(currentAge(f, T0 + 10 * SEC), 20)
})

test('age: apparent age (receipt minus Date) wins when it is larger', () => {
  // Dated 30 s before receipt, 2 s of delay, Age 5: max(30, 5 + 2) = 30.
  const f = computeFreshness(200, {}, { date: httpDate(T0 - 30 * SEC), age: '5' }, T0 - 2 * SEC, T0)
  assert.equal(f.initialAge, 30)
})

test('age: a Date in the future does not make the apparent age negative', () => {
  const f = computeFreshness(200, {}, { date: httpDate(T0 + 3600 * SEC) }, T0, T0)
  assert.equal(f.initialAge, 0)
})

test('freshness records validators and the Vary values of the request (unordered lists sorted)', () => {
  const f = freshness(
    { etag: 'W/"v1"', 'last-modified': httpDate(T0 - DAY), vary: 'Accept-Encoding, Accept-Language' },
    { req: { 'accept-encoding': 'gzip,   br' } }
  )
  assert.equal(f.etag, 'W/"v1"')
  assert.equal(f.lastModified, httpDate(T0 - DAY))
  assert.deepEqual(f.vary, new Map([['accept-encoding', 'br,gzip'], ['accept-language', undefined]]))
  assert.equal(freshness({}).vary, null)
})

// ---------------------------------------------------------------------------------------------
// decideStorage

test('storage: a plain 200 with max-age is stored', () => {
  const d = decideStorage('GET', {}, 200, { 'cache-control': 'max-age=60' })
  assert.equal(d.store, true)
  assert.equal(d.reason, '')
  assert.deepEqual(d.headers, { 'cache-control': 'max-age=60' })
})

test('storage: no-store is not stored', () => {
  assert.equal(storable(200, { 'cache-control': 'max-age=60, no-store' }), false)
})

test('storage: a request with no-store is not stored', () => {
  assert.equal(storable(200, { 'cache-control': 'max-age=60' }, { 'cache-control': 'no-store' }), false)
})

test('storage: unqualified private is not stored by a shared cache', () => {
  assert.equal(storable(200, { 'cache-control': 'private, max-age=60' }), false)
})

test('storage: a request with Authorization is not stored without public, s-maxage or must-revalidate', () => {
  const auth = { authorization: 'Bearer t0k3n' }
  assert.equal(storable(200, { 'cache-control': 'max-age=60' }, auth), false)
  assert.equal(storable(200, { 'last-modified': httpDate(T0 - DAY) }, auth), false)
  // Control: the same response without Authorization is storable.
  assert.equal(storable(200, { 'cache-control': 'max-age=60' }), true)
})

test('storage: a request with Authorization is stored when the response has s-maxage', () => {
  assert.equal(storable(200, { 'cache-control': 's-maxage=60' }, { authorization: 'Bearer t0k3n' }), true)
})

test('storage: a request with Authorization is stored when the response has public or must-revalidate', () => {
  const auth = { authorization: 'Bearer t0k3n' }
  assert.equal(storable(200, { 'cache-control': 'public, max-age=60' }, auth), true)
  assert.equal(storable(200, { 'cache-control': 'max-age=60, must-revalidate' }, auth), true)
})

test('storage: Set-Cookie without public is not stored', () => {
  const d = decideStorage('GET', {}, 200, { 'cache-control': 'max-age=60', 'set-cookie': 'sid=abc' })
  assert.equal(d.store, false)
  assert.equal(d.reason, 'set-cookie')
})

test('storage: Set-Cookie with public is stored', () => {
  assert.equal(storable(200, { 'cache-control': 'public, max-age=60', 'set-cookie': ['a=1', 'b=2'] }), true)
})

test('storage: Vary: * is not stored', () => {
  assert.equal(storable(200, { 'cache-control': 'max-age=60', vary: '*' }), false)
  assert.equal(storable(200, { 'cache-control': 'max-age=60', vary: 'Accept-Encoding, *' }), false)
  assert.equal(storable(200, { 'cache-control': 'max-age=60', vary: ['Accept-Encoding', '*'] }), false)
  assert.equal(storable(200, { 'cache-control': 'max-age=60', vary: 'Accept-Encoding' }), true)
})

test('storage: 206 Partial Content is not stored', () => {
  assert.equal(storable(206, { 'cache-control': 'max-age=60', 'content-range': 'bytes 0-9/100' }), false)
})

test('storage: a Range request and non-GET methods are not stored', () => {
  assert.equal(storable(200, { 'cache-control': 'max-age=60' }, { range: 'bytes=0-9' }), false)
  assert.equal(storable(200, { 'cache-control': 'max-age=60' }, {}, 'POST'), false)
})

test('storage: a 302 without explicit freshness or public is not stored', () => {
  assert.equal(storable(302, { location: '/x' }), false)
  assert.equal(storable(302, { location: '/x', 'cache-control': 'max-age=60' }), true)
})

test('storage: private="x-user" strips only that field and the response is stored', () => {
  const res: ResponseHeaders = {
    'cache-control': 'private="X-User", max-age=60',
    'x-user': 'alice',
    'x-other': 'kept',
    'content-type': 'text/plain'
  }
  const copy = structuredClone(res)
  const d = decideStorage('GET', {}, 200, res)
  assert.equal(d.store, true, d.reason)
  assert.equal(d.headers['x-user'], undefined)
  assert.equal(d.headers['x-other'], 'kept')
  assert.equal(d.headers['content-type'], 'text/plain')
  const cc = parseCacheControl(d.headers['cache-control'] as string)
  assert.equal(cc.has('private'), false)
  assert.equal(cc.get('max-age'), '60')
  assert.deepEqual(res, copy, 'the input headers are not mutated')
})

test('storage: no-cache="set-cookie" strips that field and the response is stored', () => {
  const d = decideStorage('GET', {}, 200, {
    'cache-control': 'no-cache="set-cookie", max-age=60',
    'set-cookie': 'sid=abc',
    etag: '"e"'
  })
  assert.equal(d.store, true, d.reason)
  assert.equal(d.headers['set-cookie'], undefined)
  assert.equal(d.headers.etag, '"e"')
  const cc = parseCacheControl(d.headers['cache-control'] as string)
  assert.equal(cc.has('no-cache'), false)
  assert.equal(cc.get('max-age'), '60')
  // The stored response is fresh: qualified no-cache does not mean "always revalidate".
  const f = computeFreshness(200, {}, { date: httpDate(T0), ...d.headers }, T0, T0)
  assert.equal(reuse(f, {}, T0 + 10 * SEC), 'fresh')
})

test('storage: with a qualified directive, a no-store or private after an empty list element is still honoured', () => {
  const res = (cc: string): ResponseHeaders => ({ 'cache-control': cc, 'x-user': 'alice' })
  assert.equal(storable(200, res('private="x-user", max-age=60,, no-store')), false)
  assert.equal(storable(200, res('no-cache="x-user", max-age=60,, private')), false)
})

test('storage: array header values (two Cache-Control lines) do not throw', () => {
  const res: ResponseHeaders = { 'cache-control': ['public', 'max-age=60'], vary: ['Accept-Encoding', 'Accept-Language'] }
  assert.equal(storable(200, res), true)
  // A no-store on the second line still counts.
  assert.equal(storable(200, { 'cache-control': ['max-age=60', 'no-store'] }), false)
  const f = freshness(res)
  assert.equal(f.lifetime, 60)
  assert.deepEqual([...(f.vary?.keys() ?? [])], ['accept-encoding', 'accept-language'])
  assert.doesNotThrow(() => freshness({ expires: [httpDate(T0 + DAY)], 'last-modified': [httpDate(T0 - DAY)], etag: ['"a"'] }))
})

// ---------------------------------------------------------------------------------------------
// decideReuse

const MAX_AGE_100 = { 'cache-control': 'max-age=100' }

test('reuse: a fresh response is served', () => {
  assert.equal(reuse(freshness(MAX_AGE_100), {}, T0 + 50 * SEC), 'fresh')
})

test('reuse: a stale response is validated', () => {
  assert.equal(reuse(freshness(MAX_AGE_100), {}, T0 + 150 * SEC), 'validate')
})

test('reuse: fresh means lifetime greater than age (stale at exactly the lifetime)', () => {
  const f = freshness(MAX_AGE_100)
  assert.equal(reuse(f, {}, T0 + 99 * SEC), 'fresh')
  assert.equal(reuse(f, {}, T0 + 100 * SEC), 'validate')
})

test('reuse: request no-cache validates even a fresh response', () => {
  assert.equal(reuse(freshness(MAX_AGE_100), { 'cache-control': 'no-cache' }, T0 + 1 * SEC), 'validate')
})

test('reuse: Pragma: no-cache validates when the request has no Cache-Control', () => {
  assert.equal(reuse(freshness(MAX_AGE_100), { pragma: 'no-cache' }, T0 + 1 * SEC), 'validate')
})

test('reuse: Pragma: no-cache is ignored when the request has Cache-Control', () => {
  assert.equal(reuse(freshness(MAX_AGE_100), { pragma: 'no-cache', 'cache-control': 'max-age=1000' }, T0 + 1 * SEC), 'fresh')
})

test('reuse: request max-age rejects an older response', () => {
  const f = freshness(MAX_AGE_100)
  const now = T0 + 50 * SEC
  assert.equal(reuse(f, { 'cache-control': 'max-age=30' }, now), 'validate')
  assert.equal(reuse(f, { 'cache-control': 'max-age=50' }, now), 'fresh', 'age equal to max-age is acceptable')
  assert.equal(reuse(f, { 'cache-control': 'max-age=60' }, now), 'fresh')
})

test('reuse: request min-fresh needs that much freshness left', () => {
  const f = freshness(MAX_AGE_100)
  const now = T0 + 50 * SEC // 50 s of freshness left
  assert.equal(reuse(f, { 'cache-control': 'min-fresh=60' }, now), 'validate')
  assert.equal(reuse(f, { 'cache-control': 'min-fresh=50' }, now), 'fresh')
  assert.equal(reuse(f, { 'cache-control': 'min-fresh=40' }, now), 'fresh')
})

test('reuse: request max-stale=N allows a response stale by at most N seconds', () => {
  const f = freshness(MAX_AGE_100)
  const now = T0 + 150 * SEC // stale by 50 s
  assert.equal(reuse(f, { 'cache-control': 'max-stale=60' }, now), 'stale')
  assert.equal(reuse(f, { 'cache-control': 'max-stale=50' }, now), 'stale')
  assert.equal(reuse(f, { 'cache-control': 'max-stale=30' }, now), 'validate')
})

test('reuse: request max-stale without a value allows any staleness', () => {
  assert.equal(reuse(freshness(MAX_AGE_100), { 'cache-control': 'max-stale' }, T0 + 365 * DAY), 'stale')
})

test('reuse: max-stale does not turn a fresh response into a stale one', () => {
  assert.equal(reuse(freshness(MAX_AGE_100), { 'cache-control': 'max-stale' }, T0 + 10 * SEC), 'fresh')
})

for (const directive of ['must-revalidate', 'proxy-revalidate']) {
  test(`reuse: max-stale never serves a stale response that has ${directive}`, () => {
    const f = freshness({ 'cache-control': `max-age=100, ${directive}` })
    const now = T0 + 150 * SEC
    assert.equal(reuse(f, { 'cache-control': 'max-stale' }, now), 'validate')
    assert.equal(reuse(f, { 'cache-control': 'max-stale=1000' }, now), 'validate')
    // Control: while fresh it is served without revalidation.
    assert.equal(reuse(f, {}, T0 + 50 * SEC), 'fresh')
  })
}

test('reuse: max-stale never serves a stale response that has s-maxage', () => {
  const f = freshness({ 'cache-control': 's-maxage=100' })
  const now = T0 + 150 * SEC
  assert.equal(reuse(f, { 'cache-control': 'max-stale' }, now), 'validate')
  assert.equal(reuse(f, { 'cache-control': 'max-stale=1000' }, now), 'validate')
  assert.equal(reuse(f, {}, T0 + 50 * SEC), 'fresh')
})

test('reuse: response no-cache (unqualified) validates even when fresh', () => {
  const f = freshness({ 'cache-control': 'no-cache, max-age=100' })
  assert.equal(f.lifetime, 100)
  assert.equal(reuse(f, {}, T0 + 1 * SEC), 'validate')
  assert.equal(reuse(f, { 'cache-control': 'max-stale' }, T0 + 1 * SEC), 'validate')
})

// ---------------------------------------------------------------------------------------------
// varyMatches

test('varyMatches: a response without Vary matches any request', () => {
  assert.equal(varyMatches(freshness({}), { 'accept-encoding': 'gzip' }), true)
})

test('varyMatches: normalises whitespace around commas and inside values', () => {
  const f = freshness({ vary: 'Accept-Encoding' }, { req: { 'accept-encoding': 'gzip,  deflate' } })
  assert.equal(varyMatches(f, { 'accept-encoding': 'gzip, deflate' }), true)
  assert.equal(varyMatches(f, { 'accept-encoding': 'gzip,deflate' }), true)
  assert.equal(varyMatches(f, { 'accept-encoding': '  gzip ,   deflate  ' }), true)
  const lang = freshness({ vary: 'accept-language' }, { req: { 'accept-language': 'en  GB' } })
  assert.equal(varyMatches(lang, { 'accept-language': 'en GB' }), true)
})

test('varyMatches: different values, or a header present on one side only, do not match', () => {
  const f = freshness({ vary: 'Accept-Encoding' }, { req: { 'accept-encoding': 'gzip' } })
  assert.equal(varyMatches(f, { 'accept-encoding': 'br' }), false)
  assert.equal(varyMatches(f, {}), false)
  const absent = freshness({ vary: 'Accept-Encoding' })
  assert.equal(varyMatches(absent, {}), true)
  assert.equal(varyMatches(absent, { 'accept-encoding': 'gzip' }), false)
})

test('varyMatches: every listed field must match', () => {
  const f = freshness({ vary: 'Accept-Encoding, Accept-Language' }, { req: { 'accept-encoding': 'gzip', 'accept-language': 'fr' } })
  assert.equal(varyMatches(f, { 'accept-encoding': 'gzip', 'accept-language': 'fr' }), true)
  assert.equal(varyMatches(f, { 'accept-encoding': 'gzip', 'accept-language': 'de' }), false)
  assert.equal(varyMatches(f, { 'accept-encoding': 'br', 'accept-language': 'fr' }), false)
})

// ---------------------------------------------------------------------------------------------
// mergeNotModified

test('mergeNotModified: the 304\'s headers replace the stored ones, except content-length and the like', () => {
  const stored: ResponseHeaders = {
    'content-type': 'application/javascript',
    'content-length': '1234',
    'content-encoding': 'gzip',
    etag: '"v1"',
    'cache-control': 'max-age=60',
    date: httpDate(T0),
    'x-old': 'kept'
  }
  const copy = structuredClone(stored)
  const notModified: ResponseHeaders = {
    'content-length': '0',
    'content-type': 'text/plain',
    'content-encoding': 'identity',
    etag: '"v1"',
    'cache-control': 'max-age=300',
    date: httpDate(T0 + 3600 * SEC),
    'x-new': 'added'
  }
  const merged = mergeNotModified(stored, notModified)
  assert.deepEqual(merged, {
    'content-type': 'application/javascript',
    'content-length': '1234',
    'content-encoding': 'gzip',
    etag: '"v1"',
    'cache-control': 'max-age=300',
    date: httpDate(T0 + 3600 * SEC),
    'x-old': 'kept',
    'x-new': 'added'
  })
  assert.deepEqual(stored, copy, 'the stored headers are not mutated')
})

// ---------------------------------------------------------------------------------------------
// notModifiedMatches

test('notModifiedMatches: a strong ETag matches the same strong ETag only', () => {
  assert.equal(notModifiedMatches(freshness({ etag: '"a"' }), { etag: '"a"' }), true)
  assert.equal(notModifiedMatches(freshness({ etag: '"a"' }), { etag: '"b"' }), false)
})

test('notModifiedMatches: a weak ETag matches by weak comparison', () => {
  assert.equal(notModifiedMatches(freshness({ etag: 'W/"a"' }), { etag: 'W/"a"' }), true)
  assert.equal(notModifiedMatches(freshness({ etag: '"a"' }), { etag: 'W/"a"' }), true)
  assert.equal(notModifiedMatches(freshness({ etag: 'W/"a"' }), { etag: 'W/"b"' }), false)
})

test('notModifiedMatches: a 304 with an ETag does not apply to a stored response without one', () => {
  assert.equal(notModifiedMatches(freshness({ 'last-modified': httpDate(T0 - DAY) }), { etag: '"a"' }), false)
})

test('notModifiedMatches: a strong ETag in the 304 does not select a stored response with only the weak form', () => {
  assert.equal(notModifiedMatches(freshness({ etag: 'W/"a"' }), { etag: '"a"' }), false)
})

test('notModifiedMatches: Last-Modified must equal the stored one', () => {
  const lm = httpDate(T0 - DAY)
  const f = freshness({ 'last-modified': lm })
  assert.equal(notModifiedMatches(f, { 'last-modified': lm }), true)
  assert.equal(notModifiedMatches(f, { 'last-modified': httpDate(T0 - 2 * DAY) }), false)
})

test('notModifiedMatches: a 304 without validators applies to a stored response without validators', () => {
  assert.equal(notModifiedMatches(freshness({ 'cache-control': 'max-age=60' }), { 'cache-control': 'max-age=60' }), true)
})

// ---------------------------------------------------------------------------------------------
// conditionalMatches

test('conditionalMatches: If-None-Match with a list of tags', () => {
  const f = freshness({ etag: '"a"' })
  assert.equal(conditionalMatches(f, { 'if-none-match': '"x", "a"' }), true)
  assert.equal(conditionalMatches(f, { 'if-none-match': '"x","a"' }), true)
  assert.equal(conditionalMatches(f, { 'if-none-match': '"x", "y"' }), false)
  assert.equal(conditionalMatches(f, { 'if-none-match': '"a"' }), true)
})

test('conditionalMatches: If-None-Match uses weak comparison', () => {
  assert.equal(conditionalMatches(freshness({ etag: '"a"' }), { 'if-none-match': 'W/"a"' }), true)
  assert.equal(conditionalMatches(freshness({ etag: 'W/"a"' }), { 'if-none-match': '"a"' }), true)
  assert.equal(conditionalMatches(freshness({ etag: 'W/"a"' }), { 'if-none-match': 'W/"b"' }), false)
})

test('conditionalMatches: If-None-Match: * matches a stored response with an ETag', () => {
  assert.equal(conditionalMatches(freshness({ etag: '"a"' }), { 'if-none-match': '*' }), true)
})

test('conditionalMatches: If-None-Match: * matches a stored response even without an ETag', () => {
  assert.equal(conditionalMatches(freshness({ 'cache-control': 'max-age=60' }), { 'if-none-match': '*' }), true)
})

test('conditionalMatches: If-None-Match finds an entity tag that contains a comma', () => {
  assert.equal(conditionalMatches(freshness({ etag: '"a,b"' }), { 'if-none-match': '"x", "a,b"' }), true)
})

test('conditionalMatches: If-None-Match takes precedence over If-Modified-Since', () => {
  const f = freshness({ etag: '"a"', 'last-modified': httpDate(T0 - DAY) })
  // If-Modified-Since alone would give 304; the failing If-None-Match decides.
  assert.equal(conditionalMatches(f, { 'if-modified-since': httpDate(T0) }), true)
  assert.equal(conditionalMatches(f, { 'if-none-match': '"b"', 'if-modified-since': httpDate(T0) }), false)
})

test('conditionalMatches: If-Modified-Since is true when Last-Modified is not after it', () => {
  const f = freshness({ 'last-modified': httpDate(T0 - DAY) })
  assert.equal(conditionalMatches(f, { 'if-modified-since': httpDate(T0 - DAY) }), true, 'equal')
  assert.equal(conditionalMatches(f, { 'if-modified-since': httpDate(T0) }), true, 'later')
  assert.equal(conditionalMatches(f, { 'if-modified-since': httpDate(T0 - 2 * DAY) }), false, 'earlier')
  assert.equal(conditionalMatches(f, { 'if-modified-since': 'not a date' }), false, 'invalid')
  assert.equal(conditionalMatches(f, {}), false, 'no conditional')
})

test('conditionalMatches: If-Modified-Since against a stored response without Last-Modified uses its Date', () => {
  // Dated and received at T0, no Last-Modified; the client's copy is from an hour later.
  const f = freshness({ 'cache-control': 'max-age=60' })
  assert.equal(conditionalMatches(f, { 'if-modified-since': httpDate(T0 + 3600 * SEC) }), true)
  assert.equal(conditionalMatches(f, { 'if-modified-since': httpDate(T0 - 3600 * SEC) }), false)
})
