import type { Dispatcher } from 'undici'
import { errors } from 'undici'
import { toRawHeaders, type ResponseHeaders } from '../headers.js'
import { CallerController } from './controller.js'

type Controller = Dispatcher.DispatchController
type Handler = Dispatcher.DispatchHandler

/** Told once when a caller's request has ended, with the controller it was given. */
export interface Completion {
  finished (ctl: Controller): void
}

/**
 * The caller's handler as everything inside the library sees it: the new contract
 * (onRequestStart / onResponseStart / ...: what compose()d interceptors pass), whichever
 * contract the caller used, and a completion hook that fires exactly once, on end or error.
 */
export interface CallerHandler extends Required<Pick<Handler, 'onRequestStart' | 'onResponseStart' | 'onResponseData' | 'onResponseEnd' | 'onResponseError'>> {
  /**
   * The new contract's onResponseStart. `raw`, when a producer passes it, is the same header
   * list as `headers` in the legacy contract's form (alternating name and value Buffers, as
   * received): a legacy caller takes it as it is instead of encoding `headers` again.
   */
  onResponseStart (controller: Controller, statusCode: number, headers: ResponseHeaders, statusMessage?: string, raw?: Buffer[]): void
  /** True when the caller speaks the legacy contract and wants raw header Buffers. */
  readonly legacy: boolean
  /**
   * True when a stored response may be played into this handler at once, inside the call
   * that serves it. A Dispatcher's caller may not be called back inside dispatch(); the
   * owner's handler() writing into node:http may.
   */
  readonly synchronous?: boolean
  /** onResponseStart for callers of the legacy contract, given headers already in raw form. */
  startRaw (controller: Controller, statusCode: number, rawHeaders: Buffer[], statusMessage: string): void
}

/**
 * A legacy handler (onConnect / onHeaders / onData / onComplete / onError: what Node 20's
 * built-in fetch and undici 7's request and fetch pass) presented in the new contract.
 * Backpressure maps both ways: a `false` from onHeaders or onData pauses, and the legacy
 * `resume` callback resumes.
 */
class LegacyCaller extends CallerController implements CallerHandler {
  readonly legacy = true
  readonly #handler: Handler
  readonly #completion: Completion
  #controller: Controller | null = null
  #done = false

  constructor (handler: Handler, completion: Completion) {
    super()
    this.#handler = handler
    this.#completion = completion
  }

  onRequestStart (controller: Controller, context: unknown): void {
    this.#controller = controller
    const onConnect = this.#handler.onConnect as ((abort: (reason?: Error) => void, context: unknown) => void) | undefined
    onConnect?.call(this.#handler, (reason?: Error) => {
      controller.abort(reason ?? new errors.RequestAbortedError())
    }, context)
  }

  onResponseStart (controller: Controller, statusCode: number, headers: ResponseHeaders, statusMessage?: string, raw?: Buffer[]): void {
    this.startRaw(controller, statusCode, raw ?? toRawHeaders(headers), statusMessage ?? '')
  }

  startRaw (controller: Controller, statusCode: number, rawHeaders: Buffer[], statusMessage: string): void {
    this.#controller = controller
    // The legacy contract's resume callback. It is made here and handed over, never kept on
    // this object: kept in a field (made once per caller), it made V8 keep whole finished
    // requests through young-generation GCs and then pretenure undici's response objects,
    // which cost a fifth of the hit rate for the rest of the process (bench/README.md).
    const resume = (): void => { this.#controller?.resume() }
    // An interim response's false is not backpressure: fetch answers false to every 1xx, and
    // undici's own client ignores it there too. Pausing would hold the final response for good.
    if (this.#handler.onHeaders?.(statusCode, rawHeaders, resume, statusMessage) === false && statusCode >= 200) {
      controller.pause()
    }
  }

  onResponseData (controller: Controller, chunk: Buffer): void {
    if (this.#handler.onData?.(chunk) === false) controller.pause()
  }

  onResponseEnd (_controller: Controller, trailers: ResponseHeaders): void {
    if (this.#done) return
    this.#done = true
    this.#completion.finished(this.#controller as Controller)
    try {
      // undici itself hands legacy handlers Buffers here, whatever its typings say.
      this.#handler.onComplete?.(toRawHeaders(trailers) as unknown as string[])
    } catch (err) {
      // As undici does: a handler that throws at the end fails its request.
      this.#handler.onError?.(err as Error)
    }
  }

  onResponseError (_controller: Controller, error: Error): void {
    if (this.#done) return
    this.#done = true
    this.#completion.finished(this.#controller as Controller)
    this.#handler.onError?.(error)
  }
}

/** A new-contract handler with the completion hook added. */
class ModernCaller extends CallerController implements CallerHandler {
  readonly legacy = false
  readonly #handler: Handler
  readonly #completion: Completion
  #controller: Controller | null = null
  #done = false

  constructor (handler: Handler, completion: Completion) {
    super()
    this.#handler = handler
    this.#completion = completion
  }

  onRequestStart (controller: Controller, context: unknown): void {
    this.#controller = controller
    this.#handler.onRequestStart?.(controller, context)
  }

  onResponseStart (controller: Controller, statusCode: number, headers: ResponseHeaders, statusMessage?: string): void {
    this.#handler.onResponseStart?.(controller, statusCode, headers, statusMessage)
  }

  startRaw (): void {
    throw new Error('startRaw is for legacy handlers')
  }

  onResponseData (controller: Controller, chunk: Buffer): void {
    this.#handler.onResponseData?.(controller, chunk)
  }

  onResponseEnd (controller: Controller, trailers: ResponseHeaders): void {
    if (this.#done) return
    this.#done = true
    this.#completion.finished(this.#controller as Controller)
    try {
      this.#handler.onResponseEnd?.(controller, trailers)
    } catch (err) {
      // As undici does: a handler that throws at the end (undici's retry interceptor does,
      // to retry a status) fails its request, and the error is what it acts on.
      this.#handler.onResponseError?.(controller, err as Error)
    }
  }

  onResponseError (controller: Controller, error: Error): void {
    if (this.#done) return
    this.#done = true
    this.#completion.finished(this.#controller as Controller)
    this.#handler.onResponseError?.(controller, error)
  }
}

/**
 * Wraps a caller's handler of either contract; `completion` hears once when the request ends
 * (after onRequestStart has been called with its controller). The wrapper is also the
 * caller's controller: one object per request instead of two.
 */
export function wrapCaller (handler: Handler, completion: Completion): CallerHandler & CallerController {
  return typeof handler.onRequestStart === 'function' || typeof handler.onResponseStart === 'function'
    ? new ModernCaller(handler, completion)
    : new LegacyCaller(handler, completion)
}
