export { Peer } from './peer.js'
export { Client } from './client.js'
export type { PeerOptions, ClientOptions, RouterOptions } from './options.js'
export type { PeerStats, HostStats, ClientStats } from './stats.js'
export type { NodeHandler } from './http-handler.js'
export type { HashFunction } from './ring.js'
export {
  InvalidArgumentError,
  ClientClosedError,
  ClientDestroyedError,
  PeerProtocolError,
  TruncatedBodyError,
  StalledReaderError
} from './errors.js'
export { channels } from './observe/channels.js'
export type { HitMessage, MissMessage, ForwardMessage, ForwardErrorMessage, StoreMessage, EvictMessage, ReplayMessage, DeliveryMessage } from './observe/channels.js'
export { ForbiddenAddressError, ForbiddenOriginError, type OriginRule } from './security/address-policy.js'
export { DnsDiscovery, type DnsDiscoveryOptions, type DnsResolver, type PoolTarget } from './discovery/dns.js'
export type { CacheStore } from './cache/second-tier.js'
