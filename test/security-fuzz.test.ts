import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import fc from 'fast-check'
import { request } from 'undici'
import { computeFreshness, decideReuse, decideStorage, parseCacheControl } from '../src/cache/policy.js'
import type { ResponseHeaders } from '../src/headers.js'
import { Peer } from '../src/index.js'
import { startOrigin, type CountingOrigin } from './helpers/origin.js'

// Property-based fuzzing of the shared-cache rules. Response headers are generated as
// structures, so the oracle reads the structure, never re-parses the text it produced.
//
// Two generators:
// - canonical: directive names in lower case, each at most once, values of the right kind;
// - adversarial: any casing, duplicates, values of any kind on any directive, several lines.
// The storage rules must hold for both.

const SEED = 20_240_611
const NOW = Date.UTC(2025, 0, 15, 12, 0, 0)

interface Directive { name: string, value: string | undefined }
interface Spec {
  status: number
  method: string
  directives: Directive[]
  /** How the directives are written: one line or several. */
  lines: number[]
  separator: string
  vary: string | undefined
  setCookie: string | string[] | undefined
  date: string | string[] | undefined
  expires: string | string[] | undefined
  age: string | string[] | undefined
  contentRange: string | undefined
  lastModified: string | undefined
  request: Record<string, string>
  requestCacheControl: string | undefined
}

const NAMES = ['max-age', 's-maxage', 'no-store', 'no-cache', 'private', 'public', 'must-revalidate', 'proxy-revalidate',
  'immutable', 'stale-while-revalidate', 'stale-if-error', 'no-transform', 'must-understand', 'x-ext']
const SECONDS = ['max-age', 's-maxage', 'stale-while-revalidate', 'stale-if-error']
const FIELD_LISTS = ['"set-cookie"', '"x-user, set-cookie"', '"Set-Cookie"', 'set-cookie']

const anyValue = fc.oneof(
  fc.constant(undefined),
  fc.nat({ max: 100_000 }).map(String),
  fc.constantFrom('-1', '0', '1.5', '2147483649', '99999999999999999999', '', '""', '"60"', '"no-store, private"', '"a\\"b"', 'x'),
  fc.constantFrom(...FIELD_LISTS)
)

/** A value that fits the directive: seconds for the delta directives, field lists for the qualified ones. */
function canonicalValue (name: string): fc.Arbitrary<string | undefined> {
  if (SECONDS.includes(name)) return fc.oneof(fc.nat({ max: 100_000 }).map(String), fc.constantFrom('0', '2147483649'))
  if (name === 'private' || name === 'no-cache') return fc.oneof(fc.constant(undefined), fc.constantFrom(...FIELD_LISTS))
  return fc.constant(undefined)
}

const canonicalDirectives: fc.Arbitrary<Directive[]> = fc.shuffledSubarray(NAMES, { maxLength: 5 })
  .chain((names) => fc.tuple(...names.map((name) => canonicalValue(name).map((value) => ({ name, value })))))

const adversarialDirectives: fc.Arbitrary<Directive[]> = fc.array(
  fc.record({ name: fc.mixedCase(fc.constantFrom(...NAMES)), value: anyValue }), { maxLength: 7 })

const httpDate = fc.date({ min: new Date(NOW - 400 * 86400_000), max: new Date(NOW + 400 * 86400_000), noInvalidDate: true })
const dateValue: fc.Arbitrary<string | string[] | undefined> = fc.oneof(
  fc.constant(undefined),
  httpDate.map((d) => d.toUTCString()),
  httpDate.map((d) => d.toUTCString().replace(/^(\w{3}), (\d\d) (\w{3}) \d\d(\d\d)/, 'Sunday, $2-$3-$4')),
  fc.constantFrom('0', '-1', '', 'garbage', 'Thu, 01 Jan 1970 00:00:00 GMT', 'Fri, 31 Dec 9999 23:59:59 GMT', 'Sun Nov  6 08:49:37 1994', 'Wed, 32 Foo 2025 99:99:99 GMT'),
  fc.tuple(httpDate, httpDate).map(([x, y]) => [x.toUTCString(), y.toUTCString()])
)
const ageValue: fc.Arbitrary<string | string[] | undefined> = fc.oneof(
  fc.constant(undefined),
  fc.nat({ max: 10_000_000 }).map(String),
  fc.constantFrom('-5', '1.5', 'abc', '99999999999999999999', '5, 10', ''),
  fc.constant(['5', '10'] as string[])
)
// Biased towards what a cache would otherwise store (200s, few other blockers), so that the
// directive rules themselves decide most runs.
const rarely = <T>(arb: fc.Arbitrary<T>): fc.Arbitrary<T | undefined> =>
  fc.oneof({ arbitrary: fc.constant(undefined), weight: 4 }, { arbitrary: arb, weight: 1 })
