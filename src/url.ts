import { InvalidArgumentError } from './errors.js'

/**
 * The cache key and origin target of a request: the absolute URL, normalised the way WHATWG URL
 * does it (scheme and host case, default port, dot segments, percent-encoding), without the
 * fragment, which never reaches an origin.
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
  // Setting hash re-serialises the URL: only when there is a fragment to drop.
  if (url.hash !== '') url.hash = ''
  return url
}

/** The key string for a normalised URL. */
export function cacheKey (url: URL): string {
  return url.href
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
  const path = url.pathname.replace(/\/+$/, '')
  return `${url.protocol}//${url.host}${path}`
}

// An absolute http(s) URL already in the exact form WHATWG URL serialises it to: lower-case
// host of plain labels, no default or zero-padded port, and only characters that neither the
// path nor the query percent-encodes. Anything else takes the full parse.
const CANONICAL = /^(http|https):\/\/([a-z0-9](?:[a-z0-9.-]*[a-z0-9])?)(?::([1-9][0-9]{0,4}))?(\/[A-Za-z0-9\-._~!$&()*+,;=:@/%]*)(\?[A-Za-z0-9\-._~!$&()*+,;=:@/?%]*)?$/
const DOT_SEGMENT = /\/\.\.?(?:\/|$)|%2e/i

/**
 * The cache key of a URL string, without building a URL object when the string is already
 * canonical (the common case: URLs that programs build); otherwise the full normalisation.
 */
export function cacheKeyOf (input: string): string {
  const m = CANONICAL.exec(input)
  if (m !== null) {
    const port = m[3]
    const path = m[4] as string
    const defaultPort = m[1] === 'http' ? '80' : '443'
    const host = m[2] as string
    // Five digits reach 99999: ports past 65535 are refused by the full parse, as WHATWG does.
    if (port !== defaultPort && (port === undefined || Number(port) <= 65535) && !DOT_SEGMENT.test(path) && !host.includes('..') && plainHost(host)) return input
  }
  return normaliseOriginUrl(input).href
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
