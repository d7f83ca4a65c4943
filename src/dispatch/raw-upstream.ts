import type { Dispatcher } from 'undici'
import { util } from 'undici'
import type { ResponseHeaders } from '../headers.js'

type Controller = Dispatcher.DispatchController
type Handler = Dispatcher.DispatchHandler

/** A new-contract handler that can take a response's start from the raw header Buffers. */
export interface RawStartHandler extends Handler {
  /**
   * The response's start in raw form (alternating name and value Buffers, as received).
   * Returns false, having done nothing, when it needs the parsed fields instead: they are
   * then parsed and given to onResponseStart.
   */
  onRawResponseStart (controller: Controller, statusCode: number, rawHeaders: Buffer[], statusMessage: string): boolean
}

/** undici's controller for a legacy-contract request, as undici's own adapter makes it. */
class RawController implements Controller {
  #paused = false
  #aborted = false
  #reason: Error | null = null
  readonly #abort: (reason?: Error) => void
  /** The legacy contract's resume callback, once the response has started. */
  resumeUpstream: (() => void) | null = null
  /** What the response's fields were parsed from (read by PassThroughHandler). */
  rawHeaders: Buffer[] | null = null

  constructor (abort: (reason?: Error) => void) {
    this.#abort = abort
  }

  get paused (): boolean { return this.#paused }
  get aborted (): boolean { return this.#aborted }
  get reason (): Error | null { return this.#reason }

  pause (): void {
    this.#paused = true
  }

  resume (): void {
    if (!this.#paused) return
    this.#paused = false
    this.resumeUpstream?.()
  }

  abort (reason: Error): void {
    if (this.#aborted) return
    this.#aborted = true
    this.#reason = reason
    this.#abort(reason)
  }
}

/**
 * Presents a new-contract handler to undici in the legacy contract, so that undici hands
 * over the response's fields as raw Buffers and parses them only when the handler asks.
 * undici's own adapter parses them into an object for every response; on a forward to an
 * owner peer that the caller's request() then parses a second time, nobody needed that
 * object (bench/README.md, "forwarded-hit with one request in flight").
 */
export class RawUpstream {
  readonly #handler: RawStartHandler
  #controller: RawController | null = null

  constructor (handler: RawStartHandler) {
    this.#handler = handler
  }

  onConnect (abort: (reason?: Error) => void, context?: unknown): void {
    this.#controller = new RawController(abort)
    this.#handler.onRequestStart?.(this.#controller, context)
  }

  onHeaders (statusCode: number, rawHeaders: Buffer[], resume: () => void, statusMessage: string): boolean {
    const controller = this.#controller as RawController
    controller.resumeUpstream = resume
    controller.rawHeaders = rawHeaders
    if (!this.#handler.onRawResponseStart(controller, statusCode, rawHeaders, statusMessage)) {
      this.#handler.onResponseStart?.(controller, statusCode, util.parseHeaders(rawHeaders) as ResponseHeaders, statusMessage)
    }
    return !controller.paused
  }

  onData (chunk: Buffer): boolean {
    const controller = this.#controller as RawController
    this.#handler.onResponseData?.(controller, chunk)
    return !controller.paused
  }

  // undici hands Buffers here, whatever its typings say.
  onComplete (rawTrailers: Array<Buffer | string> | null): void {
    this.#handler.onResponseEnd?.(this.#controller as RawController, util.parseHeaders((rawTrailers ?? []) as Buffer[]) as ResponseHeaders)
  }

  onError (err: Error): void {
    this.#handler.onResponseError?.(this.#controller as RawController, err)
  }
}