const varyValue = rarely(fc.mixedCase(fc.constantFrom('*', 'Accept, *', ' * ', '*, Cookie', 'Cookie', 'Accept-Encoding, Cookie', '', ',', 'x-user')))
const setCookieValue: fc.Arbitrary<string | string[] | undefined> = rarely(fc.constantFrom<string | string[]>('session=alice; HttpOnly', ['a=1', 'b=2']))
const statusValue = fc.oneof(
  { arbitrary: fc.constant(200), weight: 6 },
  { arbitrary: fc.constantFrom(200, 203, 204, 206, 300, 301, 302, 304, 307, 308, 404, 405, 410, 414, 451, 500, 501, 502, 503), weight: 3 },
  { arbitrary: fc.integer({ min: 200, max: 599 }), weight: 1 }
)
const requestHeaders = fc.record({
  authorization: rarely(fc.constant('Bearer alice')),
  range: rarely(fc.constant('bytes=0-3')),
  cookie: fc.option(fc.constant('user=alice'), { nil: undefined })
}).map((r) => Object.fromEntries(Object.entries(r).filter(([, v]) => v !== undefined)) as Record<string, string>)

function specOf (directives: fc.Arbitrary<Directive[]>, method: fc.Arbitrary<string>): fc.Arbitrary<Spec> {
  return fc.record({
    status: statusValue,
    method,
    directives,
    lines: fc.array(fc.nat({ max: 6 }), { maxLength: 2 }),
    separator: fc.constantFrom(', ', ',', ' , ', ',,', ' ,'),
    vary: varyValue,
    setCookie: setCookieValue,
    date: dateValue,
    expires: dateValue,
    age: ageValue,
    contentRange: fc.option(fc.constantFrom('bytes 0-3/10', 'bytes */10', 'garbage'), { nil: undefined }),
    lastModified: fc.option(httpDate.map((d) => d.toUTCString()), { nil: undefined }),
    request: requestHeaders,
    requestCacheControl: fc.option(fc.constantFrom('max-age=0', 'no-cache', 'max-stale', 'max-stale=100', 'min-fresh=10', 'only-if-cached', 'no-store', 'max-age=abc'), { nil: undefined })
  })
}

const canonicalSpec = specOf(canonicalDirectives, fc.constant('GET'))
const adversarialSpec = specOf(adversarialDirectives, fc.constantFrom('GET', 'GET', 'GET', 'HEAD', 'POST'))

// The statuses src/cache/policy.ts says it implements (for must-understand).
const UNDERSTOOD = new Set([200, 203, 204, 300, 301, 302, 303, 307, 308, 404, 405, 410, 414, 501])

const directiveText = (d: Directive): string => (d.value === undefined ? d.name : `${d.name}=${d.value}`)

/** The Cache-Control field as the origin sends it: one string, or one string per line. */
function cacheControlOf (spec: Spec): string | string[] | undefined {
  if (spec.directives.length === 0) return undefined
  const cuts = [...new Set(spec.lines.map((l) => l % spec.directives.length))].filter((c) => c > 0).sort((x, y) => x - y)
  if (cuts.length === 0) return spec.directives.map(directiveText).join(spec.separator)
  const out: string[] = []
  let start = 0
  for (const cut of [...cuts, spec.directives.length]) {
    out.push(spec.directives.slice(start, cut).map(directiveText).join(spec.separator))
    start = cut
  }
  return out
}

function responseHeadersOf (spec: Spec): ResponseHeaders {
  const h: ResponseHeaders = {}
  const cc = cacheControlOf(spec)
  if (cc !== undefined) h['cache-control'] = cc
  if (spec.vary !== undefined) h.vary = spec.vary
  if (spec.setCookie !== undefined) h['set-cookie'] = spec.setCookie
  if (spec.date !== undefined) h.date = spec.date
  if (spec.expires !== undefined) h.expires = spec.expires
  if (spec.age !== undefined) h.age = spec.age
  if (spec.contentRange !== undefined) h['content-range'] = spec.contentRange
  if (spec.lastModified !== undefined) h['last-modified'] = spec.lastModified
  return h
}

