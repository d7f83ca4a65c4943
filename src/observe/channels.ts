import diagnosticsChannel from 'node:diagnostics_channel'

/**
 * node:diagnostics_channel channels, for APM tools and logs. Each message is a plain object;
 * nothing is built unless a channel has subscribers.
 *
 * - `forwardcache:hit`           { self, url, status, age, hot? } hot: a non-owner's hot copy
 * - `forwardcache:miss`          { self, url, reason }        reason: 'uri-miss' | 'stale'
 * - `forwardcache:forward`       { self, url, owner }
 * - `forwardcache:forward-error` { self, url, owner, error }
 * - `forwardcache:store`         { self, url, status, bytes }
 * - `forwardcache:evict`         { self, url, host, bytes }
 * - `forwardcache:replay`        { self, peer, sent, failed, complete }
 * - `forwardcache:delivery`      { self, peer, sent, failed, remaining }
 */
export const channels = {
  /** A request answered from a peer's cache; messages are HitMessage. */
  hit: diagnosticsChannel.channel('forwardcache:hit'),
  /** An owned request that goes to the origin; messages are MissMessage. */
  miss: diagnosticsChannel.channel('forwardcache:miss'),
  /** A request sent to its owner peer; messages are ForwardMessage. */
  forward: diagnosticsChannel.channel('forwardcache:forward'),
  /** A forward that failed and fell back to the origin; messages are ForwardErrorMessage. */
  forwardError: diagnosticsChannel.channel('forwardcache:forward-error'),
  /** A response stored; messages are StoreMessage. */
  store: diagnosticsChannel.channel('forwardcache:store'),
  /**
   * A stored response evicted to stay within budget (a URL's variants, or one older variant
   * dropped to keep a URL within maxHostSize); messages are EvictMessage.
   */
  evict: diagnosticsChannel.channel('forwardcache:evict'),
  /** A peer back in the pool has been sent what it missed; messages are ReplayMessage. */
  replay: diagnosticsChannel.channel('forwardcache:replay'),
  /**
   * A peer in the pool has been sent again the invalidations that failed to reach it (one
   * round); messages are DeliveryMessage.
   */
  delivery: diagnosticsChannel.channel('forwardcache:delivery')
} as const

/**
 * `forwardcache:hit`: the peer (self), the URL, the stored status and its age in seconds;
 * `hot` when a peer that does not own the URL answered from its hot copy.
 */
export interface HitMessage { self: string, url: string, status: number, age: number, hot?: true }
/** `forwardcache:miss`: why ('uri-miss' nothing stored, 'stale' stored but unusable). */
export interface MissMessage { self: string, url: string, reason: string }
/** `forwardcache:forward`: the owner the request went to. */
export interface ForwardMessage { self: string, url: string, owner: string }
/** `forwardcache:forward-error`: the owner that failed and the error. */
export interface ForwardErrorMessage { self: string, url: string, owner: string, error: Error }
/** `forwardcache:store`: the stored status and the bytes charged. */
export interface StoreMessage { self: string, url: string, status: number, bytes: number }
/** `forwardcache:evict`: the evicted URL, its host and the bytes freed (by one variant, when one was dropped alone). */
export interface EvictMessage { self: string, url: string, host: string, bytes: number }
/**
 * `forwardcache:replay`: `peer` came back to this instance's pool (`self`, '' for a Client) and
 * has been sent the invalidations it missed while it was out: `sent` answered, `failed` not
 * (failed, refused, or given up after ejectAfter failures in a row). `complete` is false when
 * the log no longer reached back to when it left: older invalidations were forgotten, and it
 * may serve what they should have removed until that goes stale.
 */
export interface ReplayMessage { self: string, peer: string, sent: number, failed: number, complete: boolean }
/**
 * `forwardcache:delivery`: one round of sending `peer`, in this instance's pool (`self`, '' for
 * a Client), the invalidations that failed to reach it (on a readmission, a forward or DELETE
 * to it that succeeded, or a timed retry): `sent` answered 2xx, `failed` not, and `remaining`
 * the DELETEs still kept for it afterwards (failed again, or failed anew meanwhile; 0 when it
 * left the pool meanwhile: those go with what it misses, to its replay).
 */
export interface DeliveryMessage { self: string, peer: string, sent: number, failed: number, remaining: number }
