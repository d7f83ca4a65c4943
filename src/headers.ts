import type { IncomingHttpHeaders } from 'node:http'
import { InvalidArgumentError } from './errors.js'

/** Request headers after normalisation: lower-case names, one string value each. */
export type RequestHeaders = Record<string, string>

/** Response headers as undici's new handler contract gives them. */
export type ResponseHeaders = Record<string, string | string[]>

// RFC 9110 section 7.6.1, plus the legacy ones every proxy strips.
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade',
  'proxy-authenticate', 'proxy-authorization'
])

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
// CR, LF and NUL can split a message; other controls are refused by undici itself.
const UNSAFE_VALUE = /[\r\n\0]/

/** A request field's name in lower case; throws when it is not a token. */
function fieldName (rawName: string): string {
  const name = rawName.toLowerCase()
  // __proto__ is a token, but assigning it to an object sets nothing: the field would vanish.
  if (!TOKEN.test(name) || name === '__proto__') throw new InvalidArgumentError(`invalid header name ${JSON.stringify(rawName)}`)
  return name
}

/** Adds one value of the field `name` (already lower case) to `out`. */
function addValue (out: RequestHeaders, name: string, value: string): void {
  if (UNSAFE_VALUE.test(value)) throw new InvalidArgumentError(`invalid value for header ${name}`)
  let prev = out[name]
  // A name such as `constructor` reads Object.prototype's member: that is no earlier field.
  if (prev !== undefined && !Object.hasOwn(out, name)) prev = undefined
  // RFC 9110 section 5.3 allows joining repeated fields with commas; Cookie is the
  // exception (RFC 6265 section 5.4) and joins with "; ".
  out[name] = prev === undefined ? value : `${prev}${name === 'cookie' ? '; ' : ', '}${value}`
}

function addHeader (out: RequestHeaders, rawName: string, rawValue: unknown): void {
  const name = fieldName(rawName)
  if (rawValue === undefined || rawValue === null) return
  if (Array.isArray(rawValue)) for (const v of rawValue) addValue(out, name, String(v))
  else addValue(out, name, String(rawValue))
}

/**
 * Reads any of the header shapes undici accepts (object, flat array, iterable of pairs, null)
 * into lower-case names with single string values. Throws InvalidArgumentError on names that
 * are not tokens and on values that contain CR, LF or NUL.
 */
// The headers of every request that has none: shared, and frozen so that nothing can write
// into it by mistake (code that adds fields works on a copy).
const NO_HEADERS: RequestHeaders = Object.freeze({}) as RequestHeaders

export function normaliseRequestHeaders (headers: unknown): RequestHeaders {
  if (headers === undefined || headers === null) return NO_HEADERS
  const out = readRequestHeaders(headers)
  let size = 0
  for (const name in out) size += name.length + (out[name] as string).length + 4
  if (size > MAX_REQUEST_HEADER_BYTES) throw new InvalidArgumentError(`request headers are over ${MAX_REQUEST_HEADER_BYTES} bytes`)
  return out
}

/**
 * normaliseRequestHeaders for the raw fields node:http received (IncomingMessage.rawHeaders:
 * alternating name and value strings), with the same checks and results, in one pass and
 * with no array or string made per field: the owner's handler reads every peer's request this
 * way, and the general reader cost it about 3 µs for a peer's three fields.
 */
export function normaliseReceivedHeaders (raw: readonly string[]): RequestHeaders {
  if (raw.length === 0) return NO_HEADERS
  const out: RequestHeaders = {}
  let size = 0
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const rawName = raw[i] as string
    const value = raw[i + 1] as string
    size += rawName.length + value.length + 4
    addValue(out, fieldName(rawName), value)
  }
  if (size > MAX_REQUEST_HEADER_BYTES) throw new InvalidArgumentError(`request headers are over ${MAX_REQUEST_HEADER_BYTES} bytes`)
  return out
}

// As Node's own http server would accept (its default maxHeaderSize), with the names.
const MAX_REQUEST_HEADER_BYTES = 16 * 1024

function readRequestHeaders (headers: unknown): RequestHeaders {
  const out: RequestHeaders = {}
  if (headers === null || headers === undefined) return out
  if (Array.isArray(headers)) {
    if (headers.length % 2 !== 0) throw new InvalidArgumentError('headers array must have an even length')
    for (let i = 0; i < headers.length; i += 2) addHeader(out, String(headers[i]), headers[i + 1])
    return out
  }
  if (typeof headers !== 'object') throw new InvalidArgumentError('headers must be an object or an array')
  if (typeof (headers as Iterable<unknown>)[Symbol.iterator] === 'function') {
    for (const pair of headers as Iterable<unknown>) {
      if (!Array.isArray(pair) || pair.length !== 2) throw new InvalidArgumentError('headers must be [name, value] pairs')
      addHeader(out, String(pair[0]), pair[1])
    }
    return out
  }
  for (const name of Object.keys(headers)) addHeader(out, name, (headers as Record<string, unknown>)[name])
  return out
}

const NO_TOKENS: readonly string[] = Object.freeze([])

