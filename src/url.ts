import { InvalidArgumentError } from './errors.js'

// The longest host name a URL may have (RFC 3986 section 3.2.2).
const MAX_HOST_LENGTH = 255

/**
 * The cache key and origin target of a request: the absolute URL, normalised the way WHATWG URL
 * does it (scheme and host case, default port, dot segments, percent-encoding), without the
 * fragment, which never reaches an origin. Percent-encodings are then put in the one form
 * RFC 3986 section 6.2.2 calls equivalent to the others (see tidyPercentEncoding), so that
 * `/%7Euser`, `/%7euser` and `/~user` are one entry, on one owner.
 */
export function normaliseOriginUrl (input: string | URL): URL {
  // WHATWG URL parsing silently drops tabs and newlines and encodes NUL: a URL that needed
  // that would reach the origin as something other than what was asked for.
  if (typeof input === 'string' && /[\x00-\x1f\x7f]/.test(input)) {
    throw new InvalidArgumentError('URLs may not contain control characters (CR, LF, NUL, ...)')
  }
  let url: URL
  try {
    url = typeof input === 'string' ? new URL(input) : new URL(input.href)
  } catch {
    throw new InvalidArgumentError(`invalid URL: ${String(input).slice(0, 200)}`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new InvalidArgumentError(`unsupported protocol ${url.protocol} (only http: and https: are cached)`)
  }
  if (url.username !== '' || url.password !== '') {
    throw new InvalidArgumentError('URLs with userinfo are refused: credentials do not belong in a shared cache key')
  }
  // RFC 3986 section 3.2.2 and RFC 1035 section 2.3.4: a host name is at most 255 characters,
  // and no resolver looks up a longer one (getaddrinfo fails with EINVAL), but WHATWG URL takes
  // hosts of any length. Each host gets a row of per-host counters and its own lines in
  // metrics(): 200 hosts of a megabyte made metrics() throw RangeError (Invalid string length),
  // which crashed the standalone peer at its next /metrics scrape.
  if (url.hostname.length > MAX_HOST_LENGTH) {
    throw new InvalidArgumentError(`host names are at most ${MAX_HOST_LENGTH} characters (RFC 3986 section 3.2.2)`)
  }
  // Setting hash re-serialises the URL: only when there is a fragment to drop.
  if (url.hash !== '') url.hash = ''
  if (url.href.includes('%')) {
    const path = tidyPercentEncoding(url.pathname)
    if (path !== url.pathname) url.pathname = path
    const search = tidyPercentEncoding(url.search)
    if (search !== url.search) url.search = search
  }
  return url
}

/**
 * A request-target's path with each backslash written %5C. undici sends a dispatched path as
 * given, but WHATWG URL parsing reads a backslash in an http(s) path as a slash: `/a\b` would
 * be fetched, stored and keyed as `/a/b`, another resource. %5C is the same character in the
 * form RFC 3986 allows in a path. The query keeps its backslashes (WHATWG leaves them there).
 */
export function escapePathBackslashes (target: string): string {
  const end = target.search(/[?#]/)
  const path = end === -1 ? target : target.slice(0, end)
  if (!path.includes('\\')) return target
  return path.replaceAll('\\', '%5C') + (end === -1 ? '' : target.slice(end))
}

// scheme://authority and at most trailing slashes: nothing after the authority to check.
const PLAIN_ORIGIN = /^https?:\/\/[^/?#\\@]+\/*$/i

/**
 * A Dispatcher's opts.origin as the scheme and authority that opts.path is appended to, as
 * undici reads it (core/util.js parseOrigin): an empty path, query or fragment is the origin
 * itself; a path, a query or a fragment is refused. Joined to the path as a string, `http://h#`
 * and `/x` made `http://h/` (the path became part of the fragment: a caller asking for /x got
 * the response for /), `http://h?` and `/x` made the query `?/x`, and `http://h/base` and `/x`
 * made `/base/x`, a request undici refuses.
 */
export function originBase (origin: string): string {
  if (PLAIN_ORIGIN.test(origin)) return origin.endsWith('/') ? origin.replace(/\/+$/, '') : origin
  // Control characters, other schemes and userinfo are refused here as in any URL.
  const url = normaliseOriginUrl(origin)
  // normaliseOriginUrl drops the fragment: whether there was a non-empty one is read off the string.
  if (!/^\/*$/.test(url.pathname) || url.search !== '' || /#./.test(origin)) {
    throw new InvalidArgumentError(`opts.origin must be a scheme, a host and a port only, got ${JSON.stringify(origin.slice(0, 200))}`)
  }
  return url.origin
}

/**
 * RFC 3986 section 6.2.2.2: a percent-encoded unreserved character (letters, digits, `-._~`)
 * is the same URL as the character itself, so it is decoded; section 6.2.2.1: the hex digits of
 * every other encoding are upper case. WHATWG URL does neither. A `%` not followed by two hex
 * digits stays as it is.
 * A hex digit is left encoded right after such a stray `%` (or a stray `%` and one hex digit):
 * decoded, it would make a triplet that was not there (`%%41a` would become `%Aa`, a byte 0xAA
 * the next time round), so the result would mean something else and would not be stable.
 * Decoding cannot make a dot segment: WHATWG parsing has already resolved `%2e` segments.
 */
export function tidyPercentEncoding (s: string): string {
  let out = ''
  let from = 0
  for (let i = s.indexOf('%'); i !== -1 && i + 2 < s.length; i = s.indexOf('%', i + 1)) {
    const v1 = hexValue(s.charCodeAt(i + 1))
    const v2 = hexValue(s.charCodeAt(i + 2))
    if (v1 < 0 || v2 < 0) continue
    const c = v1 * 16 + v2
    out += s.slice(from, i)
    if (isUnreserved(c) && !(hexValue(c) >= 0 && endsWithStrayPercent(out))) out += String.fromCharCode(c)
    else out += s.slice(i, i + 3).toUpperCase()
    from = i + 3
    i += 2
  }
  return from === 0 ? s : out + s.slice(from)
}

/** Does `out` end with a `%` that starts no triplet, alone or with one hex digit after it? */
function endsWithStrayPercent (out: string): boolean {
  const n = out.length
  return (n >= 1 && out.charCodeAt(n - 1) === 0x25) || (n >= 2 && out.charCodeAt(n - 2) === 0x25 && hexValue(out.charCodeAt(n - 1)) >= 0)
}

function isUnreserved (c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c === 0x2d || c === 0x2e || c === 0x5f || c === 0x7e
}

/** The value of an ASCII hex digit, either case; -1 for any other byte. */
function hexValue (c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30
  const lower = c | 0x20
  return lower >= 0x61 && lower <= 0x66 ? lower - 0x57 : -1
}

/**
 * True when the `%` at `i` starts an encoding tidyPercentEncoding() would rewrite: lower-case
 * hex digits, or an unreserved character encoded.
 */
function untidyPercent (b: Uint8Array, i: number): boolean {
  const h1 = b[i + 1] as number
  const h2 = b[i + 2] as number
  const v1 = hexValue(h1)
  const v2 = hexValue(h2)
  if (v1 < 0 || v2 < 0) return false
  // A valid hex digit from 0x61 up is a lower-case letter.
  return h1 >= 0x61 || h2 >= 0x61 || isUnreserved(v1 * 16 + v2)
}

/**
 * A peer's base URL in one canonical spelling, so that `http://A:80/` and `http://a` are the
 * same member of the ring on every peer: scheme and host lower case, default port dropped,
 * no trailing slash, no query or fragment.
 */
export function normalisePeerUrl (input: string, what = 'peer URL'): string {
  if (typeof input !== 'string' || input === '') {
    throw new InvalidArgumentError(`expected ${what} to be a non-empty string`)
  }
  let url: URL
  try {
    url = new URL(input)
  } catch {
    throw new InvalidArgumentError(`expected ${what} to be an absolute URL, got ${JSON.stringify(input)}`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new InvalidArgumentError(`expected ${what} to use http: or https:, got ${url.protocol}`)
  }
  if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') {
    throw new InvalidArgumentError(`expected ${what} to have no userinfo, query or fragment: ${JSON.stringify(input)}`)
  }
  // One peer is one ring member whatever the spelling: every process of the pool must hash the
  // same string for it, and one configured with `/ca%63he` and another with `/cache` would not.
  const path = tidyPercentEncoding(url.pathname).replace(/\/+$/, '')
  return `${url.protocol}//${url.host}${path}`
}

// Character classes of a URL already in the exact form WHATWG URL serialises it to: a
// lower-case host of plain labels, and only characters that neither the path nor the query
// percent-encodes. One table lookup per byte, and nothing allocated: the regular
// expressions this replaced (with their match array and substrings) made ownerOf() about half
// as fast (bench/README.md, ring).
// The plain classes leave out the characters that need a closer look ('.' and '-' in the
// host; '/', '%' and '?' in the path), so the common character costs one lookup and one test.
// Bytes from 0x80 (anything outside ASCII, in UTF-8) are in no class.
const HOST_PLAIN = 1
const PATH_PLAIN = 2
const QUERY_CHAR = 4
const CHAR_CLASS = new Uint8Array(256)
function addClass (chars: string, bits: number): void {
  for (let i = 0; i < chars.length; i++) {
    const c = chars.charCodeAt(i)
    CHAR_CLASS[c] = (CHAR_CLASS[c] as number) | bits
  }
}
addClass('abcdefghijklmnopqrstuvwxyz0123456789', HOST_PLAIN)
addClass('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&()*+,;=:@', PATH_PLAIN | QUERY_CHAR)
addClass('/%?', QUERY_CHAR)

const SLASH = 0x2f
const DOT = 0x2e
const COLON = 0x3a
const QUESTION = 0x3f
const PERCENT = 0x25
const HYPHEN = 0x2d

// The URL being looked at, as UTF-8. Reading bytes from a typed array costs a third of reading
// a string with charCodeAt (a string built by concatenation is a rope, walked on every read),
// and the same bytes are what the ring hashes. Four zero bytes always follow the URL, so a
// look ahead past its end reads a byte that matches nothing.
const SCRATCH_BYTES = 8192
const scratch = new Uint8Array(SCRATCH_BYTES + 4)
const scratchInput = scratch.subarray(0, SCRATCH_BYTES)
const views: Uint8Array[] = []
const encoder = new TextEncoder()

/**
 * Writes `s` into the scratch as UTF-8 and returns its length in bytes, or -1 when it does
 * not fit (such a URL takes the full parse).
 */
function encode (s: string): number {
  const { read, written } = encoder.encodeInto(s, scratchInput)
  if (read !== s.length) return -1
  scratch[written] = 0
  scratch[written + 1] = 0
  scratch[written + 2] = 0
  scratch[written + 3] = 0
  return written
}

/** True where a path segment ends: a slash, the start of the query or the end of the URL. */
function segmentEnds (b: Uint8Array, n: number, i: number): boolean {
  return i >= n || b[i] === QUESTION || b[i] === SLASH
}

/**
 * True when `s` is an absolute http(s) URL that WHATWG URL would serialise unchanged: scheme
 * and host lower case, host of plain labels, no default, zero-padded or out-of-range port, a
 * path with no dot segments (plain or percent-encoded) and no character that the path or the
 * query would percent-encode, no percent-encoding tidyPercentEncoding() would rewrite, no
 * fragment. False means "take the full parse", never "invalid".
 */
export function isCanonical (s: string): boolean {
  return canonicalLength(s) >= 0
}

/**
 * The length in bytes of `s` when it is canonical (see isCanonical), its bytes then being
 * {@link canonicalBytes}; otherwise -1.
 */
export function canonicalLength (s: string): number {
  const n = encode(s)
  return n >= 0 && canonicalScratch(s, n) ? n : -1
}

/**
 * The bytes of the URL canonicalLength() last looked at, as a view of exactly `n` bytes
 * (kept per length, so a lookup allocates nothing). Valid until the next call.
 */
export function canonicalBytes (n: number): Uint8Array {
  let v = views[n]
  if (v === undefined) {
    v = scratch.subarray(0, n)
    views[n] = v
  }
  return v
}

function canonicalScratch (s: string, n: number): boolean {
  const b = scratch
  // "http", then "s" or not
  if (b[0] !== 0x68 || b[1] !== 0x74 || b[2] !== 0x74 || b[3] !== 0x70) return false
  let i = 4
  const https = b[i] === 0x73
  if (https) i++
  if (b[i] !== COLON || b[i + 1] !== SLASH || b[i + 2] !== SLASH) return false
  i += 3
  const hostStart = i
  let lastDot = -1
  for (; i < n; i++) {
    const c = b[i] as number
    if (((CHAR_CLASS[c] as number) & HOST_PLAIN) !== 0) continue
    if (c === DOT) {
      // An empty label (a leading, doubled or trailing dot) is not left as it is.
      if (i === hostStart || lastDot === i - 1) return false
      lastDot = i
    } else if (c === HYPHEN && i === (lastDot < 0 ? hostStart : lastDot + 1) + 3 && b[i - 1] === HYPHEN &&
      b[i - 2] === 0x6e && b[i - 3] === 0x78) { // "xn-" before it
      // An xn-- label is Punycode, decoded and checked by the full parse.
      return false
    } else if (c !== HYPHEN) {
      break
    }
  }
  const hostEnd = i
  // The host starts and ends with a letter or digit; a longer one than DNS allows is refused
  // by the full parse.
  if (hostEnd === hostStart || hostEnd - hostStart > MAX_HOST_LENGTH || lastDot === hostEnd - 1 || b[hostStart] === HYPHEN || b[hostEnd - 1] === HYPHEN) return false
  if (i < n && b[i] === COLON) {
    i++
    const portStart = i
    let port = 0
    for (; i < n && i - portStart < 6; i++) {
      const d = (b[i] as number) - 0x30
      if (d < 0 || d > 9) break
      port = port * 10 + d
    }
    // Zero-padded, empty, default and out-of-range ports are rewritten or refused by the full
    // parse (WHATWG refuses ports past 65535).
    if (i === portStart || b[portStart] === 0x30 || port > 65535 || port === (https ? 443 : 80)) return false
  }
  if (i >= n || b[i] !== SLASH) return false
  for (; i < n; i++) {
    const c = b[i] as number
    if (((CHAR_CLASS[c] as number) & PATH_PLAIN) !== 0) continue
    if (c === QUESTION) break
    if (c === SLASH) {
      // Dot segments (/./ and /../, or at the end of the path) are resolved by the full parse.
      if (b[i + 1] === DOT && (segmentEnds(b, n, i + 2) || (b[i + 2] === DOT && segmentEnds(b, n, i + 3)))) return false
    } else if (c === PERCENT) {
      // Covers %2e too, a dot to WHATWG's dot-segment rules.
      if (untidyPercent(b, i)) return false
    } else {
      return false
    }
  }
  for (i++; i < n; i++) {
    const c = b[i] as number
    if (((CHAR_CLASS[c] as number) & QUERY_CHAR) === 0) return false
    if (c === PERCENT && untidyPercent(b, i)) return false
  }
  // A last label starting with a digit may be read as IPv4 (127.1, 0x7f.1): the exact check
  // only then. Every byte so far was ASCII, so byte offsets are string offsets.
  const first = b[lastDot < 0 ? hostStart : lastDot + 1] as number
  return first < 0x30 || first > 0x39 || plainHost(s.slice(hostStart, hostEnd))
}

const DOTTED_QUAD = /^(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$/

/**
 * A host WHATWG URL leaves as it is: a name whose last label is not numeric (those are read
 * as IPv4 in any of its spellings, 0x7f.1 and 127.1 included), or a plain dotted quad.
 */
function plainHost (host: string): boolean {
  const last = host.slice(host.lastIndexOf('.') + 1)
  if (!/^(?:[0-9]+|0x[0-9a-f]*)$/.test(last)) return true
  return DOTTED_QUAD.test(host)
}
