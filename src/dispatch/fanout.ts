import type { Dispatcher } from 'undici'
import { StalledReaderError } from '../errors.js'
import { toRawHeaders, type ResponseHeaders } from '../headers.js'
import type { CallerHandler } from './compat.js'
import { CallerController } from './controller.js'

type Controller = Dispatcher.DispatchController

interface Subscriber {
  readonly sink: CallerHandler
  readonly ctl: CallerController
  /** Serve this subscriber some other way: the response turned out not to be shareable with it. */
  readonly retry: () => void
  readonly leader: boolean
  readonly context: unknown
  paused: boolean
  /** Chunks this subscriber has not taken yet (shared with the others, never copied). */
  queue: Buffer[]
  queued: number
  /** Set once the upstream has ended while chunks were still queued for this subscriber. */
  trailers: ResponseHeaders | null
}

/** Decides, once the response has started, whether a joiner may have it. */
export type ShareTest = (context: unknown, status: number, headers: ResponseHeaders) => boolean

// How far one subscriber may fall behind the others before the upstream waits for it. The
// chunks are the same Buffers for everyone, so this bounds the memory a slow reader holds,
// whatever the number of subscribers.
const MAX_LAG_BYTES = 1024 * 1024

export interface FanoutOptions {
  /** Runs once, when the upstream response has ended or failed. */
  onSettled?: () => void
  /**
   * How long the upstream may stay paused, ms. Past it, subscribers that hold it back while
   * others want to read are failed with StalledReaderError. 0: no limit.
   */
  stallMs?: number
  /**
   * Runs once the upstream has stayed paused for `waitMs` (at most `stallMs`): those waiting
   * for its end can go their own way.
   */
  onStall?: () => void
  waitMs?: number
}

/**
 * One upstream response delivered to every caller that joined before its first body byte
 * (single-flight). The upstream runs as long as one subscriber remains. A subscriber that
 * pauses gets its chunks queued while the others read on; the upstream pauses only when
 * every subscriber has paused, or one has fallen MAX_LAG_BYTES behind. A subscriber that
 * leaves gets its own error and does not disturb the others; a failure reaches every one.
 */
export class Fanout implements CallerHandler {
  readonly legacy = false
  /** The controller the upstream producer steers through. */
  readonly ctl = new CallerController()
  readonly #subs = new Set<Subscriber>()
  readonly #share: ShareTest
  readonly #onSettled: () => void
  readonly #stallMs: number
  readonly #waitMs: number
  readonly #onStall: () => void
  #stallTimer: NodeJS.Timeout | null = null
  #open = true
  #settled = false

  constructor (share: ShareTest, options: FanoutOptions = {}) {
    this.#share = share
    this.#onSettled = options.onSettled ?? (() => {})
    this.#stallMs = options.stallMs ?? 0
    this.#waitMs = Math.min(options.waitMs ?? this.#stallMs, this.#stallMs)
    this.#onStall = options.onStall ?? (() => {})
  }

  /** Subscribers right now, leader included. */
  get size (): number {
    return this.#subs.size
  }