function connectionTokens (value: string | string[] | undefined): readonly string[] {
  if (value === undefined) return NO_TOKENS
  // Nearly every message says just keep-alive or close, both hop-by-hop already: nothing
  // more to drop, and no list to build.
  if (typeof value === 'string' && value.length <= 10) {
    const v = value.toLowerCase()
    if (v === 'keep-alive' || v === 'close') return NO_TOKENS
  }
  const joined = Array.isArray(value) ? value.join(',') : value
  return joined.split(',').map((t) => t.trim().toLowerCase()).filter((t) => t !== '')
}

// Names a caller may not make hop-by-hop: dropping them would change what the request means.
const PROTECTED_FROM_CONNECTION = new Set(['host', 'content-length', 'authorization'])

/**
 * The end-to-end part of a request's headers (RFC 9110 section 7.6.1): hop-by-hop fields and
 * the fields named in Connection removed, and Host dropped because the target URL decides it.
 * Throws InvalidArgumentError when Connection names a field whose removal would change the
 * request's meaning. `alsoDrop` names more fields to leave out of the result.
 */
export function endToEndRequestHeaders (headers: RequestHeaders, alsoDrop?: ReadonlySet<string>): RequestHeaders {
  if (headers === NO_HEADERS) return headers
  // Most requests have no Connection field and nothing hop-by-hop: keep the object as it is.
  if (headers.connection === undefined) {
    let clean = true
    for (const name in headers) {
      if (HOP_BY_HOP.has(name) || name === 'host' || alsoDrop?.has(name) === true) { clean = false; break }
    }
    if (clean) return headers
  }
  const named = connectionTokens(headers.connection)
  for (const token of named) {
    if (PROTECTED_FROM_CONNECTION.has(token)) {
      throw new InvalidArgumentError(`Connection may not name ${token}`)
    }
  }
  // A copy rather than deletes: an object that had fields deleted is slower to read.
  const out: RequestHeaders = {}
  for (const name in headers) {
    if (HOP_BY_HOP.has(name) || name === 'host' || named.includes(name) || alsoDrop?.has(name) === true) continue
    out[name] = headers[name] as string
  }
  return out
}

/** A response's end-to-end headers: hop-by-hop fields and those named in Connection removed. */
export function endToEndResponseHeaders (headers: IncomingHttpHeaders | ResponseHeaders): ResponseHeaders {
  const named = connectionTokens(headers.connection)
  const out: ResponseHeaders = {}
  for (const name in headers) {
    if (HOP_BY_HOP.has(name) || named.includes(name)) continue
    const value = headers[name]
    if (value !== undefined) out[name] = value
  }
  return out
}

/**
 * A request field named at run time (by a response's Vary, say): only the request's own
 * fields, never a member every object inherits (`constructor`, `__proto__`).
 */
export function requestField (headers: RequestHeaders, name: string): string | undefined {
  return Object.hasOwn(headers, name) ? headers[name] : undefined
}

/** A single string for a response header, joining repeats with commas (RFC 9110 section 5.3). */
export function headerString (headers: ResponseHeaders | IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name]
  if (value === undefined) return undefined
  return Array.isArray(value) ? value.join(', ') : value
}

/** Headers in the legacy handler contract's shape: alternating name and value Buffers. */
export function toRawHeaders (headers: ResponseHeaders): Buffer[] {
  const raw: Buffer[] = []
  for (const name in headers) {
    const value = headers[name]
    if (value === undefined) continue
    const nameBuf = Buffer.from(name, 'latin1')
    if (Array.isArray(value)) {
      for (const v of value) raw.push(nameBuf, Buffer.from(v, 'latin1'))
    } else {
      raw.push(nameBuf, Buffer.from(value, 'latin1'))
    }
  }
  return raw
}

const bufferToString = Buffer.prototype.toString
// Header text in this library is one character per byte (what Buffer.from(s, 'latin1') keeps).
// eslint-disable-next-line no-control-regex
const ASCII = /^[\x00-\x7f]*$/

/**
 * A Buffer of `text`'s bytes whose whole-buffer latin1 and UTF-8 decodings are computed once.
 * Every legacy caller decodes every raw header it is handed (undici's parseHeaders, fetch's
 * HeadersList), and a shared hit's headers are handed to thousands of callers: a C++ slice and
 * a new string per field per hit (~1 µs of a 1 KiB hit's ~15 µs for seven fields) becomes a
 * function call. It stays a real Buffer of the same bytes: any other decoding, a partial one,
 * equals() and concat() work as on any Buffer. Callers must not write into it, which a shared
 * Buffer already forbade.
 */
function decodedOnce (text: string): Buffer {
  const buf = Buffer.from(text, 'latin1')
  let utf8: string | undefined = ASCII.test(text) ? text : undefined
  Object.defineProperty(buf, 'toString', {
    configurable: true,
    writable: true,
    enumerable: false,
    value: function toString (this: Buffer, encoding?: BufferEncoding, start?: number, end?: number): string {
      // Only this Buffer, whole: borrowed onto another (toString.call(other)) it decodes that one.
      if (this === buf && start === undefined && end === undefined) {
        if (encoding === 'latin1' || encoding === 'binary') return text
        if (encoding === undefined || encoding === 'utf8' || encoding === 'utf-8') return (utf8 ??= bufferToString.call(this, 'utf8'))
      }
      return bufferToString.call(this, encoding, start, end)
    }
  })
  return buf
}

