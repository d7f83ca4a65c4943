import { errors, type Dispatcher } from 'undici'
import type { CallerHandler } from '../dispatch/compat.js'
import type { CallerController } from '../dispatch/controller.js'
import { Deadline } from '../dispatch/deadline.js'
import { Fanout, type ShareTest } from '../dispatch/fanout.js'
import { FlightTable } from '../dispatch/flight-table.js'
import { TruncatedBodyError } from '../errors.js'
import { addVia, endToEndResponseHeaders, headerString, sharedRawHeaders, type RequestHeaders, type ResponseHeaders } from '../headers.js'
import type { Counters } from '../stats.js'
import {
  computeFreshness, conditionalMatches, currentAge, decideReuse, decideStorage, hasValidator,
  mergeNotModified, notModifiedMatches, requestDirectives, staleIfErrorAllows, varyMatches, type Directives, type Freshness
} from './policy.js'
import { Invalidations } from './invalidations.js'
import { replay } from './replay.js'
import { CallerController as BackgroundController } from '../dispatch/controller.js'
import { channels } from '../observe/channels.js'
import type { SecondTier } from './second-tier.js'
import { BodyRecorder } from './body-recorder.js'
import { fillsWholeForRange, ifRangeAllows, parseByteRange, resolveByteRange } from './byte-range.js'
import { entrySize, type PreparedHit, type Store, type StoredResponse } from './store.js'

type Handler = Dispatcher.DispatchHandler
type Controller = Dispatcher.DispatchController

/** A GET or HEAD as the owner sees it, already validated and normalised. */
export interface CacheRequest {
  readonly method: 'GET' | 'HEAD'
  /** The normalised absolute URL: the cache key and the origin target. */
  readonly url: URL
  readonly key: string
  /** url.host, read once (URL's getter builds a new string on every read). */
  readonly host: string
  /** End-to-end request headers, lower-case names. */
  readonly headers: RequestHeaders
  readonly directives: Directives
}

export interface LocalCacheOptions {
  /** This peer's URL, for diagnostics messages. */
  self: string
  store: Store
  origin: Dispatcher
  counters: Counters
  now: () => number
  maxEntrySize: number
  /** Fetch a range that misses whole (see #fillsWhole); default true. */
  fillRanges?: boolean
  originTimeout: number
  bodyTimeout: number
  /** Registers background work (revalidations) so close() waits for it. */
  track?: (ctl: CallerController) => () => void
  /** Seconds past freshness a stored response may stand in for an unreachable origin. */
  staleOnDisconnect: number
  /**
   * Bytes that range fills may still have to read, all together, once their callers have
   * their ranges (see #readOn); default unlimited.
   */
  rangeFillBudget?: number
  /**
   * The longest requests wait for a range fill of their URL, ms: under an asking peer's
   * peerTimeout, which would otherwise count the wait against this owner. Default LATE_WAIT_MS.
   */
  rangeWaitMs?: number
  /** A second tier (any undici CacheStore) behind the per-host LRU. */
  secondTier?: SecondTier
}

/** RFC 9211 cache name. */
export const CACHE_NAME = 'forwardcache'

// Conditional request fields a cache sends on its own behalf when validating (RFC 9111 4.3.1)
// and must not pass on from a caller when fetching to fill the cache.
const CONDITIONALS = ['if-none-match', 'if-modified-since', 'if-match', 'if-unmodified-since', 'if-range']
// Of those, the ones only the origin answers, passed on from the caller.
const ORIGIN_CONDITIONALS = ['if-match', 'if-unmodified-since', 'if-range']

const DIGITS = /^[0-9]+$/
const LATE_WAIT_MS = 1000

const STALE_IF_ERROR_STATUSES: ReadonlySet<number> = new Set([500, 502, 503, 504])
// The Cache-Status detail that ends a stale response's status when it stands in for an error.
const STAND_IN = 'detail=stale-if-error'


/** A 304 answer to a caller's conditional request: the stored response's metadata only. */
const NO_BODY: readonly Buffer[] = []
const NO_HEADERS: ResponseHeaders = Object.freeze({}) as ResponseHeaders

/** The stored headers with this hit's Age (RFC 9111 section 5.1) and Cache-Status. */
function hitHeaders (stored: StoredResponse, hit: PreparedHit): ResponseHeaders {
  hit.headers ??= { ...stored.headers, age: String(hit.age), 'cache-status': hit.cacheStatus }
  return hit.headers
}

// Fields computed over a response's whole content: wrong on a part of it.
const WHOLE_CONTENT_FIELDS = ['content-digest', 'content-md5']

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

/**
 * Preconditions only the origin can evaluate (RFC 9111 section 4.3.2): a request carrying
 * one is answered by the origin, with the field, never from the store.
 */
export function hasOriginPrecondition (headers: RequestHeaders): boolean {
  return headers['if-match'] !== undefined || headers['if-unmodified-since'] !== undefined
}

/**
 * The Cache-Status detail of a response stored nowhere because the end of its body cannot be
 * trusted; peers keeping hot copies read it from the owner's answer.
 */
export const UNFRAMED = 'unframed'

/**
 * True when a response's body is delimited by the connection closing (RFC 9112 section 6.3,
 * rule 8): no Content-Length and no Transfer-Encoding, on a status that carries a body.
 * Rule 4's case (a Transfer-Encoding whose last coding is not chunked, also read until the
 * close) is left storable: the conformance suite's headers-store-Transfer-Encoding sends
 * exactly that and requires it to be stored.
 */
function closeDelimited (status: number, headers: ResponseHeaders): boolean {
  return status !== 204 && headers['content-length'] === undefined && headers['transfer-encoding'] === undefined
}

/**
 * A stored response updated by a 304 or a HEAD response (RFC 9111 sections 3.2, 4.3.4 and
 * 4.3.5): `served` is what the caller that asked gets, `kept` what may stay in the store, or
 * undefined when the updated response may no longer be stored (it now says private or
 * no-store). A Set-Cookie on the update belongs to that caller, not to the entry: the entry
 * keeps it only where it says public, as for a fill.
 */
