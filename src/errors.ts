import { errors } from 'undici'

// Errors a caller can already meet from undici keep undici's classes, so `instanceof` checks
// written for undici keep working through a Peer.
/** Bad options or a request that cannot be sent (undici's class, code UND_ERR_INVALID_ARG). */
export const InvalidArgumentError = errors.InvalidArgumentError
/** A request dispatched after close() (undici's class, code UND_ERR_CLOSED). */
export const ClientClosedError = errors.ClientClosedError
/** A request failed by destroy(), or dispatched after it (undici's class, code UND_ERR_DESTROYED). */
export const ClientDestroyedError = errors.ClientDestroyedError

/** The owner peer answered the wire protocol with something that is not an origin response. */
export class PeerProtocolError extends Error {
  /** Always `'PeerProtocolError'`. */
  override readonly name = 'PeerProtocolError'
  /** Always `'FC_ERR_PEER_PROTOCOL'`. */
  readonly code = 'FC_ERR_PEER_PROTOCOL'
  constructor (message: string) {
    super(message)
  }
}

/** A response body ended before the length its headers announced. */
export class TruncatedBodyError extends Error {
  /** Always `'TruncatedBodyError'`. */
  override readonly name = 'TruncatedBodyError'
  /** Always `'FC_ERR_TRUNCATED_BODY'`. */
  readonly code = 'FC_ERR_TRUNCATED_BODY'
  constructor (expected: number, received: number) {
    super(`response body ended after ${received} of ${expected} bytes`)
  }
}

/**
 * A caller stopped reading a response it shared with other callers (single-flight) for longer
 * than `opts.bodyTimeout`, while they waited for it: it is cut off so that they are not.
 */
export class StalledReaderError extends Error {
  /** Always `'StalledReaderError'`. */
  override readonly name = 'StalledReaderError'
  /** Always `'FC_ERR_STALLED_READER'`. */
  readonly code = 'FC_ERR_STALLED_READER'
  constructor (ms: number) {
    super(`stopped reading a shared response for ${ms} ms while other callers waited for it`)
  }
}