/**
 * Why a shared cache must not store this response (RFC 9111 section 3), read off the
 * structure: undefined when storing is allowed.
 */
function mustNotStore (spec: Spec): string | undefined {
  const has = (name: string, qualified?: boolean): boolean => spec.directives.some((d) =>
    d.name.toLowerCase() === name && (qualified === undefined || (d.value !== undefined) === qualified))
  if (spec.method !== 'GET' && spec.method !== 'HEAD') return 'method'
  // RFC 9111 section 5.2.2.3: must-understand limits storing to statuses the cache
  // implements, and for those it overrides no-store.
  const mustUnderstand = has('must-understand')
  if (mustUnderstand && !UNDERSTOOD.has(spec.status)) return 'must-understand on a status not implemented'
  if (has('no-store') && !mustUnderstand) return 'no-store'
  if (has('private', false)) return 'private'
  if (spec.status === 206) return '206'
  if (spec.vary !== undefined && spec.vary.split(',').some((f) => f.trim() === '*')) return 'vary *'
  // private="set-cookie" / no-cache="set-cookie" let the rest be stored without the cookie.
  const stripsCookie = spec.directives.some((d) => ['private', 'no-cache'].includes(d.name.toLowerCase()) && d.value !== undefined &&
    d.value.replace(/^"|"$/g, '').split(',').some((f) => f.trim().toLowerCase() === 'set-cookie'))
  if (spec.setCookie !== undefined && !has('public') && !stripsCookie) return 'set-cookie without public'
  if (spec.request.authorization !== undefined && !has('public') && !has('s-maxage') && !has('must-revalidate')) return 'authorization'
  return undefined
}

function runPolicy (spec: Spec): { store: boolean, lifetime: number, initialAge: number, action: string } {
  const res = responseHeadersOf(spec)
  const req: Record<string, string> = { ...spec.request }
  if (spec.requestCacheControl !== undefined) req['cache-control'] = spec.requestCacheControl
  const decision = decideStorage(spec.method, req, spec.status, res)
  const f = computeFreshness(spec.status, req, decision.headers, NOW - 100, NOW)
  const reuse = decideReuse(f, parseCacheControl(req['cache-control']), req, NOW + 30_000)
  return { store: decision.store, lifetime: f.lifetime, initialAge: f.initialAge, action: reuse.action }
}

