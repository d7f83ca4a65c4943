import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Dispatcher } from 'undici'
import { errors } from 'undici'
import type { CacheRequest } from './cache/local-cache.js'
import { requestDirectives } from './cache/policy.js'
import type { CallerHandler } from './dispatch/compat.js'
import { CallerController } from './dispatch/controller.js'
import { ERROR_HEADER } from './forward.js'
import { BODYLESS_DROPPED, endToEndRequestHeaders, forwardcacheHops, LOOP_MESSAGE, normaliseReceivedHeaders, type RequestHeaders, type ResponseHeaders } from './headers.js'
import type { PeerAddresses } from './security/peer-addresses.js'
import { AUTH_HEADER, type Signer } from './security/signature.js'
import type { Counters } from './stats.js'
import { normaliseOriginUrl } from './url.js'

type Controller = Dispatcher.DispatchController

/** A handler for node:http servers and Connect/Express-style middleware stacks. */
export type NodeHandler = (req: IncomingMessage, res: ServerResponse, next?: (err?: unknown) => void) => void

export interface OwnerEndpoint {
  path: string
  /** This peer's base URL: what signatures it accepts must be addressed to. */
  self: string
  counters: Counters
  isClosed: () => boolean
  track: (ctl: CallerController) => () => void
  serve: (req: CacheRequest, sink: CallerHandler, ctl: CallerController) => void
  invalidate: (url: URL) => void
  /** Checks signatures when the cluster has a secret. */
  signer: Signer | undefined
  /** Without a secret: the addresses allowed in (the pool's and loopback). */
  addresses: PeerAddresses
  originAllowed: (url: URL) => boolean
  maxRequests: number
  /** bodyTimeout: how long a caller may read nothing of a response before it is cut off. */
  stallMs: number
}

function refuse (res: ServerResponse, status: number, code: string, reason: string, extra: Record<string, string> = {}): void {
  const body = `${reason}\n`
  res.writeHead(status, {
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    [ERROR_HEADER]: code,
    ...extra
  })
  res.end(body)
}

const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT'])

/**
 * Serves the wire protocol as the owner:
 * `GET|HEAD {path}?q={absolute URL}` answers from this peer's cache or the origin and never
 * forwards again; `DELETE {path}?q=...` drops the URL's stored responses (sent by a peer
 * after an unsafe method succeeded).
 */
