import type { Dispatcher } from 'undici'
import type { CallerHandler } from '../dispatch/compat.js'
import type { CallerController } from '../dispatch/controller.js'
import { TruncatedBodyError } from '../errors.js'
import { endToEndResponseHeaders, headerString, toRawHeaders, type RequestHeaders, type ResponseHeaders } from '../headers.js'
import type { Counters } from '../stats.js'
import {
  computeFreshness, conditionalMatches, currentAge, decideReuse, decideStorage, hasValidator,
  mergeNotModified, notModifiedMatches, varyMatches, type Directives
} from './policy.js'
import { replay } from './replay.js'
import { entrySize, type Store, type StoredResponse } from './store.js'

type Handler = Dispatcher.DispatchHandler
type Controller = Dispatcher.DispatchController

/** A GET or HEAD as the owner sees it, already validated and normalised. */
export interface CacheRequest {
  readonly method: 'GET' | 'HEAD'
  /** The normalised absolute URL: the cache key and the origin target. */
  readonly url: URL
  readonly key: string
  /** End-to-end request headers, lower-case names. */
  readonly headers: RequestHeaders
  readonly directives: Directives
}

export interface LocalCacheOptions {
  store: Store
  origin: Dispatcher
  counters: Counters
  now: () => number
  maxEntrySize: number
  originTimeout: number
  bodyTimeout: number
}

/** RFC 9211 cache name. */
export const CACHE_NAME = 'forwardcache'

// Conditional request fields a cache sends on its own behalf when validating (RFC 9111 4.3.1)
// and must not pass on from a caller when fetching to fill the cache.
const CONDITIONALS = ['if-none-match', 'if-modified-since', 'if-match', 'if-unmodified-since', 'if-range']

/** A 304 answer to a caller's conditional request: the stored response's metadata only. */
const NOT_MODIFIED_FIELDS = ['cache-control', 'content-location', 'date', 'etag', 'expires', 'vary', 'last-modified', 'age', 'cache-status']

function notModifiedHeaders (headers: ResponseHeaders): ResponseHeaders {
  const out: ResponseHeaders = {}
  for (const name of NOT_MODIFIED_FIELDS) {
    const v = headers[name]
    if (v !== undefined) out[name] = v
  }
  return out
}

function withoutConditionals (headers: RequestHeaders): RequestHeaders {
  const out: RequestHeaders = { ...headers }
  for (const name of CONDITIONALS) delete out[name]
  return out
}

function hasConditional (headers: RequestHeaders): boolean {
  return headers['if-none-match'] !== undefined || headers['if-modified-since'] !== undefined
}

/**
 * The owner's side of the cluster: serves a request from this peer's store, validating or
 * fetching from the origin as RFC 9111 requires, and records what may be stored.
 */
export class LocalCache {
  readonly #o: LocalCacheOptions

  constructor (options: LocalCacheOptions) {
    this.#o = options
  }

  /** Serves one request into `sink`, whose controller is `ctl`. Never throws. */
  serve (req: CacheRequest, sink: CallerHandler, ctl: CallerController): void {
    const { store, counters, now } = this.#o
    const host = req.url.host
    counters.addHost(host, 'requests')
    const variants = store.get(host, req.key)
    let selected: StoredResponse | undefined
    if (variants !== undefined) {
      // RFC 9111 section 4.1: of several matching responses, use the most recent.
      for (const v of variants) {
        if (varyMatches(v.freshness, req.headers)) { selected = v; break }
      }
    }

    if (selected !== undefined) {
      const reuse = decideReuse(selected.freshness, req.directives, req.headers, now())
      if (reuse.action === 'fresh' || reuse.action === 'stale') {
        counters.add('localHits')
        counters.addHost(host, 'hits')
        if (reuse.action === 'stale') counters.add('staleServed')
        this.#serveStored(req, selected, sink, ctl, reuse.action === 'stale' ? 'hit; detail=stale' : 'hit')
        return
      }
      // RFC 9111 section 5.2.1.7
      if (req.directives.has('only-if-cached')) return this.#gatewayTimeout(sink, ctl)
      if (hasValidator(selected.freshness)) {
        counters.add('revalidations')
        this.#fetch(req, sink, ctl, selected, 'stale')
        return
      }
      counters.add('misses')
      counters.addHost(host, 'misses')
      this.#fetch(req, sink, ctl, undefined, 'stale')
      return
    }

    if (req.directives.has('only-if-cached')) return this.#gatewayTimeout(sink, ctl)
    counters.add('misses')
    counters.addHost(host, 'misses')
    this.#fetch(req, sink, ctl, undefined, 'uri-miss')
  }

  /** Drops every stored variant of a URL (RFC 9111 section 4.4). */
  invalidate (url: URL): void {
    const n = this.#o.store.delete(url.host, url.href)
    if (n > 0) this.#o.counters.add('invalidations')
  }

