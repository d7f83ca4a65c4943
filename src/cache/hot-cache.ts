import { LRUCache } from 'lru-cache'
import type { Dispatcher } from 'undici'
import type { CallerHandler } from '../dispatch/compat.js'
import type { CallerController } from '../dispatch/controller.js'
import { headerString, sharedRawHeaders, type ResponseHeaders } from '../headers.js'
import type { CacheRequest } from './local-cache.js'
import { CACHE_NAME, coalescable, hasOriginPrecondition, UNFRAMED } from './local-cache.js'
import { computeFreshness, currentAge, decideReuse, decideStorage, varyMatches } from './policy.js'
import { Invalidations } from './invalidations.js'
import { replay } from './replay.js'
import { channels } from '../observe/channels.js'
import { BodyRecorder } from './body-recorder.js'
import { ERROR_HEADER } from '../forward.js'
import { entrySize, Store, type StoredResponse } from './store.js'

type Controller = Dispatcher.DispatchController

export interface HotCacheOptions {
  /** Bytes for hot copies. */
  maxSize: number
  maxEntrySize: number
  /** Requests for a key, among the recently counted ones, before its responses are copied. */
  threshold: number
  now: () => number
  /** This peer's URL, for the hit messages of forwardcache:hit. */
  self: string
}

// The longest key (URL) counted for hot copies.
const MAX_COUNTED_KEY = 4096

/**
 * A small cache on a non-owner peer for keys it is asked for often, so one hot URL does not
 * pin its owner's network. Only fresh copies are served; anything else goes to the owner as
 * usual, so the owner stays the one place that fetches from the origin.
 */
export class HotCache {
  readonly #o: HotCacheOptions
  readonly #store: Store
  // Request counts of recently seen keys; bounded, so cold keys age out.
  readonly #counts = new LRUCache<string, number>({ max: 10_000 })
  hits = 0

  constructor (options: HotCacheOptions) {
    this.#o = options
    this.#store = new Store({ maxSize: options.maxSize, maxHostSize: options.maxSize, maxEntrySize: Math.min(options.maxEntrySize, options.maxSize) })
  }

  get counters (): { bytes: number, entries: number } {
    const c = this.#store.counters()
    return { bytes: c.bytes, entries: c.entries }
  }

