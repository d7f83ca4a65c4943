import type { Dispatcher } from 'undici'
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
}

/** Decides, once the response has started, whether a joiner may have it. */
export type ShareTest = (context: unknown, status: number, headers: ResponseHeaders) => boolean

/**
 * One upstream response delivered to every caller that joined before its first body byte
 * (single-flight). The upstream runs as long as one subscriber remains; it is paused while
 * any subscriber is paused; a subscriber that leaves gets its own error and does not disturb
 * the others; a failure reaches every subscriber.
 */
export class Fanout implements CallerHandler {
  readonly legacy = false
  /** The controller the upstream producer steers through. */
  readonly ctl = new CallerController()
  readonly #subs = new Set<Subscriber>()
  readonly #paused = new Set<Subscriber>()
  readonly #share: ShareTest
  readonly #onSettled: () => void
  #open = true
  #settled = false

  /** @param onSettled runs once, when the upstream response has ended or failed. */
  constructor (share: ShareTest, onSettled: () => void) {
    this.#share = share
    this.#onSettled = onSettled
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
    const sub: Subscriber = { sink, ctl, retry, leader, context }
    this.#subs.add(sub)
    ctl.attach({
      pause: () => {
        this.#paused.add(sub)
        this.ctl.pause()
      },
      resume: () => {
        this.#paused.delete(sub)
        if (this.#paused.size === 0) this.ctl.resume()
      },
      abort: (reason) => this.#leave(sub, reason)
    })
    return true
  }

  #leave (sub: Subscriber, reason: Error): void {
    if (!this.#subs.delete(sub)) return
    this.#paused.delete(sub)
    sub.sink.onResponseError(sub.ctl, reason)
    if (this.#subs.size === 0) {
      // Nobody is left to read it: stop the upstream.
      if (!this.#settled) this.ctl.abort(reason)
    } else if (this.#paused.size === 0) {
      this.ctl.resume()
    }
  }

  onRequestStart (): void {}

  onResponseStart (_c: Controller, status: number, headers: ResponseHeaders, statusMessage?: string, raw?: Buffer[]): void {
    if (status < 200) {
      // Interim responses go to everyone waiting; joining stays open until the final one.
      for (const sub of this.#subs) sub.sink.onResponseStart(sub.ctl, status, headers, statusMessage)
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
      if (sub.leader) {
        sub.sink.onResponseStart(sub.ctl, status, headers, statusMessage, raw)
        continue
      }
      // RFC 9211 section 2.8: this response was collapsed with another request's.
      collapsed ??= { ...headers, 'cache-status': `${String(headers['cache-status'] ?? 'forwardcache')}; collapsed` }
      if (sub.sink.legacy) collapsedRaw ??= toRawHeaders(collapsed)
      sub.sink.onResponseStart(sub.ctl, status, collapsed, statusMessage, collapsedRaw)
    }
    if (this.#subs.size === 0) this.ctl.abort(new Error('no subscriber left'))
  }

  onResponseData (_c: Controller, chunk: Buffer): void {
    for (const sub of this.#subs) sub.sink.onResponseData(sub.ctl, chunk)
  }

  onResponseEnd (_c: Controller, trailers: ResponseHeaders): void {
    this.#settle()
    for (const sub of this.#subs) sub.sink.onResponseEnd(sub.ctl, trailers)
    this.#subs.clear()
  }

  onResponseError (_c: Controller, err: Error): void {
    this.#settle()
    for (const sub of this.#subs) sub.sink.onResponseError(sub.ctl, err)
    this.#subs.clear()
  }

  startRaw (): void {
    throw new Error('startRaw is for legacy handlers')
  }

  #settle (): void {
    this.#open = false
    if (this.#settled) return
    this.#settled = true
    this.#onSettled()
  }
}