function refreshEntry (req: CacheRequest, old: StoredResponse, update: ResponseHeaders, requestTime: number, now: number):
{ served: StoredResponse, kept: StoredResponse | undefined } {
  const entry = (headers: ResponseHeaders): StoredResponse => {
    // The update's own Age (not stored) counts towards the refreshed response's age.
    const freshness = computeFreshness(old.status, req.headers, update.age === undefined ? headers : { ...headers, age: update.age }, requestTime, now)
    return {
      status: old.status,
      statusText: old.statusText,
      headers,
      body: old.body,
      bodyLength: old.bodyLength,
      freshness,
      size: entrySize(req.key, headers, old.bodyLength, old.statusText, freshness.vary)
    }
  }
  const merged = mergeNotModified(old.headers, update)
  const served = entry(merged)
  // A Range on the request that validated is about what that caller is sent, not about the
  // stored complete response the 304 refreshes (RFC 9111 section 4.3.4: it MUST be updated);
  // judged with it, every range request on a stale entry would drop the entry instead.
  let asked = req.headers
  if (asked.range !== undefined) {
    const { range: _range, ...rest } = asked
    asked = rest
  }
  let decision = decideStorage('GET', asked, old.status, merged)
  if (!decision.store && update['set-cookie'] !== undefined) {
    const { 'set-cookie': _cookie, ...rest } = update
    decision = decideStorage('GET', asked, old.status, mergeNotModified(old.headers, rest))
  }
  if (!decision.store) return { served, kept: undefined }
  return { served, kept: decision.headers === merged ? served : entry(decision.headers) }
}

function hasConditional (headers: RequestHeaders): boolean {
  return headers['if-none-match'] !== undefined || headers['if-modified-since'] !== undefined
}

/**
 * May this request wait for, or share, another request's origin fetch? Not when it asks for
 * something only it wants: a range, or an answer to its own preconditions.
 */
export function coalescable (req: CacheRequest): boolean {
  const h = req.headers
  return h.range === undefined && h['if-none-match'] === undefined && h['if-modified-since'] === undefined &&
    h['if-match'] === undefined && h['if-unmodified-since'] === undefined && h['if-range'] === undefined
}

/**
 * May a response fetched for `leader` be given to a request that joined it? Only one a
 * shared cache could store and reuse for that request as it came: not private, no
 * Set-Cookie, no field that storing strips, and the same values for every field it varies on.
 * The storage decision depends on the leader and the response only, so it is made once per
 * response; each joiner then costs a Vary check.
 */
export function shareTest (leader: CacheRequest): ShareTest {
  let seenStatus = 0
  let seenHeaders: ResponseHeaders | undefined
  let freshness: Freshness | null = null
  return (joiner, status, headers) => {
    if (headers !== seenHeaders || status !== seenStatus) {
      seenStatus = status
      seenHeaders = headers
      const decision = decideStorage('GET', leader.headers, status, headers)
      // RFC 9111 sections 5.2.2.4 and 5.2.2.7: fields named by private="..." or no-cache="..."
      // are stripped from what is stored, but a joiner would get the leader's response as it
      // came (its Set-Cookie included). Such a response is not shared; joiners are served
      // from the stored, stripped entry instead.
      freshness = decision.store && decision.headers === headers ? computeFreshness(status, leader.headers, headers, 0, 0) : null
    }
    return freshness !== null && varyMatches(freshness, joiner as RequestHeaders)
  }
}

/**
 * RFC 9111 section 5.2.1.7: the answer to an only-if-cached request that nothing stored can
 * serve, wherever it is decided (here, or on a peer that cannot reach the owner).
 */
export function onlyIfCachedMiss (sink: CallerHandler, ctl: CallerController): void {
  const body = Buffer.from('only-if-cached: not in cache\n')
  replay(sink, ctl, 504, 'Gateway Timeout', {
    'content-type': 'text/plain; charset=utf-8',
    'content-length': String(body.length),
    'cache-status': `${CACHE_NAME}; fwd=miss; detail=only-if-cached`
  }, [body])
}

/** An origin fetch in progress for one key, and who is waiting for it. */
interface Flight {
  /** Callers streaming the fill's response as it arrives (null for a validation). */
  readonly fanout: Fanout | null
  /**
   * Callers that arrived too late to stream it: served again once it has settled, or as soon
   * as it is known that nothing will be stored, or once it has stayed paused for LATE_WAIT_MS.
   */
  readonly after: Array<() => void>
  /**
   * A fill for a range (LocalCache.#fillsWhole): other ranges of the URL wait for it too, and
   * everyone waiting goes their own way after rangeWaitMs, as it is answered only once whole.
   */
  readonly range: boolean
  timer?: NodeJS.Timeout
}

/**
 * The owner's side of the cluster: serves a request from this peer's store, validating or
 * fetching from the origin as RFC 9111 requires, and records what may be stored.
 */
export class LocalCache {
  readonly #o: LocalCacheOptions
  readonly #flights = new FlightTable<Flight>()

  constructor (options: LocalCacheOptions) {
    this.#o = options
  }

  // Bytes still to read for range fills whose callers have their ranges, within rangeFillBudget.
  #rangeFillBytes = 0

