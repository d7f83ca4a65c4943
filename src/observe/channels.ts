import diagnosticsChannel from 'node:diagnostics_channel'

/**
 * node:diagnostics_channel channels, for APM tools and logs. Each message is a plain object;
 * nothing is built unless a channel has subscribers.
 *
 * - `forwardcache:hit`           { self, url, status, age }
 * - `forwardcache:miss`          { self, url, reason }        reason: 'uri-miss' | 'stale'
 * - `forwardcache:forward`       { self, url, owner }
 * - `forwardcache:forward-error` { self, url, owner, error }
 * - `forwardcache:store`         { self, url, status, bytes }
 * - `forwardcache:evict`         { self, url, host, bytes }
 */
export const channels = {
  hit: diagnosticsChannel.channel('forwardcache:hit'),
  miss: diagnosticsChannel.channel('forwardcache:miss'),
  forward: diagnosticsChannel.channel('forwardcache:forward'),
  forwardError: diagnosticsChannel.channel('forwardcache:forward-error'),
  store: diagnosticsChannel.channel('forwardcache:store'),
  evict: diagnosticsChannel.channel('forwardcache:evict')
} as const

export interface HitMessage { self: string, url: string, status: number, age: number }
export interface MissMessage { self: string, url: string, reason: string }
export interface ForwardMessage { self: string, url: string, owner: string }
export interface ForwardErrorMessage { self: string, url: string, owner: string, error: Error }
export interface StoreMessage { self: string, url: string, status: number, bytes: number }
export interface EvictMessage { self: string, url: string, host: string, bytes: number }
