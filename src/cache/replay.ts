import type { CallerController } from '../dispatch/controller.js'
import type { CallerHandler } from '../dispatch/compat.js'
import { toRawHeaders, type ResponseHeaders } from '../headers.js'

const NO_TRAILERS: ResponseHeaders = Object.freeze({}) as ResponseHeaders

/**
 * Plays a response held in memory into a caller's handler, honouring pause/resume and abort.
 * It starts on a microtask, never inside dispatch(), so callers see the same ordering as with
 * a network response.
 */
export function replay (
  sink: CallerHandler,
  ctl: CallerController,
  status: number,
  statusText: string,
  headers: ResponseHeaders,
  body: readonly Buffer[],
  rawHeaders?: () => Buffer[]
): void {
  let index = 0
  let started = false
  let finished = false

  const fail = (err: Error): void => {
    if (finished) return
    finished = true
    sink.onResponseError(ctl, err)
  }

  const pump = (): void => {
    if (finished) return
    try {
      if (!started) {
        started = true
        if (sink.legacy) {
          sink.startRaw(ctl, status, rawHeaders !== undefined ? rawHeaders() : toRawHeaders(headers), statusText)
        } else {
          sink.onResponseStart(ctl, status, headers, statusText)
        }
      }
      while (!ctl.paused && !ctl.aborted && index < body.length) {
        sink.onResponseData(ctl, body[index++] as Buffer)
      }
      if (ctl.aborted || ctl.paused || finished) return
      finished = true
      sink.onResponseEnd(ctl, NO_TRAILERS)
    } catch (err) {
      fail(err as Error)
    }
  }

  ctl.attach({
    pause () {},
    resume () { queueMicrotask(pump) },
    abort (reason) { fail(reason) }
  })
  queueMicrotask(pump)
}