  /**
   * Takes `bytes` of the range fill budget for a fill reading on with no caller; false when
   * it would go over. Nothing paces such a fill: without a bound, cheap requests for one byte
   * of many large responses would have the cache download them all at once and hold them.
   */
  reserveRangeFill (bytes: number): boolean {
    if (this.#rangeFillBytes + bytes > (this.#o.rangeFillBudget ?? Infinity)) return false
    this.#rangeFillBytes += bytes
    return true
  }

  releaseRangeFill (bytes: number): void {
    this.#rangeFillBytes -= bytes
  }

  // Range fills by key, from the start of their range's answer to their end: an invalidation
  // of the URL tells them that what they would store is already out of date.
  readonly #rangeFills = new Map<string, Set<() => void>>()

  onInvalidate (key: string, stop: () => void): void {
    let set = this.#rangeFills.get(key)
    if (set === undefined) this.#rangeFills.set(key, set = new Set())
    set.add(stop)
  }

  offInvalidate (key: string, stop: () => void): void {
    const set = this.#rangeFills.get(key)
    if (set === undefined) return
    set.delete(stop)
    if (set.size === 0) this.#rangeFills.delete(key)
  }

  /** Keys with an origin fetch in flight: 0 whenever the peer is idle. */
  get flights (): number {
    return this.#flights.size
  }

  /**
   * Serves one request into `sink`, whose controller is `ctl`. Never throws. `mayJoin` is
   * false for a request that already waited once, so it cannot wait forever.
   */
  serve (req: CacheRequest, sink: CallerHandler, ctl: CallerController, mayJoin = true): void {
    const { store, counters, now } = this.#o
    const host = req.host
    const row = counters.hostRow(host)
    // A request served again after waiting for a fetch was counted on its first pass.
    if (mayJoin) row.requests++
    if (hasOriginPrecondition(req.headers)) {
      counters.add('misses')
      counters.addHost(host, 'misses')
      this.#originFetch(req, sink, ctl, undefined, 'request', () => {}, undefined)
      return
    }
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
      if (reuse.action !== 'validate') {
        if (channels.hit.hasSubscribers) {
          channels.hit.publish({ self: this.#o.self, url: req.key, status: selected.status, age: currentAge(selected.freshness, now()) })
        }
        counters.values.localHits++
        row.hits++
        if (reuse.action === 'fresh') {
          this.#serveStored(req, selected, sink, ctl, 'hit')
          return
        }
        counters.add('staleServed')
        if (reuse.action === 'stale-revalidate') this.#revalidateInBackground(req, selected)
        this.#serveStored(req, selected, sink, ctl, reuse.action === 'stale' ? 'hit; detail=stale' : 'hit; detail=stale-while-revalidate')
        return
      }
      // RFC 9111 section 5.2.1.7
      if (req.directives.has('only-if-cached')) return onlyIfCachedMiss(sink, ctl)
      if (mayJoin && this.#join(req, sink, ctl)) return
      if (hasValidator(selected.freshness)) {
        counters.add('revalidations')
        this.#lead(req, sink, ctl, selected, 'stale', selected)
        return
      }
      counters.add('misses')
      counters.addHost(host, 'misses')
      this.#lead(req, sink, ctl, undefined, 'stale', selected)
      return
    }

    if (req.directives.has('only-if-cached')) return onlyIfCachedMiss(sink, ctl)
    if (mayJoin && this.#join(req, sink, ctl)) return
    counters.add('misses')
    counters.addHost(host, 'misses')
    this.#lead(req, sink, ctl, undefined, 'uri-miss')
  }

  /**
   * True for a GET with a Range this cache asks the origin for the whole response for (see
   * fillsWholeForRange): stored, that answers this range and every later one. undici and
   * most caches pass the Range on and store nothing, so a media file fetched in ranges, as
   * players and browsers fetch them, would never be cached at all.
   */
  #fillsWhole (req: CacheRequest): boolean {
    const range = req.headers.range
    return req.method === 'GET' && range !== undefined && this.#o.fillRanges !== false && !hasOriginPrecondition(req.headers) &&
      fillsWholeForRange(range, this.#o.maxEntrySize)
  }

  /** Joins the origin fetch in flight for this key, if there is one. */
  #join (req: CacheRequest, sink: CallerHandler, ctl: CallerController): boolean {
    // A range filled whole waits for a range fill of its URL, not for a whole GET's: that
    // one's joiners stream it, and a range, which cannot, would wait for its end unbounded.
    const range = req.headers.range !== undefined
    if (range ? !this.#fillsWhole(req) : !coalescable(req)) return false
    const flight = this.#flights.get(req.key)
    if (flight === undefined || (range && !flight.range)) return false
    this.#o.counters.add('coalescedWaits')
    const again = (): void => this.serve(req, sink, ctl, false)
    if (req.method === 'GET' && !range && flight.fanout !== null && flight.fanout.join(sink, ctl, again, req.headers)) return true
    let waiting = true
    flight.after.push(() => {
      if (waiting) again()
    })
    ctl.attach({
      pause () {},
      resume () {},
      abort (reason) {
        waiting = false
        sink.onResponseError(ctl, reason)
      }
    })
    return true
  }

  /** Starts an origin fetch for this key that later requests can join. */
  #lead (req: CacheRequest, sink: CallerHandler, ctl: CallerController, validating: StoredResponse | undefined, fwd: string,
    stale?: StoredResponse): void {
    if (channels.miss.hasSubscribers) channels.miss.publish({ self: this.#o.self, url: req.key, reason: fwd })
    const whole = req.headers.range !== undefined && this.#fillsWhole(req)
    if ((!whole && !coalescable(req)) || this.#flights.has(req.key)) {
      this.#fetch(req, sink, ctl, validating, fwd, undefined, stale)
      return
    }
    const key = req.key
    let flight: Flight
    const settled = (): void => {
      if (this.#flights.get(key) !== flight) return
      if (flight.timer !== undefined) clearTimeout(flight.timer)
      this.#flights.delete(key)
      for (const resume of flight.after) resume()
    }
    if (validating === undefined && req.method === 'GET' && !whole) {
      // A fill its callers stopped reading lets those waiting for its end go their own way
      // after a second: an origin fetch of their own costs less than a wait that would outlast
      // the asking peer's peerTimeout. Its stopped readers are cut off after bodyTimeout if
      // other callers still read it.
      const fanout = new Fanout(this.#shareTest(req, stale), { stallMs: this.#o.bodyTimeout, waitMs: LATE_WAIT_MS, onStall: settled })
      fanout.join(sink, ctl, () => {}, req.headers, true)
      flight = { fanout, after: [], range: false }
      this.#flights.set(key, flight)
      this.#fetch(req, fanout, fanout.ctl, validating, fwd, settled, stale)
    } else {
      flight = { fanout: null, after: [], range: whole }
      this.#flights.set(key, flight)
      if (whole) {
        // Those waiting are answered only once the body is whole, however slow the origin.
        flight.timer = setTimeout(settled, this.#o.rangeWaitMs ?? LATE_WAIT_MS)
        flight.timer.unref()
      }
      this.#fetch(req, sink, ctl, validating, fwd, settled, stale)
    }
  }

  /**
   * The share test of a fill started with a stale entry at hand. When the origin fails, that
   * entry may stand in for it (RFC 5861), but whether it may is each request's own say: the
   * leader's stale-if-error, or its lack of no-cache, allows nothing for a joiner (RFC 9111
   * section 4.2.4). A joiner it does not allow goes its own way and gets its own answer.
   */
  #shareTest (req: CacheRequest, stale: StoredResponse | undefined): ShareTest {
    const share = shareTest(req)
    if (stale === undefined) return share
    return (joiner, status, headers) => {
      if (!share(joiner, status, headers)) return false
      const cacheStatus = headers['cache-status']
      if (typeof cacheStatus !== 'string' || !cacheStatus.endsWith(STAND_IN)) return true
      const h = joiner as RequestHeaders
      // Without a status from the origin, the stand-in answers a disconnected origin.
      const grace = cacheStatus.includes('fwd-status=') ? undefined : this.#o.staleOnDisconnect
      return staleIfErrorAllows(stale.freshness, requestDirectives(h['cache-control']), h, this.#o.now(), grace)
    }
  }

  /**
   * One validation per key in the background (RFC 5861 stale-while-revalidate): none starts
   * while any origin fetch for the key is already in flight, however many stale hits arrive.
   */
  #revalidateInBackground (req: CacheRequest, stale: StoredResponse): void {
    if (this.#flights.has(req.key)) return
    const ctl = new BackgroundController()
    const untrack = this.#o.track?.(ctl) ?? (() => {})
    const sink = new DiscardSink(untrack)
    // Without the caller's conditionals, range or cache directives: only what selects the variant.
    const bg: CacheRequest = { ...req, method: 'GET', headers: withoutConditionals(req.headers), directives: new Map() }
    delete bg.headers.range
    this.#o.counters.add('revalidations')
    this.#lead(bg, sink, ctl, hasValidator(stale.freshness) ? stale : undefined, 'stale', stale)
  }

  // Origin fetches in flight note the sequence and store nothing invalidated since.
  readonly #invalidations = new Invalidations()

  /** The number an origin fetch starting now notes, for invalidatedSince(). */
  get sequence (): number {
    return this.#invalidations.sequence
  }

  /** Was `key` invalidated after a fetch that noted `sequence` started? */
  invalidatedSince (key: string, sequence: number): boolean {
    return this.#invalidations.since(key, sequence)
  }

  /** Drops every stored variant of a URL (RFC 9111 section 4.4). */
  invalidate (url: URL): void {
    this.#invalidations.add(url.href)
    const fills = this.#rangeFills.get(url.href)
    if (fills !== undefined) for (const stop of [...fills]) stop()
    this.#o.secondTier?.delete(url)
    const n = this.#o.store.delete(url.host, url.href)
    if (n > 0) this.#o.counters.add('invalidations')
  }

  #serveStored (req: CacheRequest, stored: StoredResponse, sink: CallerHandler, ctl: CallerController, detail: string, forward?: string): void {
    const f = stored.freshness
    const current = currentAge(f, this.#o.now())
    const age = Math.floor(current)
    const ttl = Math.floor(f.lifetime - current)
    let hit = stored.hit
    if (hit === undefined || hit.age !== age || hit.ttl !== ttl || hit.detail !== detail || hit.forward !== forward) {
      hit = {
        age,
        ttl,
        detail,
        forward,
        cacheStatus: forward === undefined ? `${CACHE_NAME}; ${detail}; ttl=${ttl}` : `${CACHE_NAME}; fwd=${forward}; ${detail}`,
        headers: undefined,
        raw: undefined
      }
      stored.hit = hit
    }
    if (req.headers['if-none-match'] !== undefined || req.headers['if-modified-since'] !== undefined || req.headers.range !== undefined) {
      if (this.#servePartialOrNotModified(req, stored, hit, sink, ctl)) return
    }
    const body = req.method === 'HEAD' ? NO_BODY : stored.body
    if (sink.legacy) {
      // The stored headers are converted to the legacy raw form once per Age value, not per hit.
      hit.raw ??= sharedRawHeaders(hitHeaders(stored, hit))
      replay(sink, ctl, stored.status, stored.statusText, NO_HEADERS, body, hit.raw)
    } else {
      replay(sink, ctl, stored.status, stored.statusText, hitHeaders(stored, hit), body)
    }
  }

  /** Answers a caller's own conditional or range request from a stored response, if it can. */
  #servePartialOrNotModified (req: CacheRequest, stored: StoredResponse, hit: PreparedHit, sink: CallerHandler, ctl: CallerController): boolean {
    const f = stored.freshness
    const headers = hitHeaders(stored, hit)
    // RFC 9110 section 13.2.1: preconditions are ignored when the response without them would
    // not be a 2xx; a stored 404 or 301 is not "not modified", whatever its validators say.
    // (RFC 9111 section 4.3.2 evaluates them on the stored response as the origin would.)
    if (stored.status >= 200 && stored.status < 300 && hasConditional(req.headers) && conditionalMatches(f, req.headers)) {
      replay(sink, ctl, 304, 'Not Modified', notModifiedHeaders(headers), NO_BODY)
      return true
    }
    if (req.method === 'GET' && req.headers.range !== undefined && stored.status === 200) {
      const partial = rangeOf(req.headers, f, stored)
      if (partial === undefined) return false
      if (partial.status === 416) {
        // RFC 9110 section 15.5.17: a 416 is about this request's range, not a representation.
        // It gets none of the stored 200's fields: its Cache-Control or Expires would make it
        // storable downstream (RFC 9111 section 3), to be served in place of the 200, and its
        // validators and content metadata would describe content the 416 does not carry.
        // Generated now, it has a Date of its own (RFC 9110 section 6.6.1) and no Age; nor a
        // ttl in Cache-Status, which is the stored response's remaining lifetime.
        replay(sink, ctl, 416, 'Range Not Satisfiable', {
          ...partial.headers,
          date: new Date(this.#o.now()).toUTCString(),
          'cache-status': hit.forward === undefined ? `${CACHE_NAME}; ${hit.detail}` : hit.cacheStatus
        }, partial.body)
        return true
      }
      // RFC 9110 section 15.3.7: a 206 carries the fields a 200 would, but for those that
      // describe the whole content it no longer sends (RFC 9530 section 2's Content-Digest).
      const out: ResponseHeaders = { ...headers, ...partial.headers }
      for (const name of WHOLE_CONTENT_FIELDS) delete out[name]
      replay(sink, ctl, 206, 'Partial Content', out, partial.body)
      return true
    }
    return false
  }

  #fetch (req: CacheRequest, sink: CallerHandler, ctl: CallerController, validating: StoredResponse | undefined, fwd: string,
    settled: () => void = () => {}, stale?: StoredResponse): void {
    const tier = this.#o.secondTier
    if (tier !== undefined && validating === undefined && stale === undefined && req.method === 'GET' &&
      (req.headers.range === undefined || this.#fillsWhole(req)) && !req.directives.has('no-cache')) {
      const { counters } = this.#o
      // serve() counted an LRU miss ('uri-miss'; a refetch after a mismatched 304 counted
      // none): whether the request misses is known once the store has answered. It is taken
      // back now, in the same tick, and counted again below if the store misses too, so a
      // read of the counters during the lookup never sees them go down afterwards (Prometheus
      // takes a decrease for a reset), and a refetch's hit takes back no miss it never counted.
      // The host row is the one serve() counted on, even if the table drops it meanwhile.
      const countedMiss = fwd === 'uri-miss'
      const row = counters.hostRow(req.host)
      if (countedMiss) {
        counters.values.misses--
        row.misses--
      }
      const missed = (): void => {
        if (!countedMiss) return
        counters.values.misses++
        row.misses++
      }
      // An invalidation while the store looks: what it read may predate the unsafe request,
      // and must be neither served nor put in the LRU (as for an origin fetch in flight).
      const sequence = this.sequence
      ctl.attach({ pause () {}, resume () {}, abort (reason) { sink.onResponseError(ctl, reason) } })
      tier.lookup(req).then((found) => {
        if (ctl.aborted) {
          missed()
          settled()
          return
        }
        if (found === undefined || !varyMatches(found.freshness, req.headers) || this.invalidatedSince(req.key, sequence)) {
          missed()
          this.#originFetch(req, sink, ctl, undefined, fwd, settled, undefined)
          return
        }
        this.#o.store.put(req.host, req.key, found)
        const reuse = decideReuse(found.freshness, req.directives, req.headers, this.#o.now())
        if (reuse.action === 'fresh') {
          row.hits++
          counters.add('localHits')
          if (channels.hit.hasSubscribers) {
            channels.hit.publish({ self: this.#o.self, url: req.key, status: found.status, age: currentAge(found.freshness, this.#o.now()) })
          }
          settled()
          this.#serveStored(req, found, sink, ctl, 'hit; detail=second-tier')
          return
        }
        missed()
        this.#originFetch(req, sink, ctl, hasValidator(found.freshness) ? found : undefined, 'stale', settled, found)
      }, () => {
        missed()
        this.#originFetch(req, sink, ctl, undefined, fwd, settled, undefined)
      })
      return
    }
    this.#originFetch(req, sink, ctl, validating, fwd, settled, stale)
  }

  #originFetch (req: CacheRequest, sink: CallerHandler, ctl: CallerController, validating: StoredResponse | undefined, fwd: string,
    settled: () => void, stale: StoredResponse | undefined): void {
    const { origin, counters, originTimeout, bodyTimeout } = this.#o
    // A cache filling itself asks for the whole response; the caller's own conditionals are
    // answered from what comes back. The origin's own preconditions go on (RFC 9111 section
    // 4.3.2), and so does If-Range with the Range it qualifies (RFC 9110 section 13.1.5).
    const headers = withoutConditionals(req.headers)
    // A range asked for whole is answered from the whole response as it streams in.
    const whole = this.#fillsWhole(req)
    if (whole) delete headers.range
    for (const name of ORIGIN_CONDITIONALS) {
      const value = req.headers[name]
      if (value !== undefined && (name !== 'if-range' || headers.range !== undefined)) headers[name] = value
    }
    if (validating !== undefined) {
      if (validating.freshness.etag !== undefined) headers['if-none-match'] = validating.freshness.etag
      if (validating.freshness.lastModified !== undefined) headers['if-modified-since'] = validating.freshness.lastModified
    }
    addVia(headers)
    counters.add('originFetches')
    counters.addHost(req.host, 'originFetches')
    const handler = new OriginResponseHandler(this, this.#o, req, sink, ctl, validating, fwd, this.#o.now(), settled, stale, whole)
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

  /** RFC 9111 section 4.3.5: freshen (or drop) a stored GET from a HEAD response. */
  updateFromHead (req: CacheRequest, stored: StoredResponse, head: ResponseHeaders, requestTime: number, sequence: number): void {
    const { store, now } = this.#o
    if (this.invalidatedSince(req.key, sequence)) return
    const same = (name: string): boolean => {
      const a = headerString(stored.headers, name)
      const b = headerString(head, name)
      return a === undefined || b === undefined || a === b
    }
    const hasValidators = (h: ResponseHeaders): boolean => headerString(h, 'etag') !== undefined || headerString(h, 'last-modified') !== undefined
    // Matching validators select the stored response; with none on either side, the single
    // stored response is the one (as for a 304, section 4.3.4).
    // A HEAD 200 describes a 200: it says nothing for a stored 404 or redirect, which it
    // would otherwise freshen into being served in place of the 200 it announces.
    const validated = stored.status === 200 && (hasValidators(head) || !hasValidators(stored.headers)) &&
      same('etag') && same('last-modified') && same('content-length')
    if (!validated) {
      store.delete(req.host, req.key)
      return
    }
    const { kept } = refreshEntry(req, stored, head, requestTime, now())
    if (kept === undefined) {
      store.delete(req.host, req.key)
      return
    }
    if (store.put(req.host, req.key, kept, stored)) this.#o.secondTier?.write(req, kept)
  }

  /** Fetches the whole response again, unconditionally, for a request whose validation misfired. */
  refetch (req: CacheRequest, sink: CallerHandler, ctl: CallerController): void {
    this.#fetch(req, sink, ctl, undefined, 'stale')
  }

  /** Serves a stored response after a successful validation (a 304 from the origin). */
  serveValidated (req: CacheRequest, stored: StoredResponse, sink: CallerHandler, ctl: CallerController): void {
    this.#serveStored(req, stored, sink, ctl, 'fwd-status=304', 'stale')
  }

  /**
   * Serves a stale stored response in place of a failed origin (RFC 5861 stale-if-error),
   * when its directives allow it; returns false when they do not.
   */
  serveStaleOnError (req: CacheRequest, stale: StoredResponse | undefined, sink: CallerHandler, ctl: CallerController, status?: number): boolean {
    if (stale === undefined || !staleIfErrorAllows(stale.freshness, req.directives, req.headers, this.#o.now(), status === undefined ? this.#o.staleOnDisconnect : undefined)) return false
    this.#o.counters.add('staleServed')
    this.#serveStored(req, stale, sink, ctl, `${status === undefined ? '' : `fwd-status=${status}; `}${STAND_IN}`, 'stale')
    return true
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
  readonly #settled: () => void
  readonly #stale: StoredResponse | undefined
  readonly #started = performance.now()
  readonly #deadline: Deadline
  // The cache's invalidation sequence when this fetch started.
  readonly #sequence: number

  #status = 0
  // The origin failed with a 5xx and a stale copy answers instead: swallow the 5xx's body.
  #replacedByStale = false
  #statusText = ''
  #headers: ResponseHeaders = {}
  readonly #body: BodyRecorder
  #expected = -1
  #notModified: ResponseHeaders | null = null
  #suppressBody = false
  #done = false
  // The caller asked for a range and the origin for the whole response (LocalCache.#fillsWhole):
  // the request fields the response is judged with are the origin's, without Range.
  readonly #wholeForRange: boolean
  readonly #asked: RequestHeaders
  // The bytes of the body the caller is sent, once a 206 or 416 has started; the body's bytes
  // seen so far; and whether the caller has had its whole answer while the body still comes.
  #slice: { readonly start: number, readonly end: number } | null = null
  #offset = 0
  #callerEnded = false
  #untrackRest: (() => void) | undefined = undefined
  #unhook: (() => void) | undefined = undefined

  constructor (cache: LocalCache, o: LocalCacheOptions, req: CacheRequest, sink: CallerHandler, ctl: CallerController,
    validating: StoredResponse | undefined, fwd: string, requestTime: number, settled: () => void,
    stale: StoredResponse | undefined, wholeForRange: boolean) {
    this.#cache = cache
    this.#o = o
    this.#req = req
    this.#sink = sink
    this.#ctl = ctl
    this.#validating = validating
    this.#fwd = fwd
    this.#requestTime = requestTime
    this.#settled = settled
    this.#stale = stale
    this.#body = new BodyRecorder(o.maxEntrySize)
    this.#wholeForRange = wholeForRange
    if (wholeForRange) {
      const { range: _range, 'if-range': _ifRange, ...asked } = req.headers
      this.#asked = asked
    } else {
      this.#asked = req.headers
    }
    this.#sequence = cache.sequence
    this.#deadline = new Deadline(o.originTimeout, (err) => this.onResponseError(null, err))
  }

  onRequestStart (controller: Controller): void {
    this.#deadline.attach(controller)
    if (this.#done) return
    this.#ctl.attach(controller)
  }

  onResponseStart (controller: Controller, status: number, rawHeaders: ResponseHeaders, statusText?: string): void {
    // Only a final response ends the wait: undici restarts its own headers timer at each 1xx,
    // so an origin sending 103s forever would hold the fill, and everyone joined to it, for good.
    if (status >= 200) this.#deadline.clear()
    if (this.#done) return
    // Interim (1xx) responses pass on and are never stored (RFC 9110 section 15.2); the
    // final response is still to come.
    if (status < 200) {
      if (this.#notModified === null && !this.#replacedByStale) this.#sink.onResponseStart(this.#ctl, status, endToEndResponseHeaders(rawHeaders), statusText ?? '')
      return
    }
    this.#o.counters.latency.origin.observe((performance.now() - this.#started) / 1000)
    const req = this.#req
    const headers = endToEndResponseHeaders(rawHeaders)
    this.#status = status
    this.#statusText = statusText ?? ''
    // RFC 9110 section 6.6.1: a response cached or passed on without a Date gets the time it
    // was received. A 304 too: its fields replace the stored ones, and a refreshed entry that
    // kept its old Date would be as old as before, stale again at once.
    if (headers.date === undefined) headers.date = new Date(this.#o.now()).toUTCString()

    if (status === 304 && this.#validating !== undefined) {
      // Handled at the end: the 304 has no body to pass on, and the refreshed stored response
      // is what the caller gets.
      this.#notModified = headers
      return
    }

    // RFC 5861 section 4: the errors a stale response may stand in for are 500, 502, 503 and
    // 504; a 501 or a 505 is the origin's real answer to this request.
    if (STALE_IF_ERROR_STATUSES.has(status) && this.#stale !== undefined && staleIfErrorAllows(this.#stale.freshness, req.directives, req.headers, this.#o.now())) {
      this.#replacedByStale = true
      return
    }

    let detail = ''
    if (req.method === 'GET') {
      const decision = decideStorage(req.method, this.#asked, status, headers)
      const cl = headerString(headers, 'content-length')
      this.#expected = cl !== undefined && DIGITS.test(cl) ? Number(cl) : -1
      // Only a 200 satisfies the origin's preconditions with the whole representation; a
      // 412 is an answer to this request alone.
      const storable = decision.store && (status === 200 || !hasOriginPrecondition(this.#asked))
      if (storable && this.#expected > this.#o.maxEntrySize) {
        detail = '; detail=too-large'
      } else if (storable && closeDelimited(status, rawHeaders)) {
        // RFC 9112 section 6.3: such a body ends when the connection closes, and undici
        // reports a reset connection as that end too, so a body cut short cannot be told from
        // a whole one. Passed on as it comes, never stored.
        detail = `; detail=${UNFRAMED}`
      } else if (storable) {
        this.#body.start()
        this.#headers = decision.headers
        // RFC 9211 section 2.7: said only where it is known now; a body of unknown length may
        // still turn out too large.
        if (this.#expected >= 0) detail = '; stored'
      }
    }
    if (req.method === 'HEAD' && status === 200 && this.#stale !== undefined) {
      // RFC 9111 section 4.3.5: a HEAD response updates the stored GET it describes, or, when
      // its validators or length say the representation changed, that stored GET is dropped.
      this.#cache.updateFromHead(req, this.#stale, headers, this.#requestTime, this.#sequence)
    } else if (!this.#body.recording) {
      // A full response that replaces a stored one we were validating, or refilling because
      // it was stale: the old one is gone whether or not the new one may be stored (RFC 9111
      // section 4.3.3). Kept, it would come back as a stale stand-in for a later error, though
      // the origin's latest answer was no-store.
      this.#dropReplaced()
    }
    // Nothing will be stored for the callers waiting for this fill's end: they need not wait.
    if (!this.#body.recording) this.#settled()
    const out: ResponseHeaders = { ...headers, 'cache-status': `${CACHE_NAME}; fwd=${this.#fwd}; fwd-status=${status}${detail}` }
    if (status === 200 && hasConditional(req.headers)) {
      const f = computeFreshness(status, req.headers, headers, this.#requestTime, this.#o.now())
      if (conditionalMatches(f, req.headers)) {
        this.#suppressBody = true
        this.#sink.onResponseStart(this.#ctl, 304, notModifiedHeaders(out), 'Not Modified')
        return
      }
    }
    if (this.#wholeForRange && status === 200 && this.#expected >= 0 && this.#startRange(controller, headers, out)) return
    this.#sink.onResponseStart(this.#ctl, status, out, this.#statusText)
  }

  /**
   * Starts the caller's 206 (or 416) from the whole response's fields, as a stored response
   * would answer it (LocalCache.#servePartialOrNotModified); false to send the whole 200, as
   * the origin would have for a Range it ignores or an If-Range that does not match.
   */
  #startRange (controller: Controller, headers: ResponseHeaders, out: ResponseHeaders): boolean {
    const req = this.#req
    const spec = parseByteRange(req.headers.range as string)
    if (spec === undefined) return false
    if (!ifRangeAllows(req.headers, { etag: headerString(headers, 'etag'), lastModified: headerString(headers, 'last-modified') })) return false
    const length = this.#expected
    const range = resolveByteRange(spec, length)
    this.#hookInvalidation(controller)
    if (range === 'unsatisfiable') {
      // Fields as a 416 from the store gets them: none of the 200's (RFC 9110 section 15.5.17).
      this.#sink.onResponseStart(this.#ctl, 416, {
        'content-range': `bytes */${length}`,
        'content-length': '0',
        date: new Date(this.#o.now()).toUTCString(),
        'cache-status': out['cache-status'] as string
      }, 'Range Not Satisfiable')
      this.#slice = { start: 0, end: -1 }
      this.#endCaller(controller)
      return true
    }
    // RFC 9110 section 15.3.7: a 206 carries the fields a 200 would, but those describing the
    // whole content.
    const partial: ResponseHeaders = { ...out, 'content-range': `bytes ${range.start}-${range.end}/${length}`, 'content-length': String(range.end - range.start + 1) }
    for (const name of WHOLE_CONTENT_FIELDS) delete partial[name]
    this.#sink.onResponseStart(this.#ctl, 206, partial, 'Partial Content')
    this.#slice = range
    return true
  }

  /** Passes on the part of `chunk` inside the caller's range, and ends the caller after its last byte. */
  #sliceData (controller: Controller, chunk: Buffer, slice: { readonly start: number, readonly end: number }): void {
    const from = this.#offset
    this.#offset += chunk.length
    if (this.#callerEnded) {
      // Read on only for the store: a body that turned out too large is not read to its end.
      if (!this.#body.recording) this.#stopReading(controller)
      return
    }
    const lo = Math.max(slice.start - from, 0)
    const hi = Math.min(slice.end + 1 - from, chunk.length)
    if (hi > lo) this.#sink.onResponseData(this.#ctl, lo === 0 && hi === chunk.length ? chunk : chunk.subarray(lo, hi))
    if (this.#offset > slice.end && !this.#done && !this.#callerEnded) this.#endCaller(controller)
  }

  /**
   * The caller has its whole range: it gets its end now, not once the rest of the body has
   * come. The rest is read on for the store, as background work that close() waits for and
   * destroy() aborts, that the caller can no longer pause or abort, and that an invalidation
   * of the URL stops; a response that will not be stored is not read any further.
   */
  #endCaller (controller: Controller): void {
    this.#callerEnded = true
    this.#ctl.attach(null)
    // A caller whose buffer was full paused the body with its last byte: it has no more to
    // read, and paused, the rest would never come.
    if (this.#ctl.paused) controller.resume()
    // Registered before the caller's end: a close() waiting for that end to empty the peer's
    // requests in flight must find this one there.
    const readOn = this.#body.recording && this.#readOn(controller)
    this.#sink.onResponseEnd(this.#ctl, {})
    if (!readOn) this.#stopReading(controller)
  }

  /** Takes the rest of the body on as background work; false when it is not to be read. */
  #readOn (controller: Controller): boolean {
    // Only what is still to come counts against the budget: what came was the caller's pace.
    const bytes = this.#expected - this.#offset
    if (!this.#cache.reserveRangeFill(bytes)) {
      // Over the budget: this one is not stored, as if it were too large.
      this.#body.stop()
      this.#dropReplaced()
      this.#settled()
      return false
    }
    const rest = new BackgroundController()
    rest.attach(controller)
    const untrack = this.#o.track?.(rest)
    let released = false
    this.#untrackRest = () => {
      if (released) return
      released = true
      this.#cache.releaseRangeFill(bytes)
      untrack?.()
    }
    return true
  }

  /**
   * From the start of a range's answer to the fill's end, an invalidation of the URL makes
   * what the fill would store out of date: nothing is stored, those waiting for it go their
   * own way at once, and a fill reading on for the store stops. A caller still receiving its
   * range gets it: its request came before the invalidation.
   */
  #hookInvalidation (controller: Controller): void {
    const key = this.#req.key
    const invalidated = (): void => {
      this.#body.stop()
      this.#settled()
      if (this.#callerEnded) this.#stopReading(controller)
    }
    this.#cache.onInvalidate(key, invalidated)
    this.#unhook = () => { this.#cache.offInvalidate(key, invalidated) }
  }

  #stopReading (controller: Controller): void {
    if (this.#done) return
    this.#done = true
    this.#untrackRest?.()
    this.#unhook?.()
    controller.abort(new errors.RequestAbortedError('the range was sent; the rest of a response that is not stored is not read'))
  }

  onResponseData (controller: Controller, chunk: Buffer): void {
    if (this.#done || this.#notModified !== null || this.#replacedByStale) return
    // Oversized bodies keep streaming; the recorder stops keeping them, and the callers
    // waiting for the stored response go their own way.
    if (this.#body.recording) {
      this.#body.add(chunk)
      if (!this.#body.recording) {
        // Too large after all: as when the length said so up front, the stored response this
        // one replaces is gone (RFC 9111 section 4.3.3), or it would outlive the origin's answer.
        this.#dropReplaced()
        this.#settled()
      }
    }
    if (this.#slice !== null) this.#sliceData(controller, chunk, this.#slice)
    else if (!this.#suppressBody) this.#sink.onResponseData(this.#ctl, chunk)
  }

  /** Drops the stored response a full response from the origin replaces and that will not be stored. */
  #dropReplaced (): void {
    const req = this.#req
    if ((this.#validating !== undefined || (req.method === 'GET' && this.#stale !== undefined)) && this.#status < 500) {
      this.#o.store.delete(req.host, req.key)
    }
  }

  onResponseEnd (_controller: Controller, trailers: ResponseHeaders): void {
    if (this.#done) return
    this.#done = true
    try {
      this.#end(trailers)
    } catch (err) {
      // A fault in deciding what to keep, not the origin's: nothing is stored, and the flight
      // closes all the same, or this caller and every later one for the key would wait for
      // good. A caller that has its whole body gets its end; one still owed a response (a
      // 304's refresh, a stale stand-in) gets the error.
      this.#settled()
      if (this.#callerEnded) return
      if (this.#notModified === null && !this.#replacedByStale) this.#sink.onResponseEnd(this.#ctl, trailers)
      else this.#sink.onResponseError(this.#ctl, err as Error)
    } finally {
      this.#untrackRest?.()
      this.#unhook?.()
    }
  }

  #end (trailers: ResponseHeaders): void {
    const req = this.#req
    const { store, counters, now } = this.#o
    if (this.#replacedByStale) {
      this.#settled()
      this.#cache.serveStaleOnError(req, this.#stale, this.#sink, this.#ctl, this.#status)
      return
    }
    if (this.#notModified !== null) {
      const old = this.#validating as StoredResponse
      if (!notModifiedMatches(old.freshness, this.#notModified)) {
        // The 304 is for some other representation (RFC 9111 section 4.3.4: update nothing);
        // the caller still needs a whole response, so ask again without conditions.
        this.#settled()
        this.#cache.refetch(req, this.#sink, this.#ctl)
        return
      }
      const { served, kept } = refreshEntry(req, old, this.#notModified, this.#requestTime, now())
      if (kept === undefined) store.delete(req.host, req.key)
      else if (!this.#cache.invalidatedSince(req.key, this.#sequence) && store.put(req.host, req.key, kept, old)) this.#o.secondTier?.write(req, kept)
      this.#settled()
      this.#cache.serveValidated(req, served, this.#sink, this.#ctl)
      return
    }
    if (this.#body.recording) {
      if (this.#expected >= 0 && this.#body.bytes !== this.#expected) {
        // undici itself rejects a short body; this guards any other origin dispatcher.
        this.#settled()
        if (!this.#callerEnded) this.#sink.onResponseError(this.#ctl, new TruncatedBodyError(this.#expected, this.#body.bytes))
        return
      }
      // The whole body is known now: a HEAD answered from this entry can say its length.
      // Age is dropped: the freshness record holds it, and every hit sends a fresh one.
      const headers: ResponseHeaders = { ...this.#headers }
      // Never on a 204: RFC 9110 section 8.6 forbids Content-Length in a 204 response.
      if (headers['content-length'] === undefined && this.#status !== 204) headers['content-length'] = String(this.#body.bytes)
      delete headers.age
      const freshness = computeFreshness(this.#status, req.headers, this.#headers, this.#requestTime, now())
      const stored: StoredResponse = {
        status: this.#status,
        statusText: this.#statusText,
        headers,
        body: this.#body.body(),
        bodyLength: this.#body.bytes,
        freshness,
        // The request values it varies on are kept too: charged, or Vary on a large request
        // field would hold many times the budget in entries that each count a few hundred bytes.
        size: entrySize(req.key, headers, this.#body.bytes, this.#statusText, freshness.vary)
      }
      if (!this.#cache.invalidatedSince(req.key, this.#sequence) && store.put(req.host, req.key, stored, this.#validating)) {
        counters.add('stored')
        this.#o.secondTier?.write(req, stored)
        if (channels.store.hasSubscribers) channels.store.publish({ self: this.#o.self, url: req.key, status: stored.status, bytes: stored.size })
      }
    }
    this.#settled()
    if (!this.#callerEnded) this.#sink.onResponseEnd(this.#ctl, trailers)
  }

  onResponseError (controller: Controller | null, err: Error): void {
    this.#deadline.clear()
    if (this.#done) return
    // A 304 has no body whatever its Content-Length says (RFC 9110 section 15.4.5); undici
    // still counts the missing bytes as an error, after the headers were complete.
    if (this.#notModified !== null && (err as { code?: string }).code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH') {
      this.onResponseEnd(controller as Controller, {})
      return
    }
    this.#done = true
    this.#body.stop()
    this.#settled()
    this.#untrackRest?.()
    this.#unhook?.()
    // The caller has its whole range: what failed is the rest of the body, kept for nobody.
    if (this.#callerEnded) return
    // No response reached the caller yet: a stale copy may stand in (RFC 5861).
    if (this.#status === 0 && !this.#ctl.aborted && this.#cache.serveStaleOnError(this.#req, this.#stale, this.#sink, this.#ctl)) return
    this.#sink.onResponseError(this.#ctl, err)
  }
}

/** Swallows a background response; only its side effect on the store matters. */
class DiscardSink implements CallerHandler {
  readonly legacy = false
  readonly #onDone: () => void
  #done = false

  constructor (onDone: () => void) {
    this.#onDone = onDone
  }

  onRequestStart (): void {}
  onResponseStart (): void {}
  startRaw (): void {}
  onResponseData (): void {}

  onResponseEnd (): void {
    this.#finish()
  }

  onResponseError (): void {
    this.#finish()
  }

  #finish (): void {
    if (this.#done) return
    this.#done = true
    this.#onDone()
  }
}

interface Partial { status: 206 | 416, headers: ResponseHeaders, body: Buffer[] }

/**
 * A single byte range of a stored complete response (RFC 9110 section 14), or undefined to
 * serve the whole response (several ranges, a unit other than bytes, or a failed If-Range).
 */
function rangeOf (requestHeaders: RequestHeaders, f: Freshness, stored: StoredResponse): Partial | undefined {
  const spec = parseByteRange(requestHeaders.range as string)
  if (spec === undefined || !ifRangeAllows(requestHeaders, f)) return undefined
  const length = stored.bodyLength
  const range = resolveByteRange(spec, length)
  if (range === 'unsatisfiable') return unsatisfiable(length)
  const { start, end } = range
  const whole = stored.body.length === 1 ? stored.body[0] as Buffer : Buffer.concat(stored.body as Buffer[])
  return {
    status: 206,
    headers: { 'content-range': `bytes ${start}-${end}/${length}`, 'content-length': String(end - start + 1) },
    body: [whole.subarray(start, end + 1)]
  }
}

function unsatisfiable (length: number): Partial {
  return { status: 416, headers: { 'content-range': `bytes */${length}`, 'content-length': '0' }, body: [] }
}