  #serveStored (req: CacheRequest, stored: StoredResponse, sink: CallerHandler, ctl: CallerController, status: string, forward?: string): void {
    const now = this.#o.now()
    const f = stored.freshness
    const age = Math.floor(currentAge(f, now))
    const ttl = Math.floor(f.lifetime - currentAge(f, now))
    const cacheStatus = forward === undefined
      ? `${CACHE_NAME}; ${status}; ttl=${ttl}`
      : `${CACHE_NAME}; fwd=${forward}; ${status}`
    // RFC 9111 section 5.1: Age on every response served from storage.
    const headers: ResponseHeaders = { ...stored.headers, age: String(age), 'cache-status': cacheStatus }
    if (hasConditional(req.headers) && conditionalMatches(f, req.headers)) {
      replay(sink, ctl, 304, 'Not Modified', notModifiedHeaders(headers), [])
      return
    }
    const body = req.method === 'HEAD' ? [] : stored.body
    replay(sink, ctl, stored.status, stored.statusText, headers, body, () => {
      // Stored headers are converted once per stored response; only the two per-hit fields
      // are built each time.
      stored.rawHeaders ??= toRawHeaders(stored.headers)
      return [...stored.rawHeaders, Buffer.from('age'), Buffer.from(String(age)), Buffer.from('cache-status'), Buffer.from(cacheStatus, 'latin1')]
    })
  }

  #gatewayTimeout (sink: CallerHandler, ctl: CallerController): void {
    const body = Buffer.from('only-if-cached: not in cache\n')
    replay(sink, ctl, 504, 'Gateway Timeout', {
      'content-type': 'text/plain; charset=utf-8',
      'content-length': String(body.length),
      'cache-status': `${CACHE_NAME}; fwd=miss; detail=only-if-cached`
    }, [body])
  }

  #fetch (req: CacheRequest, sink: CallerHandler, ctl: CallerController, validating: StoredResponse | undefined, fwd: string): void {
    const { origin, counters, originTimeout, bodyTimeout } = this.#o
    // A cache filling itself asks for the whole response; the caller's own conditionals are
    // answered from what comes back.
    const headers = withoutConditionals(req.headers)
    if (validating !== undefined) {
      if (validating.freshness.etag !== undefined) headers['if-none-match'] = validating.freshness.etag
      if (validating.freshness.lastModified !== undefined) headers['if-modified-since'] = validating.freshness.lastModified
    }
    headers.via = headers.via === undefined ? '1.1 forwardcache' : `${headers.via}, 1.1 forwardcache`
    counters.add('originFetches')
    counters.addHost(req.url.host, 'originFetches')
    const handler = new OriginResponseHandler(this, this.#o, req, sink, ctl, validating, fwd, this.#o.now())
    try {
      origin.dispatch({
        origin: req.url.origin,
        path: req.url.pathname + req.url.search,
        method: req.method,
        headers,
        headersTimeout: originTimeout,
        bodyTimeout
      }, handler)
    } catch (err) {
      handler.onResponseError(null, err as Error)
    }
  }

  /** Serves a stored response after a successful validation (a 304 from the origin). */
  serveValidated (req: CacheRequest, stored: StoredResponse, sink: CallerHandler, ctl: CallerController): void {
    this.#serveStored(req, stored, sink, ctl, 'fwd-status=304', 'stale')
  }
}

/**
 * Receives the origin's response to a fill or a validation: passes it to the caller while
 * recording it, then commits it to the store only if it ended cleanly with the announced
 * length. A 304 to a validation refreshes the stored response and replays it instead.
 */
class OriginResponseHandler implements Handler {
  readonly #cache: LocalCache
  readonly #o: LocalCacheOptions
  readonly #req: CacheRequest
  readonly #sink: CallerHandler
  readonly #ctl: CallerController
  readonly #validating: StoredResponse | undefined
  readonly #fwd: string
  readonly #requestTime: number

  #status = 0
  #statusText = ''
  #headers: ResponseHeaders = {}
  #record = false
  #chunks: Buffer[] = []
  #bytes = 0
  #expected = -1
  #notModified: ResponseHeaders | null = null
  #suppressBody = false
  #done = false

  constructor (cache: LocalCache, o: LocalCacheOptions, req: CacheRequest, sink: CallerHandler, ctl: CallerController,
    validating: StoredResponse | undefined, fwd: string, requestTime: number) {
    this.#cache = cache
    this.#o = o
    this.#req = req
    this.#sink = sink
    this.#ctl = ctl
    this.#validating = validating
    this.#fwd = fwd
    this.#requestTime = requestTime
  }

  onRequestStart (controller: Controller): void {
    this.#ctl.attach(controller)
  }