describe('policy fuzz (pure functions)', () => {
  test('parseCacheControl never throws on arbitrary text', () => {
    fc.assert(fc.property(fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.stringMatching(/^[a-zA-Z=",\\ -]{0,40}$/)), (text) => {
      const d = parseCacheControl(text)
      for (const [k] of d) assert.equal(k, k.toLowerCase())
    }), { numRuns: 3000, seed: SEED })
  })

  test('decideStorage, computeFreshness and decideReuse never throw; lifetime and age are finite and >= 0 (adversarial, 5,000 runs)', () => {
    fc.assert(fc.property(adversarialSpec, (spec) => {
      const r = runPolicy(spec)
      assert.ok(Number.isFinite(r.lifetime) && r.lifetime >= 0, `lifetime ${r.lifetime}`)
      assert.ok(Number.isFinite(r.initialAge) && r.initialAge >= 0, `initialAge ${r.initialAge}`)
      assert.equal(typeof r.action, 'string')
    }), { numRuns: 5000, seed: SEED })
  })

  test('storage rules hold for canonical headers (5,000 runs)', () => {
    fc.assert(fc.property(canonicalSpec, (spec) => {
      const why = mustNotStore(spec)
      const r = runPolicy(spec)
      if (why !== undefined) assert.equal(r.store, false, `stored despite ${why}: ${JSON.stringify(responseHeadersOf(spec))}`)
    }), { numRuns: 5000, seed: SEED })
  })

  test('storage rules hold for adversarial headers: any casing, duplicates, odd values, split lines (5,000 runs)', () => {
    fc.assert(fc.property(adversarialSpec, (spec) => {
      const why = mustNotStore(spec)
      const r = runPolicy(spec)
      if (why !== undefined) assert.equal(r.store, false, `stored despite ${why}: ${JSON.stringify(responseHeadersOf(spec))}`)
    }), { numRuns: 5000, seed: SEED })
  })

  test('census: what kinds of adversarial headers are stored against the rules', (t) => {
    const counts: Record<string, number> = {}
    const examples: Record<string, string> = {}
    let runs = 0
    fc.assert(fc.property(adversarialSpec, (spec) => {
      runs++
      const why = mustNotStore(spec)
      if (why === undefined || !runPolicy(spec).store) return
      counts[why] = (counts[why] ?? 0) + 1
      examples[why] ??= JSON.stringify(responseHeadersOf(spec)['cache-control'])
    }), { numRuns: 5000, seed: SEED })
    t.diagnostic(`${runs} runs; stored against the rules: ${JSON.stringify(counts)}; examples ${JSON.stringify(examples)}`)
    assert.equal(runs, 5000)
  })
})

describe('end-to-end fuzz: a real origin, a real Peer', () => {
  let origin: CountingOrigin
  let peer: Peer
  const specs = new Map<string, Spec>()
  let id = 0

  before(async () => {
    origin = await startOrigin((req, res) => {
      const spec = specs.get(new URL(req.url ?? '/', 'http://x').searchParams.get('id') ?? '')
      if (spec === undefined) {
        res.writeHead(404)
        return res.end()
      }
      const headers = responseHeadersOf(spec)
      for (const name in headers) res.setHeader(name, headers[name] as string | string[])
      const body = `fuzz ${req.url}`
      res.setHeader('content-length', Buffer.byteLength(body))
      res.writeHead(spec.status)
      res.end(body)
    })
    peer = new Peer({ self: 'http://127.0.0.1:1' })
    await peer.ready
  })
  after(async () => {
    await peer.destroy()
    await origin.close()
  })

  /** Two identical requests through the Peer. */
  async function twice (spec: Spec): Promise<{ statuses: number[], fetched: number, cacheStatus: string[] }> {
    const key = String(id++)
    specs.set(key, spec)
    const path = `/fuzz?id=${key}`
    const statuses: number[] = []
    const cacheStatus: string[] = []
    for (let i = 0; i < 2; i++) {
      const res = await request(`${origin.url}${path}`, { headers: spec.request, dispatcher: peer })
      await res.body.dump()
      statuses.push(res.statusCode)
      cacheStatus.push(String(res.headers['cache-status']))
    }
    specs.delete(key)
    return { statuses, fetched: origin.count(path), cacheStatus }
  }

  /**
   * The status the caller gets: the origin's, but for a GET of a range (which this origin
   * ignores) that the Peer fills whole and answers 206 from a 200 (local-cache.ts, #fillsWhole).
   */
  const expectedStatus = (spec: Spec): number =>
    spec.method === 'GET' && spec.request.range !== undefined && spec.request.authorization === undefined && spec.status === 200 ? 206 : spec.status

  test('canonical headers, 200 runs: no crash, and what must not be stored reaches the origin every time', async () => {
    await fc.assert(fc.asyncProperty(canonicalSpec, async (spec) => {
      const r = await twice(spec)
      assert.deepEqual(r.statuses, [expectedStatus(spec), expectedStatus(spec)])
      const why = mustNotStore(spec)
      if (why !== undefined) assert.equal(r.fetched, 2, `${why}: ${JSON.stringify(responseHeadersOf(spec))} ${r.cacheStatus.join(' | ')}`)
    }), { numRuns: 200, seed: SEED })
  })

  const adversarialViolations: string[] = []
  test('adversarial headers, 200 runs: no crash, every response arrives with the origin\'s status (206 for a range of a 200)', async () => {
    await fc.assert(fc.asyncProperty(adversarialSpec.filter((s) => s.method === 'GET'), async (spec) => {
      const r = await twice(spec)
      assert.deepEqual(r.statuses, [expectedStatus(spec), expectedStatus(spec)])
      const why = mustNotStore(spec)
      if (why !== undefined && r.fetched !== 2) adversarialViolations.push(`${why}: ${JSON.stringify(responseHeadersOf(spec)['cache-control'])}`)
    }), { numRuns: 200, seed: SEED })
    // The Peer is still healthy afterwards.
    const res = await request(`${origin.url}/after-fuzz`, { dispatcher: peer })
    await res.body.dump()
    assert.equal(peer.stats().flights, 0)
  })

  test('adversarial headers: what must not be stored reached the origin every time', (t) => {
    t.diagnostic(`${adversarialViolations.length} of 200 runs served from the cache against the rules; first: ${JSON.stringify(adversarialViolations.slice(0, 5))}`)
    assert.equal(adversarialViolations.length, 0)
  })
})