  /**
   * Adds a caller. Returns false once the response has started: a late caller cannot be given
   * the bytes it missed, so it must be served another way.
   */
  join (sink: CallerHandler, ctl: CallerController, retry: () => void, context: unknown, leader = false): boolean {
    if (!this.#open) return false
    const sub: Subscriber = { sink, ctl, retry, leader, context, paused: false, queue: [], queued: 0, trailers: null }
    this.#subs.add(sub)
    ctl.attach({
      pause: () => {
        sub.paused = true
        this.#steer()
      },
      resume: () => {
        sub.paused = false
        this.#flush(sub)
        this.#steer()
      },
      abort: (reason) => this.#leave(sub, reason)
    })
    return true
  }

  #leave (sub: Subscriber, reason: Error): void {
    if (!this.#subs.delete(sub)) return
    sub.queue = []
    sub.sink.onResponseError(sub.ctl, reason)
    if (this.#subs.size === 0) {
      // Nobody is left to read it: stop the upstream, and take no one else in. A caller that
      // joined now would get this caller's abort once the upstream (still connecting, say)
      // took it; those waiting for the end go their own way at once.
      this.#open = false
      this.#clearStall()
      if (!this.#settled) {
        this.ctl.abort(reason)
        this.#settle()
        this.#onStall()
      }
    } else {
      this.#steer()
    }
  }

  /** Pauses the upstream when nobody can take more, resumes it when someone can. */
  #steer (): void {
    if (this.#settled || this.#subs.size === 0) return
    let allPaused = true
    let lagging = false
    for (const sub of this.#subs) {
      if (!sub.paused) allPaused = false
      if (sub.queued > MAX_LAG_BYTES) lagging = true
    }
    if (allPaused || lagging) {
      if (!this.ctl.paused) {
        this.ctl.pause()
        if (this.#stallMs > 0) this.#arm(this.#waitMs, true)
      } else if (this.#stallTimer === null && this.#stallMs > 0 && !allPaused) {
        // The timer ran out while every reader happened to be paused, and a reader is back,
        // still held by one that lags: time that one again, or the reader waits for ever.
        this.#arm(this.#stallMs, false)
      }
    } else if (this.ctl.paused) {
      this.#clearStall()
      this.ctl.resume()
    }
  }

  #arm (ms: number, waiting: boolean): void {
    this.#stallTimer = setTimeout(() => this.#stalled(waiting), ms)
    this.#stallTimer.unref()
  }

  #stalled (waiting: boolean): void {
    this.#stallTimer = null
    if (this.#settled || !this.ctl.paused) return
    if (waiting) {
      this.#onStall()
      if (this.#stallMs > this.#waitMs) {
        this.#arm(this.#stallMs - this.#waitMs, false)
        return
      }
    }
    // Those still reading wait on whoever stopped: those are cut off, not the readers.
    const stopped = [...this.#subs].filter((sub) => sub.paused)
    if (stopped.length < this.#subs.size) {
      for (const sub of stopped) this.#leave(sub, new StalledReaderError(this.#stallMs))
    }
  }

  #clearStall (): void {
    if (this.#stallTimer === null) return
    clearTimeout(this.#stallTimer)
    this.#stallTimer = null
  }

  /** Delivers what was queued for a subscriber that can read again, and the end if it came. */
  #flush (sub: Subscriber): void {
    while (!sub.paused && sub.queue.length > 0 && this.#subs.has(sub)) {
      const chunk = sub.queue.shift() as Buffer
      sub.queued -= chunk.length
      try {
        sub.sink.onResponseData(sub.ctl, chunk)
      } catch (err) {
        this.#threw(sub, err)
        return
      }
    }
    if (!sub.paused && sub.queue.length === 0 && sub.trailers !== null && this.#subs.delete(sub)) {
      sub.sink.onResponseEnd(sub.ctl, sub.trailers)
    }
  }

  /**
   * A subscriber's handler threw. undici fails the request whose handler threw, and that one
   * only: the error goes to this subscriber as its own, and the others read on. Thrown on to
   * the upstream instead, it failed every caller sharing the response with that error.
   */
  #threw (sub: Subscriber, err: unknown): void {
    this.#leave(sub, err instanceof Error ? err : new Error(String(err)))
  }

  onRequestStart (): void {}

  onResponseStart (_c: Controller, status: number, headers: ResponseHeaders, statusMessage?: string, raw?: Buffer[]): void {
    if (status < 200) {
      // Interim responses go to everyone waiting; joining stays open until the final one.
      for (const sub of this.#subs) {
        try {
          sub.sink.onResponseStart(sub.ctl, status, headers, statusMessage)
        } catch (err) {
          this.#threw(sub, err)
        }
      }
      return
    }
    this.#open = false
    let collapsed: ResponseHeaders | undefined
    // Joiners of the legacy contract share one raw form of the collapsed headers, as the
    // callers of one stored response share its raw form, instead of encoding it each.
    let collapsedRaw: Buffer[] | undefined
    for (const sub of [...this.#subs]) {
      if (!sub.leader && !this.#share(sub.context, status, headers)) {
        this.#subs.delete(sub)
        sub.ctl.attach(null)
        sub.retry()
        continue
      }
      try {
        if (sub.leader) {
          sub.sink.onResponseStart(sub.ctl, status, headers, statusMessage, raw)
          continue
        }
        // RFC 9211 section 2.8: this response was collapsed with another request's.
        collapsed ??= { ...headers, 'cache-status': `${String(headers['cache-status'] ?? 'forwardcache')}; collapsed` }
        if (sub.sink.legacy) collapsedRaw ??= toRawHeaders(collapsed)
        sub.sink.onResponseStart(sub.ctl, status, collapsed, statusMessage, collapsedRaw)
      } catch (err) {
        this.#threw(sub, err)
      }
    }
    if (this.#subs.size === 0) this.ctl.abort(new Error('no subscriber left'))
  }

  onResponseData (_c: Controller, chunk: Buffer): void {
    for (const sub of this.#subs) {
      if (sub.paused || sub.queue.length > 0) {
        sub.queue.push(chunk)
        sub.queued += chunk.length
      } else {
        try {
          sub.sink.onResponseData(sub.ctl, chunk)
        } catch (err) {
          this.#threw(sub, err)
        }
      }
    }
    this.#steer()
  }

  onResponseEnd (_c: Controller, trailers: ResponseHeaders): void {
    this.#settle()
    for (const sub of [...this.#subs]) {
      if (!sub.paused && sub.queue.length === 0) {
        this.#subs.delete(sub)
        sub.sink.onResponseEnd(sub.ctl, trailers)
      } else {
        // The rest goes out as this subscriber reads it.
        sub.trailers = trailers
      }
    }
  }

  onResponseError (_c: Controller, err: Error): void {
    this.#settle()
    const subs = [...this.#subs]
    this.#subs.clear()
    // Everyone is told, even when a handler throws from its onError: the rest would otherwise
    // wait for good, and stay in flight (close() would never resolve). The first such throw
    // goes on to the upstream afterwards, as it would with only that caller.
    let thrown: { err: unknown } | undefined
    for (const sub of subs) {
      try {
        sub.sink.onResponseError(sub.ctl, err)
      } catch (e) {
        thrown ??= { err: e }
      }
    }
    if (thrown !== undefined) throw thrown.err
  }

  /**
   * True while the leader alone is subscribed and takes raw fields: a final response can then
   * start through startRaw(), with nobody needing its fields parsed.
   */
  get rawAlone (): boolean {
    if (!this.#open || this.#subs.size !== 1) return false
    for (const sub of this.#subs) return sub.leader && sub.sink.legacy
    return false
  }

  /** A final response's start in raw form; only while `rawAlone`. */
  startRaw (_c: Controller, status: number, raw: Buffer[], statusMessage: string): void {
    if (!this.rawAlone) throw new Error('startRaw needs the leader alone, of the legacy contract')
    this.#open = false
    for (const sub of this.#subs) {
      try {
        sub.sink.startRaw(sub.ctl, status, raw, statusMessage)
      } catch (err) {
        this.#threw(sub, err)
      }
    }
    if (this.#subs.size === 0) this.ctl.abort(new Error('no subscriber left'))
  }

  #settle (): void {
    this.#open = false
    this.#clearStall()
    if (this.#settled) return
    this.#settled = true
    this.#onSettled()
  }
}
