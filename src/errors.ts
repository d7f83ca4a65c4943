import { errors } from 'undici'

// Errors a caller can already meet from undici keep undici's classes, so `instanceof` checks
// written for undici keep working through a Peer.
export const InvalidArgumentError = errors.InvalidArgumentError
export const ClientClosedError = errors.ClientClosedError
export const ClientDestroyedError = errors.ClientDestroyedError

/** The owner peer answered the wire protocol with something that is not an origin response. */
export class PeerProtocolError extends Error {
  override readonly name = 'PeerProtocolError'
  readonly code = 'FC_ERR_PEER_PROTOCOL'
  constructor (message: string) {
    super(message)
  }
}

/** A response body ended before the length its headers announced. */
export class TruncatedBodyError extends Error {
  override readonly name = 'TruncatedBodyError'
  readonly code = 'FC_ERR_TRUNCATED_BODY'
  constructor (expected: number, received: number) {
    super(`response body ended after ${received} of ${expected} bytes`)
  }
}

/** RFC 9111 section 5.2.1.7: only-if-cached and nothing suitable is stored. */
export class NotCachedError extends Error {
  override readonly name = 'NotCachedError'
  readonly code = 'FC_ERR_NOT_CACHED'
  constructor () {
    super('only-if-cached: no stored response satisfies the request')
  }
}