export function createHandler (endpoint: OwnerEndpoint): NodeHandler {
  const { path, counters } = endpoint
  let active = 0
  // Normalised targets by the query that named them: peers ask for the same URLs over and over,
  // and parsing one costs more than the rest of serving a hit. Only valid ones are kept, and
  // nothing downstream writes to a request's URL.
  const targets = new Map<string, Target>()
  // Connections already let in, with the pool generation that let them in: the address of a
  // connection does not change, so a keep-alive peer is checked once per pool.
  const admitted = new WeakMap<object, number>()
  // The raw fields of the last request let in, and the end-to-end fields they read into.
  let lastFields: { raw: readonly string[], headers: RequestHeaders } | undefined

  const serve = (req: IncomingMessage, res: ServerResponse, raw: string, qIndex: number): void => {
    const method = req.method ?? ''
    const query = qIndex === -1 ? '' : raw.slice(qIndex + 1)
    let target = targets.get(query)
    const remembered = target !== undefined
    if (target === undefined) {
      const sent = targetOf(query)
      if (sent === null || sent === '') return refuse(res, 400, 'missing-q', 'missing query parameter q (the absolute origin URL)')
      let parsed: URL
      try {
        parsed = normaliseOriginUrl(sent)
      } catch (err) {
        return refuse(res, 400, 'bad-q', `bad q: ${(err as Error).message}`)
      }
      // A URL's href and host are made anew at each read.
      target = { url: parsed, key: parsed.href, host: parsed.host }
    }
    const { url, key } = target
    if (endpoint.signer !== undefined) {
      const auth = headerValue(req.headers[AUTH_HEADER])
      let verdict = endpoint.signer.verify(method, key, endpoint.self, auth)
      if (!verdict.ok && verdict.reason === 'bad signature') {
        // The signed URL is `q` as sent. A peer of a version before percent-encodings were tidied
        // (url.ts) signs and sends its own spelling; that spelling is checked as such, and is
        // served under the tidied key.
        const sent = targetOf(query)
        if (sent !== null && sent !== key) verdict = endpoint.signer.verify(method, sent, endpoint.self, auth)
      }
      if (!verdict.ok) {
        if (verdict.overloaded === true) return refuse(res, 503, 'overloaded', `unavailable: ${verdict.reason}`, { 'retry-after': '1' })
        return refuse(res, 401, 'unauthorized', `unauthorized: ${verdict.reason}`)
      }
    }
    if (!endpoint.originAllowed(url)) return refuse(res, 403, 'forbidden-origin', `origin ${url.origin} is not allowed`)
    // Remembered only once the request is let in, so that nobody outside the cluster can fill
    // the table, and only for queries of ordinary length: about 10 MiB at the very most.
    if (!remembered && query.length <= MAX_REMEMBERED_QUERY) {
      if (targets.size >= MAX_REMEMBERED_TARGETS) targets.clear()
      targets.set(query, target)
    }
    // A peer sends the same fields on request after request (Host, Connection, Via): fields
    // exactly those of the last request let in passed every check below, and read into the
    // same end-to-end fields, kept frozen. Reading them anew cost the owner 2.5 of its 8 µs
    // per hit.
    const rawHeaders = req.rawHeaders
    let headers = lastFields !== undefined && sameStrings(rawHeaders, lastFields.raw) ? lastFields.headers : undefined
    let received: RequestHeaders | undefined
    if (headers === undefined) {
      // From the raw fields: req.headers would build another object first, with node:http's
      // own rules for repeated fields.
      received = normaliseReceivedHeaders(rawHeaders)
      // One hop, always: a request that has already been through two forwardcache hops is
      // going round in circles (an origin URL that points back into the cluster).
      if (forwardcacheHops(received.via) >= 2) return refuse(res, 508, 'loop', LOOP_MESSAGE)
    }
    if (method === 'DELETE') {
      endpoint.invalidate(url)
      res.writeHead(204)
      res.end()
      return
    }
    if (received !== undefined) {
      const contentLength = received['content-length']
      // RFC 9110 section 8.6: Content-Length is 1*DIGIT, so 00 is an empty body too.
      if ((contentLength !== undefined && !ZERO_LENGTH.test(contentLength)) || received['transfer-encoding'] !== undefined) {
        return refuse(res, 400, 'body', `${method} requests cannot have a body`)
      }
      headers = Object.freeze(endToEndRequestHeaders(received, NOT_FORWARDED))
      lastFields = { raw: rawHeaders.slice(), headers }
    }
    headers = headers as RequestHeaders
    if (active >= endpoint.maxRequests) {
      return refuse(res, 503, 'overloaded', 'too many concurrent requests', { 'retry-after': '1' })
    }
    counters.values.servedForPeers++
    active++
    const ctl = new CallerController()
    // Tracked for close() only if it is still in progress once serve() returns: a hit has
    // been written whole by then (the sink is synchronous), and nothing can close the peer in
    // between.
    let untrack: (() => void) | undefined
    const sink = new ServerResponseSink(res, endpoint.stallMs, () => {
      active--
      untrack?.()
    })
    sink.onRequestStart(ctl)
    endpoint.serve({
      method: method as 'GET' | 'HEAD',
      url,
      key,
      host: target.host,
      headers,
      directives: requestDirectives(headers['cache-control'])
    }, sink, ctl)
    // Nothing is left to stop when the caller of a hit goes. Anything still in progress is,
    // and this runs before any event of the connection can.
    if (!sink.done) {
      untrack = endpoint.track(ctl)
      res.on('close', () => {
        if (!res.writableFinished) ctl.abort(new errors.RequestAbortedError())
      })
    }
  }

  const fail = (res: ServerResponse, err: unknown): void => {
    // Invalid header names or values from the caller, and anything unforeseen: an answer,
    // never a crash.
    if (!res.headersSent) refuse(res, 400, 'bad-request', (err as Error).message)
    else res.destroy(err as Error)
  }

  return function forwardcacheHandler (req, res, next) {
    const raw = req.url ?? '/'
    const qIndex = raw.indexOf('?')
    const pathname = qIndex === -1 ? raw : raw.slice(0, qIndex)
    if (pathname !== path) {
      if (typeof next === 'function') return next()
      return refuse(res, 404, 'not-found', `not found: forwardcache answers on ${path}`)
    }
    const method = req.method ?? ''
    if (method !== 'GET' && method !== 'HEAD' && method !== 'DELETE') {
      return refuse(res, 405, 'method', `method ${method} not allowed: forwardcache peers exchange GET and HEAD`, { allow: 'GET, HEAD, DELETE' })
    }
    if (endpoint.isClosed()) {
      return refuse(res, 503, 'closing', 'this peer is shutting down', { 'retry-after': '1' })
    }
    if (endpoint.signer !== undefined) {
      try {
        serve(req, res, raw, qIndex)
      } catch (err) {
        fail(res, err)
      }
      return
    }
    // No secret: only the pool's own addresses and loopback get in.
    const socket = req.socket
    const generation = endpoint.addresses.generation
    const known = admitted.get(socket) === generation
    if (known || endpoint.addresses.allowsNow(socket.remoteAddress) === true) {
      if (!known) admitted.set(socket, generation)
      try {
        serve(req, res, raw, qIndex)
      } catch (err) {
        fail(res, err)
      }
      return
    }
    endpoint.addresses.allows(socket.remoteAddress).then((allowed) => {
      // The caller may have hung up while its address was being checked: its 'close' has
      // been and gone, and nothing would abort the fetch serve() starts.
      if (res.destroyed || req.socket.destroyed) return
      if (!allowed) return refuse(res, 403, 'forbidden-peer', 'this address is not a peer of this cluster')
      serve(req, res, raw, qIndex)
    }).catch((err: unknown) => fail(res, err))
  }
}

