import CachePolicy from 'http-cache-semantics'
import type { RequestHeaders, ResponseHeaders } from '../headers.js'
import { headerString, requestField } from '../headers.js'

/**
 * RFC 9111 decisions for a *shared* cache. Every decision is a return value; nothing here
 * does I/O or reads the clock (times are passed in, in milliseconds).
 *
 * The storage decision is http-cache-semantics' `storable()`, fed canonical input so that its
 * known gaps do not leak through (array header values joined; qualified `private="x"` and
 * `no-cache="x"` turned into field stripping instead of acting unqualified). Freshness, age,
 * request directives and Vary matching are computed here, because http-cache-semantics
 * zeroes the lifetime of `proxy-revalidate` and `Set-Cookie` responses, treats
 * `must-revalidate` as "always revalidate", reads `immutableMinTimeToLive` in the wrong unit,
 * lets request `max-stale` override shared-cache prohibitions, and compares Vary values as
 * exact strings.
 */

export type Directives = Map<string, string | true>

/** Splits a list-based field value on commas outside quoted strings (RFC 9110 section 5.6.1). */
function splitList (value: string): string[] {
  const out: string[] = []
  let start = 0
  let quoted = false
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i)
    if (quoted) {
      if (c === 92 /* \\ */) i++
      else if (c === 34 /* " */) quoted = false
    } else if (c === 34) {
      quoted = true
    } else if (c === 44 /* , */) {
      out.push(value.slice(start, i))
      start = i + 1
    }
  }
  out.push(value.slice(start))
  return out
}