  onResponseStart (_controller: Controller, status: number, rawHeaders: ResponseHeaders, statusText?: string): void {
    const req = this.#req
    const headers = endToEndResponseHeaders(rawHeaders)
    this.#status = status
    this.#statusText = statusText ?? ''

    if (status === 304 && this.#validating !== undefined) {
      // Handled at the end: the 304 has no body to pass on, and the refreshed stored response
      // is what the caller gets.
      this.#notModified = headers
      return
    }

    let detail = ''
    if (req.method === 'GET') {
      const decision = decideStorage(req.method, req.headers, status, headers)
      const cl = headerString(headers, 'content-length')
      this.#expected = cl !== undefined && /^[0-9]+$/.test(cl) ? Number(cl) : -1
      if (decision.store && this.#expected > this.#o.maxEntrySize) {
        detail = '; detail=too-large'
      } else if (decision.store) {
        this.#record = true
        this.#headers = decision.headers
        detail = '; stored'
      }
    }
    // A full response that replaces a stored one we were validating: the old one is gone
    // whether or not the new one may be stored (RFC 9111 section 4.3.3).
    if (this.#validating !== undefined && !this.#record && status < 500) {
      this.#o.store.delete(req.url.host, req.key)
    }
    const out: ResponseHeaders = { ...headers, 'cache-status': `${CACHE_NAME}; fwd=${this.#fwd}; fwd-status=${status}${detail}` }
    if (status === 200 && hasConditional(req.headers) && req.method === 'GET') {
      const f = computeFreshness(status, req.headers, headers, this.#requestTime, this.#o.now())
      if (conditionalMatches(f, req.headers)) {
        this.#suppressBody = true
        this.#sink.onResponseStart(this.#ctl, 304, notModifiedHeaders(out), 'Not Modified')
        return
      }
    }
    this.#sink.onResponseStart(this.#ctl, status, out, this.#statusText)
  }

  onResponseData (_controller: Controller, chunk: Buffer): void {
    if (this.#notModified !== null) return
    if (this.#record) {
      this.#bytes += chunk.length
      if (this.#bytes > this.#o.maxEntrySize) {
        // Oversized: keep streaming, stop recording.
        this.#record = false
        this.#chunks = []
      } else {
        this.#chunks.push(chunk)
      }
    }
    if (!this.#suppressBody) this.#sink.onResponseData(this.#ctl, chunk)
  }

  onResponseEnd (_controller: Controller, trailers: ResponseHeaders): void {
    if (this.#done) return
    this.#done = true
    const req = this.#req
    const { store, counters, now } = this.#o
    if (this.#notModified !== null) {
      const old = this.#validating as StoredResponse
      if (!notModifiedMatches(old.freshness, this.#notModified)) {
        // The 304 is for some other representation; the caller still needs a whole response.
        store.delete(req.url.host, req.key)
        this.#sink.onResponseError(this.#ctl, new Error('origin answered 304 for a representation that is not stored'))
        return
      }
      const headers = mergeNotModified(old.headers, this.#notModified)
      const refreshed: StoredResponse = {
        status: old.status,
        statusText: old.statusText,
        headers,
        body: old.body,
        bodyLength: old.bodyLength,
        freshness: computeFreshness(old.status, req.headers, headers, this.#requestTime, now()),
        size: entrySize(req.key, headers, old.bodyLength)
      }
      store.put(req.url.host, req.key, refreshed, old)
      this.#cache.serveValidated(req, refreshed, this.#sink, this.#ctl)
      return
    }
    if (this.#record) {
      if (this.#expected >= 0 && this.#bytes !== this.#expected) {
        // undici itself rejects a short body; this guards any other origin dispatcher.
        this.#sink.onResponseError(this.#ctl, new TruncatedBodyError(this.#expected, this.#bytes))
        return
      }
      // The whole body is known now: a HEAD answered from this entry can say its length.
      const headers = this.#headers['content-length'] === undefined
        ? { ...this.#headers, 'content-length': String(this.#bytes) }
        : this.#headers
      const stored: StoredResponse = {
        status: this.#status,
        statusText: this.#statusText,
        headers,
        body: this.#chunks,
        bodyLength: this.#bytes,
        freshness: computeFreshness(this.#status, req.headers, headers, this.#requestTime, now()),
        size: entrySize(req.key, headers, this.#bytes)
      }
      if (store.put(req.url.host, req.key, stored, this.#validating)) counters.add('stored')
    }
    this.#sink.onResponseEnd(this.#ctl, trailers)
  }

  onResponseError (_controller: Controller | null, err: Error): void {
    if (this.#done) return
    this.#done = true
    this.#record = false
    this.#chunks = []
    this.#sink.onResponseError(this.#ctl, err)
  }
}