// What the owner does not pass on from a peer's request: the peers' own credential, the
// (empty) body's length, and what a GET/HEAD never sends on (cacheableRequestHeaders).
const NOT_FORWARDED: ReadonlySet<string> = new Set([...BODYLESS_DROPPED, AUTH_HEADER, 'content-length'])

// A Content-Length this sink counts down (15 digits stay exact as a double).
const DECIMAL_LENGTH = /^\d{1,15}$/
const ZERO_LENGTH = /^0+$/
// What node:http accepts in a reason phrase (its check of header values): the origin's may be
// text it refuses, such as UTF-8, and is then left out (RFC 9112 section 4: it carries nothing).
const VALID_REASON = /^[\t\x20-\x7e\x80-\xff]*$/

/** A wire request's target, with the strings the cache needs from it. */
interface Target {
  readonly url: URL
  readonly key: string
  readonly host: string
}

const MAX_REMEMBERED_TARGETS = 2048
const MAX_REMEMBERED_QUERY = 2048

/**
 * The q parameter of a wire request's query. Peers send exactly `q=` and one URL encoded with
 * encodeURIComponent: that spelling is decoded directly, anything else (more parameters, a
 * malformed escape) the way URLSearchParams reads it.
 */
export function targetOf (query: string): string | null {
  if (query.startsWith('q=') && !query.includes('&')) {
    const value = query.slice(2)
    try {
      // In a query, + stands for a space (application/x-www-form-urlencoded).
      return decodeURIComponent(value.includes('+') ? value.replaceAll('+', ' ') : value)
    } catch {}
  }
  return new URLSearchParams(query).get('q')
}