const DIRECTIVE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+)\s*(?:=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s"]*)))?$/

const NO_DIRECTIVES: Directives = new Map()

/** Directives of a request that may have no Cache-Control: the empty case allocates nothing. */
export function requestDirectives (value: string | undefined): Directives {
  return value === undefined || value === '' ? NO_DIRECTIVES : parseCacheControl(value)
}

/**
 * Parses a Cache-Control value into directives (lower-case names, unquoted values). The first
 * occurrence of a repeated directive wins (RFC 9111 section 4.2.1); empty list elements are
 * skipped and a malformed element is ignored without losing the ones after it.
 */
export function parseCacheControl (value: string | undefined): Directives {
  const out: Directives = new Map()
  if (value === undefined || value === '') return out
  for (const raw of splitList(value)) {
    const element = raw.trim()
    if (element === '') continue
    const m = DIRECTIVE.exec(element)
    if (m === null) continue
    const name = (m[1] as string).toLowerCase()
    const quoted = m[2]
    const bare = m[3]
    const value: string | true = quoted !== undefined ? quoted.replace(/\\(.)/g, '$1') : bare !== undefined ? bare : true
    const previous = out.get(name)
    if (previous === undefined) {
      out.set(name, value)
    } else if (RESTRICTIVE_LISTS.has(name)) {
      // private and no-cache: the unqualified form is the stricter and wins; qualified
      // field lists add up. A repeat must never loosen what an earlier one said.
      out.set(name, previous === true || value === true ? true : `${previous}, ${value}`)
    }
  }
  return out
}

const RESTRICTIVE_LISTS = new Set(['private', 'no-cache'])

const MAX_DELTA = 2147483648 // RFC 9111 section 1.2.2: the largest delta-seconds to send or accept

/**
 * delta-seconds (RFC 9111 section 1.2.2): a non-negative integer, anything else is invalid.
 * Returns undefined for invalid values so each caller can apply its own rule.
 */
export function parseDeltaSeconds (value: string | true | undefined): number | undefined {
  if (typeof value !== 'string' || !/^[0-9]+$/.test(value)) return undefined
  const n = Number(value)
  return n > MAX_DELTA ? MAX_DELTA : n
}

const MONTHS: Record<string, number> = { jan: 0, feb: 1, mar: 2, apr: 3, may: 4, jun: 5, jul: 6, aug: 7, sep: 8, oct: 9, nov: 10, dec: 11 }
// RFC 9110 section 5.6.7: IMF-fixdate, and the obsolete RFC 850 and asctime forms, all GMT.
// "GMT" is case-sensitive in the grammar, but recipients are lenient about it in practice.
const IMF_FIXDATE = /^[A-Za-z]{3}, (\d{2}) ([A-Za-z]{3}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT$/i
const RFC850 = /^[A-Za-z]{6,9}, (\d{2})-([A-Za-z]{3})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) GMT$/i
const ASCTIME = /^[A-Za-z]{3} ([A-Za-z]{3}) ([ \d]\d) (\d{2}):(\d{2}):(\d{2}) (\d{4})$/

/** An HTTP-date (RFC 9110 section 5.6.7) in milliseconds, or undefined when absent or invalid. */
export function parseHttpDate (value: string | undefined): number | undefined {
  if (value === undefined) return undefined
  const v = value.trim()
  let day: string, month: string, year: number, h: string, m: string, sec: string
  let match = IMF_FIXDATE.exec(v)
  if (match !== null) {
    [, day, month, , h, m, sec] = match as unknown as string[] as [string, string, string, string, string, string, string]
    year = Number(match[3])
  } else if ((match = RFC850.exec(v)) !== null) {
    [, day, month, , h, m, sec] = match as unknown as string[] as [string, string, string, string, string, string, string]
    // Section 5.6.7: a two-digit year more than 50 years in the future is in the past century.
    const yy = Number(match[3])
    const thisYear = new Date().getUTCFullYear()
    year = 2000 + yy > thisYear + 50 ? 1900 + yy : 2000 + yy
  } else if ((match = ASCTIME.exec(v)) !== null) {
    month = match[1] as string
    day = (match[2] as string).trim()
    h = match[3] as string
    m = match[4] as string
    sec = match[5] as string
    year = Number(match[6])
  } else {
    return undefined
  }
  const mon = MONTHS[month.toLowerCase()]
  if (mon === undefined) return undefined
  const t = Date.UTC(year, mon, Number(day), Number(h), Number(m), Number(sec))
  return Number.isFinite(t) ? t : undefined
}

const parseDate = parseHttpDate

// RFC 9110 section 15.1: statuses whose responses are heuristically cacheable.
const HEURISTICALLY_CACHEABLE = new Set([200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501])

// Fields whose list members are case-insensitive and whose order carries no meaning when
// compared for Vary (RFC 9110 sections 12.5.1, 12.5.3, 12.5.4): normalised harder.
const UNORDERED_LISTS = new Set(['accept-language', 'accept-encoding'])

/** A field value normalised for Vary comparison: commas and runs of whitespace canonicalised. */
function varyValue (field: string, value: string | undefined): string | undefined {
  if (value === undefined) return undefined
  const members = value.split(',').map((v) => v.trim().replace(/\s+/g, ' ').replace(/\s*;\s*/g, ';'))
  if (!UNORDERED_LISTS.has(field)) return members.join(',')
  return members.map((m) => m.toLowerCase()).filter((m) => m !== '').sort().join(',')
}

/** The field names in a Vary value, lower-cased; '*' is kept as a name. */
export function varyFields (vary: string | undefined): string[] {
  if (vary === undefined) return []
  return vary.split(',').map((f) => f.trim().toLowerCase()).filter((f) => f !== '')
}

/** What a stored response needs to be judged later, computed once when it is stored. */
export interface Freshness {
  /** Response directives, with qualified private/no-cache already applied as field stripping. */
  readonly directives: Directives
  /** Freshness lifetime in seconds (RFC 9111 section 4.2.1, heuristic section 4.2.2). */
  readonly lifetime: number
  /** corrected_initial_age in seconds (RFC 9111 section 4.2.3). */
  readonly initialAge: number
  /** When the response was received, ms. */
  readonly responseTime: number
  /** The request header values the response varies on, normalised; null when it varies on nothing. */
  readonly vary: ReadonlyMap<string, string | undefined> | null
  /** Strong or weak entity tag, if any. */
  readonly etag: string | undefined
  readonly lastModified: string | undefined
  /** The response's Date, or when it was received, ms: the last-modified stand-in (section 4.3.2). */
  readonly date: number
}

export interface StorageDecision {
  readonly store: boolean
  /** Why not, for Cache-Status `detail` and tests. */
  readonly reason: string
  /** Response headers as they may be stored (qualified private/no-cache fields removed). */
  readonly headers: ResponseHeaders
}

function joinForPolicy (headers: ResponseHeaders | RequestHeaders): Record<string, string> {
  const out: Record<string, string> = {}
  for (const name in headers) {
    const v = headers[name]
    if (v === undefined) continue
    // http-cache-semantics throws on arrays; Set-Cookie keeps its own meaning (presence only).
    out[name] = Array.isArray(v) ? v.join(name === 'set-cookie' ? '\n' : ', ') : v
  }
  return out
}

/** Field names listed by a qualified directive such as private="set-cookie, x-user". */
function qualifiedFields (value: string | true | undefined): string[] | undefined {
  if (typeof value !== 'string') return undefined
  return value.split(',').map((f) => f.trim().toLowerCase()).filter((f) => f !== '')
}

function formatDirectives (directives: Directives): string {
  const parts: string[] = []
  // An empty value (`no-store=""`) is written bare: the directive is present either way, and
  // `no-store=` would read as absent to a parser that tests the value.
  for (const [k, v] of directives) parts.push(v === true || v === '' ? k : `${k}=${/[\s,"]/.test(v) ? JSON.stringify(v) : v}`)
  return parts.join(', ')
}

// RFC 8941 section 3.2 dictionary members, as far as CDN-Cache-Control needs them.
// Keys are lower case in RFC 8941; upper case is accepted and folded, as deployed caches do.
const SF_KEY = /^[A-Za-z*][A-Za-z0-9_\-.*]*/
const SF_BARE = /^(?:(-?\d{1,15})(?:\.\d{1,3})?|"(?:[^"\\\x00-\x1f\x7f]|\\["\\])*"|[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*|:[A-Za-z0-9+/=]*:|\?[01])/
const CDN_INTEGER = new Set(['max-age', 's-maxage', 'stale-while-revalidate', 'stale-if-error'])
const CDN_BOOLEAN = new Set(['no-store', 'no-cache', 'private', 'public', 'must-revalidate', 'proxy-revalidate', 'immutable'])

/**
 * CDN-Cache-Control (RFC 9213) as directives, or undefined when absent or not a valid
 * Structured Field Dictionary (then it is ignored, as the RFC requires), or when a directive
 * this cache acts on has a value of the wrong type.
 */
export function parseCdnCacheControl (value: string | undefined): Directives | undefined {
  if (value === undefined) return undefined
  const out: Directives = new Map()
  let rest = value.trim()
  while (rest.length > 0) {
    const keyMatch = SF_KEY.exec(rest)
    if (keyMatch === null) return undefined
    const key = keyMatch[0].toLowerCase()
    rest = rest.slice(key.length)
    let item: string | true = true
    if (rest.startsWith('=')) {
      const bare = SF_BARE.exec(rest.slice(1))
      if (bare === null) return undefined
      item = bare[0]
      rest = rest.slice(1 + item.length)
      if (item === '?1') item = true
    }
    // Parameters are allowed and carry nothing forwardcache uses.
    while (rest.startsWith(';')) {
      const param = /^;\s*[a-z*][a-z0-9_\-.*]*(?:=(?:-?\d{1,15}(?:\.\d{1,3})?|"(?:[^"\\]|\\.)*"|[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*|\?[01]))?/.exec(rest)
      if (param === null) return undefined
      rest = rest.slice(param[0].length)
    }
    if (CDN_INTEGER.has(key) && (typeof item !== 'string' || !/^\d+$/.test(item))) return undefined
    if (CDN_BOOLEAN.has(key) && item !== true) return undefined
    if (!out.has(key) && item !== '?0') out.set(key, item === true ? true : String(Math.min(Number(item), MAX_DELTA)))
    rest = rest.replace(/^[ \t]*/, '')
    if (rest.length === 0) break
    if (!rest.startsWith(',')) return undefined
    rest = rest.slice(1).replace(/^[ \t]*/, '')
    if (rest.length === 0) return undefined
  }
  return out
}

/**
 * The headers caching decisions are made on: when a valid CDN-Cache-Control is present, its
 * directives replace Cache-Control and Expires (RFC 9213 section 2.1); the stored and served
 * headers keep every original field.
 */
export function decisionHeaders (headers: ResponseHeaders): ResponseHeaders {
  const cdn = parseCdnCacheControl(headerString(headers, 'cdn-cache-control'))
  if (cdn === undefined) return headers
  const out: ResponseHeaders = { ...headers, 'cache-control': formatDirectives(cdn) }
  delete out.expires
  return out
}

// Statuses whose caching requirements this cache implements (RFC 9111 section 5.2.2.3).
const UNDERSTOOD = new Set([200, 203, 204, 300, 301, 302, 303, 307, 308, 404, 405, 410, 414, 501])

/**
 * RFC 9111 section 3: may a shared cache store this response to this request?
 */
export function decideStorage (
  method: string,
  requestHeaders: RequestHeaders,
  status: number,
  responseHeaders: ResponseHeaders
): StorageDecision {
  const directives = parseCacheControl(headerString(responseHeaders, 'cache-control'))
  let headers = responseHeaders
  // RFC 9111 sections 5.2.2.4 and 5.2.2.7: the qualified forms forbid storing (or reusing
  // without revalidation) only the named fields, so strip those and keep the rest.
  const strip = [
    ...(qualifiedFields(directives.get('private')) ?? []),
    ...(qualifiedFields(directives.get('no-cache')) ?? [])
  ]
  if (strip.length > 0) {
    headers = { ...responseHeaders }
    for (const f of strip) delete headers[f]
    const cleaned: Directives = new Map(directives)
    if (typeof cleaned.get('private') === 'string') cleaned.delete('private')
    if (typeof cleaned.get('no-cache') === 'string') cleaned.delete('no-cache')
    headers['cache-control'] = formatDirectives(cleaned)
    if (headers['cache-control'] === '') delete headers['cache-control']
  }
  const no = (reason: string): StorageDecision => ({ store: false, reason, headers })
  if (method !== 'GET') return no('method')
  // Section 3: only final responses; partial and not-modified ones are never entries here.
  if (status < 200 || status === 206 || status === 304) return no('not a complete final response')
  if (requestHeaders.range !== undefined) return no('range request')
  const vary = varyFields(headerString(headers, 'vary'))
  if (vary.includes('*')) return no('vary-star')
  const decide = decisionHeaders(headers)
  const cc = parseCacheControl(headerString(decide, 'cache-control'))
  // CDN-Cache-Control may set freshness, but it never lifts Cache-Control's private or
  // no-store here: a forward cache shared by many users is not the CDN that field targets,
  // and cannot know the keys such a CDN would use to keep personal responses apart.
  const plain = parseCacheControl(headerString(headers, 'cache-control'))
  if (decide !== headers && (plain.get('private') === true || plain.has('no-store'))) return no('private or no-store in Cache-Control')
  // A shared cache replaying Set-Cookie would hand one user's session to the next; only an
  // explicit `public` says the origin meant it (the same line http-cache-semantics draws).
  // Read from Cache-Control itself: a CDN-Cache-Control `public` speaks to the origin's own
  // CDN (RFC 9213 section 2), which keeps users apart by its own rules, as for private above.
  if (headers['set-cookie'] !== undefined && !plain.has('public')) return no('set-cookie')
  // http-cache-semantics reads directive names case-sensitively: give it the parsed,
  // lower-cased directives, so `No-Store` and `PRIVATE` mean what they say.
  let policyHeaders = { ...joinForPolicy(decide), 'cache-control': formatDirectives(cc) }
  if (cc.has('must-understand')) {
    // Section 5.2.2.3: must-understand stores only statuses whose rules are implemented,
    // and then overrides no-store.
    if (!UNDERSTOOD.has(status)) return no('must-understand')
    const without = new Map(cc)
    without.delete('no-store')
    policyHeaders = { ...policyHeaders, 'cache-control': formatDirectives(without) }
  }
  // http-cache-semantics only stores the statuses it lists, but section 3 lets any final
  // status be stored when its freshness is explicit: present those as a 200 to its checks,
  // which then judge everything else (no-store, private, Authorization, explicit freshness).
  const explicit = cc.has('max-age') || cc.has('s-maxage') || cc.has('public') || decide.expires !== undefined
  const policyStatus = !UNDERSTOOD.has(status) && explicit ? 200 : status
  const policy = new CachePolicy(
    { method, url: '/', headers: joinForPolicy(requestHeaders) },
    { status: policyStatus, headers: policyHeaders },
    { shared: true }
  )
  if (!policy.storable()) return no('not storable')
  return { store: true, reason: '', headers }
}

/**
 * Computes what freshness needs, once, when a response is stored or refreshed.
 * `requestTime` and `responseTime` are ms (RFC 9111 section 4.2.3's request_time and response_time).
 */
export function computeFreshness (
  status: number,
  requestHeaders: RequestHeaders,
  responseHeaders: ResponseHeaders,
  requestTime: number,
  responseTime: number
): Freshness {
  const decide = decisionHeaders(responseHeaders)
  const directives = parseCacheControl(headerString(decide, 'cache-control'))
  const date = parseDate(headerString(responseHeaders, 'date'))
  const dateValue = date ?? responseTime

  // RFC 9111 section 5.1: Age is delta-seconds; the first of several values counts, and an
  // invalid value is ignored rather than taken as "maximally old".
  const ageHeader = responseHeaders.age
  const firstAge = Array.isArray(ageHeader) ? ageHeader[0] : ageHeader
  const ageValue = parseDeltaSeconds(firstAge?.split(',')[0]?.trim()) ?? 0

  // RFC 9111 section 4.2.3
  const apparentAge = Math.max(0, responseTime - dateValue) / 1000
  const responseDelay = Math.max(0, responseTime - requestTime) / 1000
  const correctedAgeValue = ageValue + responseDelay
  const initialAge = Math.max(apparentAge, correctedAgeValue)

  const vary = varyFields(headerString(responseHeaders, 'vary'))
  let varyMap: Map<string, string | undefined> | null = null
  if (vary.length > 0) {
    varyMap = new Map()
    for (const f of vary) varyMap.set(f, varyValue(f, requestField(requestHeaders, f)))
  }

  return {
    directives,
    lifetime: freshnessLifetime(status, directives, decide, dateValue),
    initialAge,
    responseTime,
    vary: varyMap,
    etag: headerString(responseHeaders, 'etag'),
    lastModified: headerString(responseHeaders, 'last-modified'),
    date: dateValue
  }
}

/** RFC 9111 section 4.2.1, for a shared cache. Seconds. */
function freshnessLifetime (status: number, cc: Directives, headers: ResponseHeaders, dateValue: number): number {
  // A directive that is present but invalid makes the response stale rather than letting a
  // lower-priority source decide (section 4.2.1: "consider the response stale").
  if (cc.has('s-maxage')) return parseDeltaSeconds(cc.get('s-maxage')) ?? 0
  if (cc.has('max-age')) return parseDeltaSeconds(cc.get('max-age')) ?? 0
  const expiresHeader = headers.expires
  if (expiresHeader !== undefined) {
    // Section 5.3: an invalid Expires, "0" included, means already expired; several values too.
    if (Array.isArray(expiresHeader) && expiresHeader.length !== 1) return 0
    const expires = parseDate(Array.isArray(expiresHeader) ? expiresHeader[0] : expiresHeader)
    if (expires === undefined) return 0
    return Math.max(0, (expires - dateValue) / 1000)
  }
  // Section 4.2.2: heuristics only for heuristically cacheable statuses, or `public`.
  if (!HEURISTICALLY_CACHEABLE.has(status) && !cc.has('public')) return 0
  const lastModified = parseDate(headerString(headers, 'last-modified'))
  if (lastModified === undefined || lastModified >= dateValue) return 0
  return Math.floor(((dateValue - lastModified) / 1000) * 0.1)
}

/** current_age (RFC 9111 section 4.2.3), seconds. */
export function currentAge (f: Freshness, now: number): number {
  return f.initialAge + Math.max(0, now - f.responseTime) / 1000
}

/** Does a request select this stored response (RFC 9111 section 4.1)? */
export function varyMatches (f: Freshness, requestHeaders: RequestHeaders): boolean {
  if (f.vary === null) return true
  for (const [field, stored] of f.vary) {
    if (varyValue(field, requestField(requestHeaders, field)) !== stored) return false
  }
  return true
}

export type Reuse =
  /** Serve the stored response as it is. */
  | { readonly action: 'fresh' }
  /** Serve it stale, allowed by the request's max-stale. */
  | { readonly action: 'stale' }
  /** Serve it stale and validate it in the background (stale-while-revalidate). */
  | { readonly action: 'stale-revalidate' }
  /** Validate it with the origin before use (section 4.3). */
  | { readonly action: 'validate' }

// The decisions are values; one frozen object each, so a cache hit allocates none.
const FRESH: Reuse = Object.freeze({ action: 'fresh' })
const STALE: Reuse = Object.freeze({ action: 'stale' })
const STALE_REVALIDATE: Reuse = Object.freeze({ action: 'stale-revalidate' })
const VALIDATE: Reuse = Object.freeze({ action: 'validate' })

const PRAGMA_NO_CACHE = /(^|,)\s*no-cache\s*(,|$)/i

/**
 * Does the request refuse a stored response without validation: Cache-Control: no-cache
 * (section 5.2.1.4), or Pragma: no-cache when it has no Cache-Control (section 5.4)?
 */
export function requestSaysNoCache (requestDirectives: Directives, requestHeaders: RequestHeaders): boolean {
  if (requestDirectives.has('no-cache')) return true
  const pragma = requestHeaders.pragma
  return pragma !== undefined && requestHeaders['cache-control'] === undefined && PRAGMA_NO_CACHE.test(pragma)
}

/**
 * RFC 9111 section 4: may this stored, Vary-matched response answer this request now?
 */
export function decideReuse (f: Freshness, requestDirectives: Directives, requestHeaders: RequestHeaders, now: number): Reuse {
  const cc = f.directives
  if (requestSaysNoCache(requestDirectives, requestHeaders)) return VALIDATE
  // Section 5.2.2.4: unqualified no-cache means validate every time.
  if (cc.get('no-cache') === true) return VALIDATE
  const age = currentAge(f, now)
  const fresh = f.lifetime > age
  // Section 5.2.1.1
  const maxAge = parseDeltaSeconds(requestDirectives.get('max-age'))
  if (maxAge !== undefined && age > maxAge) return VALIDATE
  // Section 5.2.1.3
  const minFresh = parseDeltaSeconds(requestDirectives.get('min-fresh'))
  if (minFresh !== undefined && f.lifetime - age < minFresh) return VALIDATE
  if (fresh) return FRESH
  // Sections 5.2.2.2, 5.2.2.8, 5.2.2.10: a shared cache never serves these stale, whatever
  // the request says.
  if (cc.has('must-revalidate') || cc.has('proxy-revalidate') || cc.has('s-maxage')) return VALIDATE
  // Section 5.2.1.2: max-stale with no value accepts any staleness.
  const maxStale = requestDirectives.get('max-stale')
  if (maxStale === true) return STALE
  const staleLimit = parseDeltaSeconds(maxStale)
  if (staleLimit !== undefined && age - f.lifetime <= staleLimit) return STALE
  // RFC 5861 section 3: within the stale-while-revalidate window, serve stale now and
  // validate in the background.
  const swr = parseDeltaSeconds(cc.get('stale-while-revalidate'))
  if (swr !== undefined && age - f.lifetime <= swr) return STALE_REVALIDATE
  return VALIDATE
}

/**
 * May this stale response stand in for an origin that failed? For a 5xx, only within a
 * stale-if-error window (RFC 5861 section 4: the response's or the request's, the larger).
 * When no response came at all, RFC 9111 section 4.2.4 allows it ("disconnected"), here for
 * up to `disconnectedGrace` seconds past freshness.
 * Either way the section 4.2.4 prohibitions hold: must-revalidate, proxy-revalidate,
 * s-maxage and no-cache never serve stale.
 */
export function staleIfErrorAllows (f: Freshness, requestDirectives: Directives, requestHeaders: RequestHeaders, now: number,
  disconnectedGrace?: number): boolean {
  const cc = f.directives
  if (cc.has('must-revalidate') || cc.has('proxy-revalidate') || cc.has('s-maxage') || cc.has('no-cache')) return false
  if (requestSaysNoCache(requestDirectives, requestHeaders)) return false
  const limit = Math.max(
    parseDeltaSeconds(cc.get('stale-if-error')) ?? -1,
    parseDeltaSeconds(requestDirectives.get('stale-if-error')) ?? -1,
    disconnectedGrace ?? -1
  )
  if (limit < 0) return false
  return currentAge(f, now) - f.lifetime <= limit
}

/** Can the stored response be validated at all (section 4.3.1)? */
export function hasValidator (f: Freshness): boolean {
  return f.etag !== undefined || f.lastModified !== undefined
}

// RFC 9111 section 3.2: fields a 304 must not overwrite in the stored response.
// Age is not stored at all: it is recomputed on every hit from the freshness record.
const NOT_UPDATED_BY_304 = new Set(['content-length', 'content-encoding', 'transfer-encoding', 'content-range', 'content-type', 'age'])

/** The stored headers updated by a 304 (RFC 9111 sections 3.2 and 4.3.4). */
export function mergeNotModified (stored: ResponseHeaders, notModified: ResponseHeaders): ResponseHeaders {
  const out: ResponseHeaders = { ...stored }
  for (const name in notModified) {
    if (NOT_UPDATED_BY_304.has(name)) continue
    const v = notModified[name]
    if (v !== undefined) out[name] = v
  }
  return out
}

/** Weak comparison of entity tags (RFC 9110 section 8.8.3.2). */
function weakEquals (a: string, b: string): boolean {
  return a.replace(/^W\//, '') === b.replace(/^W\//, '')
}

/** The entity-tags in an If-None-Match-style list, kept whole even when they contain commas. */
function entityTags (value: string): string[] {
  return value.match(/(?:W\/)?"[^"]*"/g) ?? []
}

/**
 * Does a 304 apply to the stored response that was validated (RFC 9111 section 4.3.4)? A
 * strong validator selects only a stored response with the same strong validator; a weak one
 * compares weakly.
 */
export function notModifiedMatches (f: Freshness, notModified: ResponseHeaders): boolean {
  const etag = headerString(notModified, 'etag')?.trim()
  if (etag !== undefined) {
    if (f.etag === undefined) return false
    if (!etag.startsWith('W/')) return f.etag.trim() === etag
    return weakEquals(f.etag.trim(), etag)
  }
  const lm = headerString(notModified, 'last-modified')
  if (lm !== undefined) return f.lastModified === undefined || f.lastModified === lm
  return true
}

/**
 * Answers a caller's own conditional request from a stored response (RFC 9110 section 13.2.2):
 * true when a 304 is the right answer.
 */
export function conditionalMatches (f: Freshness, requestHeaders: RequestHeaders): boolean {
  const inm = requestHeaders['if-none-match']
  if (inm !== undefined) {
    // Section 13.1.2: "*" matches any current representation, and a stored one is current.
    if (inm.trim() === '*') return true
    if (f.etag === undefined) return false
    const stored = f.etag.trim()
    return entityTags(inm).some((t) => weakEquals(t, stored))
  }
  const ims = parseDate(requestHeaders['if-modified-since'])
  // RFC 9111 section 4.3.2: without Last-Modified, the stored Date (or receipt time) stands in.
  const lm = f.lastModified !== undefined ? parseDate(f.lastModified) : f.date
  return ims !== undefined && lm !== undefined && lm <= ims
}