/**
 * toRawHeaders for a list handed to many legacy callers (a stored hit's headers): the same
 * Buffers, with their decodings computed once (decodedOnce).
 */
export function sharedRawHeaders (headers: ResponseHeaders): Buffer[] {
  const raw: Buffer[] = []
  for (const name in headers) {
    const value = headers[name]
    if (value === undefined) continue
    const nameBuf = decodedOnce(name)
    if (Array.isArray(value)) {
      for (const v of value) raw.push(nameBuf, decodedOnce(v))
    } else {
      raw.push(nameBuf, decodedOnce(value))
    }
  }
  return raw
}

/** Parses the legacy contract's raw headers into the new contract's object. */
export function fromRawHeaders (raw: ReadonlyArray<Buffer | string> | null | undefined): ResponseHeaders {
  const out: ResponseHeaders = {}
  if (raw === null || raw === undefined) return out
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = latin1(raw[i]!).toLowerCase()
    const value = latin1(raw[i + 1]!)
    const prev = out[name]
    if (prev === undefined) out[name] = value
    else if (Array.isArray(prev)) prev.push(value)
    else out[name] = [prev, value]
  }
  return out
}

function latin1 (b: Buffer | string): string {
  return typeof b === 'string' ? b : b.toString('latin1')
}

// Request fields that ask an origin to act on another host, scheme, path or method. The cache
// key is the URL alone, so a response shaped by one of these would be served to everyone who
// asks for that URL (cache poisoning): they never reach an origin through the cache.
export const UNKEYED_OVERRIDES: ReadonlySet<string> = new Set([
  'x-forwarded-host', 'x-forwarded-server', 'x-forwarded-port', 'x-forwarded-proto', 'x-forwarded-scheme',
  'x-forwarded-prefix', 'forwarded', 'x-host', 'x-original-url', 'x-rewrite-url', 'x-original-host',
  // The path as a proxy in front saw it, before a rewrite: Traefik and nginx auth_request
  // (X-Forwarded-Uri, X-Original-URI), Kong (X-Forwarded-Path), Envoy (X-Envoy-Original-Path).
  'x-forwarded-uri', 'x-original-uri', 'x-forwarded-path', 'x-envoy-original-path',
  // Scheme overrides under other names: Paste and Pyramid (X-Url-Scheme), Tornado and
  // ingress-nginx (X-Scheme), gunicorn's secure_scheme_headers (X-Forwarded-Protocol).
  'x-url-scheme', 'x-scheme', 'x-forwarded-protocol',
  // Method overrides: the method a front proxy received (X-Original-Method, Traefik's
  // X-Forwarded-Method) and the tunnelling fields frameworks honour on a GET or POST.
  'x-original-method', 'x-forwarded-method', 'x-http-method-override', 'x-http-method', 'x-method-override',
  // Scheme overrides written as an on/off flag: Rack and Spring read X-Forwarded-Ssl: on, and
  // CodeIgniter or phpMyAdmin Front-End-Https: on, as https, exactly like X-Forwarded-Proto.
  'x-forwarded-ssl', 'front-end-https'
])

/**
 * Fields a GET/HEAD never passes on. RFC 9110 section 10.1.1: a 100-continue expectation means
 * nothing without content, and undici refuses to send one.
 */
export const BODYLESS_DROPPED: ReadonlySet<string> = new Set([...UNKEYED_OVERRIDES, 'expect'])

/** The request headers a cached GET/HEAD may carry to a peer or an origin. */
export function cacheableRequestHeaders (headers: RequestHeaders): RequestHeaders {
  if (headers === NO_HEADERS) return headers
  // A request carries few fields: walk them, rather than deleting every name on the list.
  for (const name in headers) if (BODYLESS_DROPPED.has(name)) delete headers[name]
  return headers
}

/** The Via entry every forwardcache hop adds (RFC 9110 section 7.6.3); also its loop marker. */
export const VIA = '1.1 forwardcache'

/** The reason given with a 508 for a request that would make a second forwardcache hop. */
export const LOOP_MESSAGE = 'loop detected: this request already went through forwardcache twice'

/** How many forwardcache hops a request already went through, from its Via field. */
export function forwardcacheHops (via: string | undefined): number {
  if (via === undefined) return 0
  // One hop (the usual case: a peer's own Via) needs no list.
  if (!via.includes(',')) return FORWARDCACHE_HOP.test(via) ? 1 : 0
  let n = 0
  for (const hop of via.split(',')) if (FORWARDCACHE_HOP.test(hop)) n++
  return n
}

// No g flag: test() keeps no state between calls.
const FORWARDCACHE_HOP = /\bforwardcache\b/i

export function addVia (headers: RequestHeaders): RequestHeaders {
  headers.via = headers.via === undefined ? VIA : `${headers.via}, ${VIA}`
  return headers
}