/** Two lists of the same strings in the same order. */
function sameStrings (a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

function headerValue (v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v
}

/** Writes a response into a node:http ServerResponse, with backpressure both ways. */
class ServerResponseSink implements CallerHandler {
  readonly legacy = false
  // node:http takes the response inside its 'request' event as well as later.
  readonly synchronous = true
  readonly #res: ServerResponse
  readonly #onDone: () => void
  #controller: Controller | null = null
  #done = false
  // Body bytes still to come by Content-Length (-1: unknown): the last chunk is written with
  // end(), so node:http sends it at once instead of on the next tick.
  #remaining = -1
  #ended = false
  // A caller that takes nothing of a response for stallMs while the response waits for it to:
  // node:http never times out a response it cannot write, so without this a caller that stops
  // reading (or pipelines requests behind one it does not read) would hold its
  // maxHandlerRequests slot, and the fetch feeding it, for as long as it keeps the connection
  // open. Progress is a written chunk reaching the socket, not only 'drain': a slow but steady
  // reader may take longer than that between two drains of a large socket buffer.
  readonly #stallMs: number
  #stall: NodeJS.Timeout | null = null
  #flushed = 0
  #flushedAtCheck = 0
  // Made when first needed: a hit of one chunk written with end() needs none of them.
  #flush: (() => void) | undefined
  #resume: (() => void) | undefined

  #stalled (): void {
    if (this.#done) {
      this.#stall = null
      return
    }
    if (this.#flushed !== this.#flushedAtCheck) {
      // Something went out since the last look: the caller is slow, not stopped.
      this.#flushedAtCheck = this.#flushed
      this.#stall?.refresh()
      return
    }
    this.#stall = null
    // Nothing more is written for this caller: give the slot back now, whether or not the
    // upstream answers the abort with an error.
    this.#done = true
    this.#onDone()
    this.#controller?.abort(new errors.RequestAbortedError())
    this.#res.destroy()
  }

  /** True once the response has ended or failed here. */
  get done (): boolean {
    return this.#done
  }

  constructor (res: ServerResponse, stallMs: number, onDone: () => void) {
    this.#res = res
    this.#stallMs = stallMs
    this.#onDone = onDone
  }

  #clearStall (): void {
    if (this.#stall === null) return
    clearTimeout(this.#stall)
    this.#stall = null
  }

  onRequestStart (controller: Controller): void {
    this.#controller = controller
  }

  onResponseStart (_controller: Controller, status: number, headers: ResponseHeaders, statusMessage?: string): void {
    const res = this.#res
    if (status < 200) {
      // Interim responses node:http can send; the rest (and anything after headers) are dropped.
      // RFC 9110 section 15.2: none to an HTTP/1.0 client. They are optional, so one that
      // node:http refuses (its Link check is narrower than RFC 8288) is dropped too.
      if (res.headersSent || (res.req.httpVersionMajor === 1 && res.req.httpVersionMinor === 0)) return
      try {
        if (status === 102) res.writeProcessing()
        else if (status === 103 && headers.link !== undefined) res.writeEarlyHints({ link: headers.link })
      } catch {}
      return
    }
    // Fields the server stack set before the handler ran (Express's X-Powered-By, an app's
    // middleware): writeHead would add them to the origin's, and the asking peer passes them on
    // to its callers as the origin's own. The owner answers with the origin's fields alone.
    for (const name of res.getHeaderNames()) res.removeHeader(name)
    // Nor an origin's forwardcache-error: the asking peer would take the origin's answer for
    // this owner's own failure, fall back around it, and (for `closing` and the like) count it
    // against this owner until it ejects it. Only refuse() sends the field.
    if (headers[ERROR_HEADER] !== undefined) {
      const { [ERROR_HEADER]: _error, ...rest } = headers
      headers = rest
    }
    if (statusMessage !== undefined && statusMessage !== '' && VALID_REASON.test(statusMessage)) res.writeHead(status, statusMessage, headers)
    else res.writeHead(status, headers)
    const length = headers['content-length']
    if (typeof length === 'string' && DECIMAL_LENGTH.test(length) && res.req.method !== 'HEAD' && status !== 204 && status !== 304) this.#remaining = Number(length)
  }

  startRaw (): void {
    throw new Error('startRaw is for legacy handlers')
  }

  onResponseData (controller: Controller, chunk: Buffer): void {
    if (this.#ended) return
    if (chunk.length === this.#remaining) {
      this.#ended = true
      this.#res.end(chunk)
      return
    }
    if (this.#remaining > 0) this.#remaining -= chunk.length
    if (this.#res.destroyed) {
      // No 'drain' ever comes to a closed response: pausing would hold the fetch for good.
      controller.abort(new errors.RequestAbortedError())
      return
    }
    if (!this.#res.write(chunk, this.#flush ??= () => { this.#flushed++ })) {
      controller.pause()
      this.#res.once('drain', this.#resume ??= () => {
        this.#clearStall()
        this.#controller?.resume()
      })
      if (this.#stallMs > 0 && this.#stall === null) {
        this.#flushedAtCheck = this.#flushed
        this.#stall = setTimeout(() => { this.#stalled() }, this.#stallMs)
        this.#stall.unref()
      }
    }
  }

  onResponseEnd (): void {
    this.#clearStall()
    if (this.#done) return
    this.#done = true
    this.#onDone()
    if (!this.#ended) this.#res.end()
  }

  onResponseError (_controller: Controller, err: Error): void {
    this.#clearStall()
    if (this.#done) return
    this.#done = true
    this.#onDone()
    // Every byte Content-Length promised has gone out: the caller has a whole response.
    if (this.#ended) return
    const res = this.#res
    if (res.headersSent || res.destroyed) {
      // The caller already has a status line: cutting the connection is the only way to
      // say the body is incomplete, and the forwarding peer turns that into an error.
      res.destroy(err)
      return
    }
    const code = (err as { code?: string }).code ?? (err.cause as { code?: string } | undefined)?.code ?? ''
    try {
      if (TIMEOUT_CODES.has(code)) refuse(res, 504, 'origin-timeout', `origin timed out: ${err.message}`)
      else if (code === 'FC_ERR_FORBIDDEN_ADDRESS') refuse(res, 403, 'forbidden-address', err.message)
      else if (code === 'UND_ERR_ABORTED') res.destroy()
      // The peer was destroyed under this request: the same answer as a peer that is closing,
      // which the asking peer counts against this one's health, unlike an origin's failure.
      else if (code === 'UND_ERR_DESTROYED') refuse(res, 503, 'closing', 'this peer is shutting down', { 'retry-after': '1' })
      else refuse(res, 502, 'origin-unreachable', `origin failed: ${err.message}`)
    } catch {
      // node:http kept something from the failed start it now refuses to write: only cutting
      // the connection is left.
      res.destroy(err)
    }
  }
}
