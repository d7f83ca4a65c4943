import type { CacheRequest } from './cache/local-cache.js'
import type { CallerHandler } from './dispatch/compat.js'
import type { CallerController } from './dispatch/controller.js'
import { InvalidArgumentError } from './errors.js'
import { resolveRouterOptions, type ClientOptions } from './options.js'
import { Router } from './router.js'
import type { ClientStats } from './stats.js'

/**
 * A non-participating member: forwards each GET/HEAD to the peer that owns its URL and caches
 * nothing itself; other methods go to the origin. For processes that use the cluster's cache
 * without holding a share of it.
 */
export class Client extends Router {
  constructor (opts: ClientOptions) {
    if (opts === null || typeof opts !== 'object' || opts.peers === undefined) {
      throw new InvalidArgumentError('expected opts.peers to be an array of URLs')
    }
    super(resolveRouterOptions(opts, []))
  }

  protected override isSelf (): boolean {
    return false
  }

  /** With an empty pool nothing owns anything: fetch from the origin, uncached. */
  protected override serveOwned (req: CacheRequest, sink: CallerHandler, ctl: CallerController): void {
    this.direct(req, sink, ctl, 'no-peers')
  }

  protected override invalidateOwned (): void {}

  /** Plain counters: totals since the Client was created. */
  stats (): ClientStats {
    const v = this.counters.values
    return { requests: v.requests, forwards: v.forwards, forwardErrors: v.forwardErrors, originFetches: v.originFetches, passThrough: v.passThrough, invalidationErrors: v.invalidationErrors, invalidationReplays: v.invalidationReplays, invalidationGaps: v.invalidationGaps }
  }
}