  /** Serves a fresh hot copy; false when there is none. */
  tryServe (req: CacheRequest, sink: CallerHandler, ctl: CallerController): boolean {
    // A range, a validation or a precondition (If-Match, If-Unmodified-Since, If-Range) gets
    // the owner's answer: a hot copy replays whole 200s only, and must not answer differently
    // from the owner.
    if (!coalescable(req)) return false
    const variants = this.#store.get(req.host, req.key)
    if (variants === undefined) return false
    const now = this.#o.now()
    for (const v of variants) {
      if (!varyMatches(v.freshness, req.headers)) continue
      // Only fresh: validation and stale service are the owner's business.
      if (decideReuse(v.freshness, req.directives, req.headers, now).action !== 'fresh') return false
      this.hits++
      const current = currentAge(v.freshness, now)
      if (channels.hit.hasSubscribers) channels.hit.publish({ self: this.#o.self, url: req.key, status: v.status, age: current, hot: true })
      const age = Math.floor(current)
      let hit = v.hit
      if (hit === undefined || hit.age !== age) {
        hit = { age, ttl: 0, detail: 'hot', forward: undefined, cacheStatus: `${CACHE_NAME}; hit; detail=hot`, headers: undefined, raw: undefined }
        v.hit = hit
      }
      hit.headers ??= { ...v.headers, age: String(age), 'cache-status': hit.cacheStatus }
      if (sink.legacy) hit.raw ??= sharedRawHeaders(hit.headers)
      replay(sink, ctl, v.status, v.statusText, hit.headers, req.method === 'HEAD' ? [] : v.body, hit.raw)
      return true
    }
    return false
  }

  /** Counts a request for a key; true once the key is hot enough to copy. */
  count (req: CacheRequest): boolean {
    // The counts keep up to 10,000 keys: a key of a megabyte each (a caller that fetches URLs
    // it is given) would hold gigabytes. Longer keys are never copied hot.
    if (req.method !== 'GET' || req.key.length > MAX_COUNTED_KEY) return false
    const n = (this.#counts.get(req.key) ?? 0) + 1
    this.#counts.set(req.key, n)
    return n >= this.#o.threshold
  }

  /** A sink that copies the owner's response into the hot cache on its way to `sink`. */
  recorder (req: CacheRequest, sink: CallerHandler): CallerHandler {
    return new HotRecorder(this, this.#store, this.#o, req, sink)
  }

  // RFC 9111 section 4.4, as for the owner's origin fetches: a recorder notes the sequence
  // when it starts and copies nothing its key was invalidated since (the owner itself stores
  // nothing from such a fetch).
  readonly invalidations = new Invalidations()

  invalidate (url: URL): void {
    this.invalidations.add(url.href)
    this.#store.delete(url.host, url.href)
  }

  clear (): void {
    this.#store.clear()
  }
}

/** Passes an owner's response through while copying it, if a shared cache may store it. */
class HotRecorder implements CallerHandler {
  readonly legacy = false
  readonly #hot: HotCache
  readonly #sequence: number
  readonly #store: Store
  readonly #o: HotCacheOptions
  readonly #req: CacheRequest
  readonly #sink: CallerHandler
  readonly #requestTime: number
  readonly #body: BodyRecorder
  #status = 0
  #statusText = ''
  #headers: ResponseHeaders = {}
  #ownerHeaders: ResponseHeaders = {}

  constructor (hot: HotCache, store: Store, o: HotCacheOptions, req: CacheRequest, sink: CallerHandler) {
    this.#hot = hot
    this.#sequence = hot.invalidations.sequence
    this.#store = store
    this.#o = o
    this.#req = req
    this.#sink = sink
    this.#requestTime = o.now()
    this.#body = new BodyRecorder(o.maxEntrySize)
  }

  onRequestStart (controller: Controller, context: unknown): void {
    this.#sink.onRequestStart(controller, context)
  }

  onResponseStart (controller: Controller, status: number, headers: ResponseHeaders, statusMessage?: string, raw?: Buffer[]): void {
    const decision = decideStorage('GET', this.#req.headers, status, headers)
    const cl = headerString(headers, 'content-length')
    // The owner relays a body it would not store itself as it came; neither is it copied here.
    const unframed = headerString(headers, 'cache-status')?.includes(`detail=${UNFRAMED}`) === true
    // The owner stores nothing but a 200 for a request with If-Match or If-Unmodified-Since:
    // a 412 (even one with max-age) answers that request's precondition alone (RFC 9110
    // section 13.1), and copied hot it would answer every plain GET.
    const storable = decision.store && (status === 200 || !hasOriginPrecondition(this.#req.headers))
    // An answer with forwardcache-error is the owner's own, not the origin's, whatever its
    // Cache-Control says (a code this peer does not know reaches the caller as it is): the
    // owner stored none of it, and a copy would stand in for the origin's response here.
    const ownerError = headers[ERROR_HEADER] !== undefined
    if (storable && !unframed && !ownerError && (cl === undefined || Number(cl) <= this.#o.maxEntrySize)) {
      this.#body.start()
      this.#status = status
      this.#statusText = statusMessage ?? ''
      this.#ownerHeaders = decision.headers
      const stored: ResponseHeaders = { ...decision.headers }
      delete stored.age
      delete stored['cache-status']
      this.#headers = stored
    }
    this.#sink.onResponseStart(controller, status, headers, statusMessage, raw)
  }

  startRaw (): void {
    throw new Error('startRaw is for legacy handlers')
  }

  onResponseData (controller: Controller, chunk: Buffer): void {
    // Oversized bodies keep streaming; the recorder stops keeping them.
    this.#body.add(chunk)
    this.#sink.onResponseData(controller, chunk)
  }

  onResponseEnd (controller: Controller, trailers: ResponseHeaders): void {
    const cl = headerString(this.#headers, 'content-length')
    if (this.#body.recording && (cl === undefined || Number(cl) === this.#body.bytes) && !this.#hot.invalidations.since(this.#req.key, this.#sequence)) {
      const req = this.#req
      // The owner's Age counts: a hot copy is never fresher than the owner's.
      const freshness = computeFreshness(this.#status, req.headers, this.#ownerHeaders, this.#requestTime, this.#o.now())
      const stored: StoredResponse = {
        status: this.#status,
        statusText: this.#statusText,
        headers: this.#headers,
        body: this.#body.body(),
        bodyLength: this.#body.bytes,
        freshness,
        size: entrySize(req.key, this.#headers, this.#body.bytes, this.#statusText, freshness.vary)
      }
      this.#store.put(req.host, req.key, stored)
    }
    this.#sink.onResponseEnd(controller, trailers)
  }

  onResponseError (controller: Controller, err: Error): void {
    this.#body.stop()
    this.#sink.onResponseError(controller, err)
  }
}
