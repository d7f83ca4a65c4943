import type { Dispatcher } from 'undici'
import { errors } from 'undici'

type Controller = Dispatcher.DispatchController

/**
 * A precise wait for response headers. undici's own headersTimeout runs on coarse timers
 * that can fire up to a second late, which is too late for a peer hop meant to fail over in
 * a few hundred milliseconds; this one uses a native timer and aborts the upstream request.
 */
export class Deadline {
  #timer: NodeJS.Timeout | undefined
  #upstream: Controller | null = null
  #error: Error | null = null

  /** @param onExpire runs once if the deadline passes before `clear()`, with the error. */
  constructor (ms: number, onExpire: (err: Error) => void) {
    this.#timer = setTimeout(() => {
      this.#timer = undefined
      this.#error = new errors.HeadersTimeoutError()
      onExpire(this.#error)
      this.#upstream?.abort(this.#error)
    }, ms)
    this.#timer.unref()
  }

  get expired (): boolean {
    return this.#error !== null
  }

  attach (controller: Controller): void {
    this.#upstream = controller
    if (this.#error !== null) controller.abort(this.#error)
  }

  clear (): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#timer = undefined
  }
}
